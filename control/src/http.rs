//! The HTTP face shared by WHIP and WHEP: the SDP body extractor, the `201 Created` answer,
//! session resources (PATCH/DELETE), the per-client limit on offer POSTs ([`limit_posts`],
//! used by the edge and the orchestrator alike) and the one mapping of [`Error`] to a response.
//!
//! Routes live with their protocol (`inputs::whip`, `outputs::whep`); this module owns only
//! what both need, so the two stay identical where RFC 9725 and the WHEP draft agree.

use crate::engine::{Engine, PatchOutcome, SessionAnswer, SessionKind};
use crate::error::Error;
use crate::rate::RateLimit;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

/// Largest SDP body accepted; a real offer is a few KiB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// State of the signaling routes.
#[derive(Clone)]
pub struct SignalingState {
    /// The engine that answers.
    pub engine: Arc<Engine>,
    /// Base URL for `Location` headers (`https://edge.example.org`); when unset, built from
    /// the request's `Host` (or HTTP/2 `:authority`).
    pub public_url: Option<String>,
    /// Whether this server speaks HTTPS: the scheme of URLs built from the request.
    pub tls: bool,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("request failed: {self}");
        } else {
            debug!("request refused ({status}): {self}");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// A request body that must be `application/sdp`.
pub struct SdpBody(pub String);

/// Why an SDP body was refused.
#[derive(Debug)]
pub enum SdpBodyRejection {
    /// 415: not `application/sdp`.
    WrongType(String),
    /// 413: larger than the limit (bytes): [`MAX_SDP_BYTES`] for an offer, the engine's
    /// fragment limit for a trickle PATCH.
    TooLarge(usize),
    /// 400: empty or not UTF-8.
    Unreadable(&'static str),
}

impl IntoResponse for SdpBodyRejection {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            SdpBodyRejection::WrongType(got) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("expected Content-Type: application/sdp, got `{got}`\n"),
            ),
            SdpBodyRejection::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("SDP body larger than {max} bytes\n"),
            ),
            SdpBodyRejection::Unreadable(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
        };
        (status, text).into_response()
    }
}

impl<S: Send + Sync> FromRequest<S> for SdpBody {
    type Rejection = SdpBodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = typed_body(req, state, "application/sdp", MAX_SDP_BYTES).await?;
        if body.trim().is_empty() {
            return Err(SdpBodyRejection::Unreadable("empty SDP body"));
        }
        Ok(SdpBody(body))
    }
}

/// A request body of `application/trickle-ice-sdpfrag`, at most
/// [`crate::engine::MAX_FRAGMENT_BYTES`].
pub struct SdpFragBody(pub String);

impl<S: Send + Sync> FromRequest<S> for SdpFragBody {
    type Rejection = SdpBodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(SdpFragBody(
            typed_body(
                req,
                state,
                "application/trickle-ice-sdpfrag",
                crate::engine::MAX_FRAGMENT_BYTES,
            )
            .await?,
        ))
    }
}

async fn typed_body<S: Send + Sync>(
    req: Request,
    state: &S,
    want: &str,
    max: usize,
) -> Result<String, SdpBodyRejection> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(want) {
        return Err(SdpBodyRejection::WrongType(content_type));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(SdpBodyRejection::TooLarge(max));
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|_| SdpBodyRejection::TooLarge(max))?;
    if bytes.len() > max {
        return Err(SdpBodyRejection::TooLarge(max));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| SdpBodyRejection::Unreadable("body is not UTF-8"))
}

/// The `?ticket=` an orchestrator's redirect adds to a WHIP or WHEP URL.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TicketQuery {
    /// The signed ticket (see [`crate::cluster::TicketKey`]).
    pub ticket: Option<String>,
}

/// The bearer token of `Authorization`, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The absolute URL of `path` on this node, as the client reached it.
pub fn absolute_url(
    state: &SignalingState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    path: &str,
) -> String {
    if let Some(base) = &state.public_url {
        return format!("{}{path}", base.trim_end_matches('/'));
    }
    // HTTP/1.1 names the host in `Host`; HTTP/2 (what browsers use over TLS) in `:authority`,
    // which arrives as the URI's authority.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let own = if state.tls { "https" } else { "http" };
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or(own);
    format!("{scheme}://{host}{path}")
}

