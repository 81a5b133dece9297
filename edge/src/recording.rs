//! The REST face of recording (`/api/v1/streams/{name}/recording[s]`): a stream's recording
//! state, starting and stopping it (admin, like every mutating route), and its files.

use crate::api::AdminToken;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::sync::Arc;
use waveguide_outputs::record::Recordings;

/// `GET /api/v1/streams/{name}/recording`: the state of the stream's latest recording since
/// this node started (`404` when it has none).
pub async fn state(
    Extension(recordings): Extension<Arc<Recordings>>,
    Path(name): Path<String>,
) -> Response {
    match recordings.status(&name) {
        Some(view) => Json(view).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("stream `{name}` has not been recorded since this node started\n"),
        )
            .into_response(),
    }
}

/// `POST /api/v1/streams/{name}/recording` (admin): starts recording; `201` with the state.
pub async fn start(
    Extension(recordings): Extension<Arc<Recordings>>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    match recordings.start_recording(&name, "rest") {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/streams/{name}/recording` (admin): stops it; the open fragment is
/// written and the file closed. `200` with the state, `404` when nothing records.
pub async fn stop(
    Extension(recordings): Extension<Arc<Recordings>>,
    Extension(admin): Extension<AdminToken>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = admin.refusal(&headers) {
        return refused;
    }
    match recordings.stop_recording(&name) {
        Ok(view) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/streams/{name}/recordings`: the stream's files, oldest first (also after it
/// has ended).
pub async fn files(
    Extension(recordings): Extension<Arc<Recordings>>,
    Path(name): Path<String>,
) -> Response {
    let list = tokio::task::spawn_blocking(move || recordings.files(&name)).await;
    match list {
        Ok(Ok(files)) => Json(files).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
