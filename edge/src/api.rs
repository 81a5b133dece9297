//! The REST API (`/api/v1`): what the node holds, and the operator's kicks.
//!
//! Streams are public reads. The session endpoints (the list reveals every peer) and every
//! `DELETE` are admin endpoints: they need `Authorization: Bearer <[cluster] token>`, compared
//! in constant time (`401` without or with a wrong one); with no cluster token configured they
//! are refused with `403`. They are the REST face of `EntityService`: the same reads, the same
//! kick (`Engine::end_session` for one session, `Engine::kick` for a stream).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tracing::info;
use waveguide_control::cluster::bearer_matches;
use waveguide_control::http::SignalingState;
use waveguide_control::{SessionInfo, SessionKind, SessionState};

/// `GET /api/v1/streams`
pub async fn streams(State(state): State<SignalingState>) -> Response {
    let mut statuses = state.engine.streams().statuses(Instant::now());
    statuses
        .iter_mut()
        .for_each(waveguide_outputs::hls::annotate);
    Json(statuses).into_response()
}

/// `GET /api/v1/streams/{name}`
pub async fn stream(State(state): State<SignalingState>, Path(name): Path<String>) -> Response {
    match state.engine.streams().status(&name, Instant::now()) {
        Some(mut s) => {
            waveguide_outputs::hls::annotate(&mut s);
            Json(s).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("stream `{name}` is not live on this node\n"),
        )
            .into_response(),
    }
}

/// The token admin requests must present: the `[cluster] token`, if one is configured.
#[derive(Clone)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// Admin requests need `Bearer <token>`; `None` refuses them all (`403`).
    pub fn new(token: Option<&str>) -> Self {
        Self(token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// `None` when `headers` carry the token; the refusal otherwise.
    pub(crate) fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(token) = &self.0 else {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "admin endpoints are disabled: configure a [cluster] token \
                 (or WAVEGUIDE_CLUSTER_TOKEN) and send it as `Authorization: Bearer <token>`\n",
                )
                    .into_response(),
            );
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer_matches(presented, token) {
            None
        } else {
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "send `Authorization: Bearer <cluster token>`\n",
                )
                    .into_response(),
            )
        }
    }
}

/// One WebRTC session as the REST API shows it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The session id (the last segment of its WHIP/WHEP resource URL).
    pub id: String,
    /// Its stream.
    pub stream: String,
    /// `publisher` or `viewer`.
    pub role: &'static str,
    /// `connecting` or `connected`.
    pub state: &'static str,
    /// Seconds since it was answered.
    pub age_secs: u64,
    /// Another edge pulling the stream (a relay link), not an end viewer.
    pub relay_pull: bool,
    /// Delivery paused by an operator (viewers).
    pub paused: bool,
    /// Video is sent only while the stream fits under this (viewers).
    pub max_bitrate_bps: Option<u64>,
    /// Audio only (viewers).
    pub audio_only: bool,
    /// Counters from the session's shard (one session's GET only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<SessionStatsView>,
}

/// A session's delivery figures.
#[derive(Debug, Serialize)]
pub struct SessionStatsView {
    /// Where its media goes (`ip:port`).
    pub remote_addr: Option<String>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Held back by a pause or cap, or refused by the connection.
    pub packets_dropped: u64,
    /// Loss the peer reported (viewers).
    pub packets_lost: i64,
    pub nacks: u64,
    pub keyframe_requests: u64,
    /// From RTCP receiver reports, when there were any.
    pub rtt_ms: Option<f64>,
    /// Video held back now (pause, cap or audio only).
    pub video_held: bool,
}

impl From<waveguide_control::SessionStats> for SessionStatsView {
    fn from(s: waveguide_control::SessionStats) -> Self {
        Self {
            remote_addr: s.remote_addr.map(|a| a.to_string()),
            packets_sent: s.packets_sent,
            bytes_sent: s.bytes_sent,
            packets_received: s.packets_received,
            bytes_received: s.bytes_received,
            packets_dropped: s.packets_dropped,
            packets_lost: s.packets_lost,
            nacks: s.nacks,
            keyframe_requests: s.keyframe_requests,
            rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
            video_held: s.video_held,
        }
    }
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> Self {
        Self {
            id: s.session.clone(),
            stream: s.stream.clone(),
            role: match s.kind {
                SessionKind::Publisher => "publisher",
                SessionKind::Viewer => "viewer",
            },
            state: match s.state {
                SessionState::Connecting => "connecting",
                SessionState::Connected => "connected",
            },
            age_secs: s.age.as_secs(),
            relay_pull: s.relay_pull,
            paused: s.delivery.paused,
            max_bitrate_bps: s.delivery.max_bitrate_bps,
            audio_only: s.delivery.audio_only,
            stats: None,
        }
    }
}

/// `?stream=` of the session list.
#[derive(Debug, Deserialize)]
pub struct SessionFilter {
    /// Only this stream's sessions.
    pub stream: Option<String>,
}

/// `GET /api/v1/sessions[?stream=NAME]` (admin): every WebRTC session, sorted by id.
pub async fn sessions(
    State(state): State<SignalingState>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Query(filter): Query<SessionFilter>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    let list: Vec<SessionView> = state
        .engine
        .sessions()
        .iter()
        .filter(|s| filter.stream.as_ref().is_none_or(|name| &s.stream == name))
        .map(SessionView::from)
        .collect();
    Json(list).into_response()
}

/// `GET /api/v1/sessions/{id}` (admin).
pub async fn session(
    State(state): State<SignalingState>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    let Some(info) = state.engine.session(&id) else {
        return waveguide_control::Error::SessionNotFound.into_response();
    };
    match state.engine.session_stats(&id).await {
        Ok(stats) => Json(SessionView {
            stats: Some(stats.into()),
            ..SessionView::from(&info)
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/sessions/{id}` (admin): kicks one publisher or viewer; `204`, `404` when
/// it is gone.
pub async fn end_session(
    State(state): State<SignalingState>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    match state.engine.end_session(&id) {
        Ok(()) => {
            info!(session = %id, "session ended over REST");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/streams/{name}` (admin): ends the stream, its publisher and every viewer;
/// `204`, `404` when it is not on this node.
pub async fn end_stream(
    State(state): State<SignalingState>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    match state.engine.kick(&name, "ended over REST") {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