/// `201 Created` with the answer, as WHIP and WHEP clients (OBS among them) require.
pub fn created(state: &SignalingState, answer: SessionAnswer, location: String) -> Response {
    let mut response = (StatusCode::CREATED, answer.sdp).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&answer.etag) {
        headers.insert(header::ETAG, v);
    }
    for url in state.engine.ice_servers() {
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"ice-server\"")) {
            headers.append(header::LINK, v);
        }
    }
    response
}

/// `PATCH` on a session resource: trickle candidates (`204`) or an ICE restart (`200` with our
/// new credentials).
pub async fn patch_session(
    state: &SignalingState,
    kind: SessionKind,
    stream: &str,
    session: &str,
    headers: &HeaderMap,
    fragment: &str,
) -> Response {
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    match state
        .engine
        .patch(kind, stream, session, if_match, fragment)
        .await
    {
        Ok(PatchOutcome::Trickled) => StatusCode::NO_CONTENT.into_response(),
        Ok(PatchOutcome::Restarted { fragment, etag }) => {
            let mut response = (StatusCode::OK, fragment).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/trickle-ice-sdpfrag"),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                headers.insert(header::ETAG, v);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE` on a session resource: `200`, as OBS expects.
pub fn delete_session(
    state: &SignalingState,
    kind: SessionKind,
    stream: &str,
    session: &str,
) -> Response {
    match state.engine.end(kind, stream, session) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Answers a CORS preflight with `204 No Content` (tower-http's CORS layer says `200` with an
/// empty body); it carries no content, and WHIP/WHEP clients expect 204. Both binaries add it
/// with `axum::middleware::map_response` outside their CORS layer.
pub async fn preflight_no_content(mut response: Response) -> Response {
    if response.status() == StatusCode::OK
        && response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
    {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// The state of [`limit_posts`]: the per-client rate of WHIP/WHEP POSTs, what to do with a
/// refused one (the orchestrator counts it as a decision; the edge does nothing more), and the
/// cluster token whose bearers are not limited.
#[derive(Clone)]
pub struct PostLimit {
    limit: Option<Arc<RateLimit>>,
    on_refusal: fn(&Request),
    cluster_token: Option<Arc<str>>,
}

impl PostLimit {
    /// `limit` of `None` lets every POST through; `on_refusal` sees each refused request before
    /// the `429` is sent.
    pub fn new(limit: Option<Arc<RateLimit>>, on_refusal: fn(&Request)) -> Self {
        Self {
            limit,
            on_refusal,
            cluster_token: None,
        }
    }

    /// Lets through every POST with `Authorization: Bearer <token>` (compared in constant time):
    /// an edge's relay lookups and pulls. They come from a few addresses at the pace of viewers
    /// elsewhere, and an anonymous client behind the same address must not make them fail. An
    /// empty token exempts nothing.
    pub fn exempting_cluster(mut self, token: Option<Arc<str>>) -> Self {
        self.cluster_token = token.filter(|t| !t.is_empty());
        self
    }

    fn exempts(&self, request: &Request) -> bool {
        self.cluster_token.as_deref().is_some_and(|token| {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            crate::cluster::bearer_matches(authorization, token)
        })
    }
}

/// `429 Too Many Requests` (with `Retry-After`) for a client past its POST rate. Meant for
/// `route_layer` on the offer routes only: other methods on them (PATCH, DELETE) and every
/// other route cost little and pass.
///
/// The client is the TCP peer, never `X-Forwarded-For`: anyone can write that header, so
/// trusting it would let a client escape its own bucket and drain another address's. An IPv6
/// peer is its /64 ([`crate::rate::client_key`]). Requests with the cluster token pass
/// ([`PostLimit::exempting_cluster`]).
pub async fn limit_posts(
    State(post_limit): State<PostLimit>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST
        && let Some(limit) = &post_limit.limit
        && !post_limit.exempts(&request)
        && let Err(wait) = limit.check(remote.ip(), Instant::now())
    {
        // `Retry-After` is whole seconds: round up, so a client that waits as told finds a token.
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let path = request.uri().path();
        let client = crate::rate::client_key(remote.ip());
        debug!(%client, path, "WHIP/WHEP POST rate exceeded");
        (post_limit.on_refusal)(&request);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            format!("too many requests from {client}; retry in {secs} s\n"),
        )
            .into_response();
    }
    next.run(request).await
}
