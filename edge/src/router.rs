//! The one HTTP server: WHIP, WHEP, LL-HLS, the player, the REST API, metrics and health, behind CORS
//! and a body limit.

use crate::api;
use crate::recording;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use waveguide_control::Engine;
use waveguide_control::http::{MAX_SDP_BYTES, PostLimit, SignalingState, limit_posts};
use waveguide_control::rate::RateLimit;
use waveguide_outputs::player::PlayerConfig;
use waveguide_outputs::record::Recordings;

/// Every route of the edge.
pub fn build(
    state: SignalingState,
    metrics: PrometheusHandle,
    cors_origins: &[String],
    player: PlayerConfig,
    post_limit: Option<Arc<RateLimit>>,
    admin: api::AdminToken,
    recordings: Arc<Recordings>,
) -> Router {
    let origins = if cors_origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    // Browsers preflight a cross-origin WHIP/WHEP POST (application/sdp + Authorization) and
    // only let the page read Location/ETag/Link when they are exposed.
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            HeaderName::from_static("accept-patch"),
        ]);
    let engine = Arc::clone(&state.engine);
    let hls_engine = Arc::clone(&state.engine);
    let api = Router::new()
        .route("/api/v1/streams", get(api::streams))
        .route(
            "/api/v1/streams/{name}",
            get(api::stream).delete(api::end_stream),
        )
        .route(
            "/api/v1/streams/{name}/recording",
            get(recording::state)
                .post(recording::start)
                .delete(recording::stop),
        )
        .route("/api/v1/streams/{name}/recordings", get(recording::files))
        .route("/api/v1/sessions", get(api::sessions))
        .route(
            "/api/v1/sessions/{id}",
            get(api::session).delete(api::end_session),
        )
        .layer(axum::Extension(admin))
        .layer(axum::Extension(recordings));
    // Only the offers are limited: a POST costs an SDP parse and a peer connection.
    let signaling = Router::new()
        .merge(waveguide_inputs::whip::router())
        .merge(waveguide_outputs::whep::router())
        .route_layer(middleware::from_fn_with_state(
            PostLimit::new(post_limit, |_| {}),
            limit_posts,
        ));
    Router::new()
        .merge(signaling)
        .merge(api)
        .with_state(state)
        .merge(waveguide_outputs::player::router(player))
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || std::future::ready(readiness(&engine))),
        )
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(cors)
        .layer(middleware::map_response(
            waveguide_control::http::preflight_no_content,
        ))
        // After the CORS layer: HLS objects are readable from any origin (`*`, set by the HLS
        // routes themselves), whatever origins WHIP/WHEP are limited to.
        .merge(waveguide_outputs::hls::router(hls_engine))
}

/// `200` while the node takes new sessions; `503` while it drains (load balancers and
/// Kubernetes stop sending it work).
fn readiness(engine: &Engine) -> (StatusCode, &'static str) {
    if engine.limits().is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
