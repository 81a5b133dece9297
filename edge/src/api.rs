//! The REST API (`/api/v1`): what the node holds, read-only for now.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use waveguide_control::http::SignalingState;

/// `GET /api/v1/streams`
pub async fn streams(State(state): State<SignalingState>) -> Response {
    Json(state.engine.streams().statuses(Instant::now())).into_response()
}

/// `GET /api/v1/streams/{name}`
pub async fn stream(State(state): State<SignalingState>, Path(name): Path<String>) -> Response {
    match state.engine.streams().status(&name, Instant::now()) {
        Some(s) => Json(s).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("stream `{name}` is not live on this node\n"),
        )
            .into_response(),
    }
}
