//! WHIP (RFC 9725): `POST /whip` (stream chosen by the bearer key, as OBS sends it) and
//! `POST /whip/{stream}`; the session resource `/whip/{stream}/{session}` takes `PATCH`
//! (trickle) and `DELETE`.

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use std::net::SocketAddr;
use waveguide_control::SessionKind;
use waveguide_control::http::{
    SdpBody, SdpFragBody, SignalingState, TicketQuery, absolute_url, bearer_token, created,
    delete_session, patch_session,
};
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::IngestProtocol;

/// The path of a WHIP session resource.
pub fn session_path(stream: &str, session: &str) -> String {
    format!("/whip/{stream}/{session}")
}

/// The WHIP routes.
pub fn router() -> Router<SignalingState> {
    Router::new()
        .route("/whip", post(publish_by_key))
        .route("/whip/{stream}", post(publish_named))
        .route(
            "/whip/{stream}/{session}",
            patch(patch_resource).delete(delete_resource),
        )
}

async fn publish_by_key(
    State(state): State<SignalingState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<TicketQuery>,
    uri: Uri,
    headers: HeaderMap,
    SdpBody(offer): SdpBody,
) -> Response {
    publish(&state, None, remote, &query, &uri, &headers, offer).await
}

async fn publish_named(
    State(state): State<SignalingState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    Query(query): Query<TicketQuery>,
    uri: Uri,
    headers: HeaderMap,
    SdpBody(offer): SdpBody,
) -> Response {
    publish(&state, Some(&stream), remote, &query, &uri, &headers, offer).await
}

async fn publish(
    state: &SignalingState,
    stream: Option<&str>,
    remote: SocketAddr,
    query: &TicketQuery,
    uri: &Uri,
    headers: &HeaderMap,
    offer: String,
) -> Response {
    let request = PublishRequest {
        stream,
        key: bearer_token(headers),
        remote_addr: Some(remote),
        ticket: query.ticket.as_deref(),
    };
    match state
        .engine
        .publish(request, offer, IngestProtocol::Whip)
        .await
    {
        Ok(answer) => {
            let location = absolute_url(
                state,
                uri,
                headers,
                &session_path(&answer.stream, &answer.session),
            );
            created(state, answer, location)
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
        SessionKind::Publisher,
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
    delete_session(&state, SessionKind::Publisher, &stream, &session)
}
