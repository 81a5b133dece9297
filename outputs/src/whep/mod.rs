//! WHEP: `POST /whep/{stream}` with the viewer's offer; the session resource
//! `/whep/{stream}/{session}` takes `PATCH` (trickle) and `DELETE`.

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use std::net::SocketAddr;
use waveguide_control::http::{
    SdpBody, SdpFragBody, SignalingState, TicketQuery, absolute_url, created, delete_session,
    patch_session,
};
use waveguide_control::{SessionKind, WatchCredentials};

/// The path of a WHEP session resource.
pub fn session_path(stream: &str, session: &str) -> String {
    format!("/whep/{stream}/{session}")
}

/// The WHEP routes.
pub fn router() -> Router<SignalingState> {
    Router::new().route("/whep/{stream}", post(watch)).route(
        "/whep/{stream}/{session}",
        patch(patch_resource).delete(delete_resource),
    )
}

async fn watch(
    State(state): State<SignalingState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    Query(query): Query<TicketQuery>,
    uri: Uri,
    headers: HeaderMap,
    SdpBody(offer): SdpBody,
) -> Response {
    match state
        .engine
        .watch(
            &stream,
            offer,
            WatchCredentials {
                ticket: query.ticket.as_deref(),
                authorization: headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
                remote: Some(remote.ip()),
            },
        )
        .await
    {
        Ok(answer) => {
            let location = absolute_url(
                &state,
                &uri,
                &headers,
                &session_path(&answer.stream, &answer.session),
            );
            created(&state, answer, location)
        }
        Err(e) => e.into_response(),
    }
}

async fn patch_resource(
    State(state): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    SdpFragBody(fragment): SdpFragBody,
) -> Response {
    patch_session(
        &state,
        SessionKind::Viewer,
        &stream,
        &session,
        &headers,
        &fragment,
    )
    .await
}

async fn delete_resource(
    State(state): State<SignalingState>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    delete_session(&state, SessionKind::Viewer, &stream, &session)
}
