//! The orchestrator's HTTP server on `[http] listen`: assembles the routes (WHIP/WHEP
//! redirects, REST API, OpenAPI document, liveness, readiness, metrics) behind CORS, with the
//! per-client `[limits]` on the redirect POSTs.
//!
//! Owns the route table, the CORS policy, which routes are rate-limited and the state every
//! handler shares. The handlers themselves live in `redirect` and `api`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use waveguide_control::cluster::{TicketKey, bearer_matches};
use waveguide_control::http::{PostLimit, limit_posts};
use waveguide_control::rate::RateLimit;
use waveguide_control::service::Service;

use crate::error::Error;
use crate::node::now_ms;
use crate::node_client::NodeClients;
use crate::readiness::Readiness;
use crate::region::Regions;
use crate::select::Freshness;
use crate::store::Store;
use crate::view::RegistryView;
use crate::{api, openapi, redirect, telemetry};

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// Requests are redirected, not read; a WHIP offer is a few KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    /// The list of nodes redirects, `GET /api/v1/*` and `/metrics` read (at most a second old).
    pub view: RegistryView,
    pub service: Arc<Service>,
    pub tickets: TicketKey,
    pub ticket_ttl: Duration,
    pub cluster_token: Arc<str>,
    pub admin_token: Arc<str>,
    pub regions: Arc<Regions>,
    pub clients: Arc<NodeClients>,
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
}

impl HttpState {
    /// Freshness as of now: a node heard from within the store's expiry.
    pub fn freshness(&self) -> Freshness {
        Freshness {
            now_ms: now_ms(),
            max_age_ms: u64::try_from(self.store.expiry().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Refuses a request without `Authorization: Bearer <admin token>`.
    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), Error> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer_matches(header, &self.admin_token) {
            Ok(())
        } else {
            Err(Error::Unauthenticated)
        }
    }
}

/// Every route. `post_limit` (`None`: no limit) applies to the WHIP/WHEP POSTs only, and not to
/// those with the cluster token.
pub fn router(
    state: HttpState,
    cors_origins: &[String],
    post_limit: Option<Arc<RateLimit>>,
) -> Router {
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/nodes", get(api::nodes))
        .route("/api/v1/nodes/{id}", get(api::node))
        .route("/api/v1/nodes/{id}/drain", post(api::drain))
        .route("/api/v1/nodes/{id}/undrain", post(api::undrain))
        .route("/api/v1/streams", get(api::streams))
        .route(
            "/api/v1/streams/{name}",
            get(api::stream).delete(api::end_stream),
        );
    // Only the redirects are limited: each costs a key check (maybe a webhook call) and a
    // registry read, and they are what a misbehaving player retries in a loop. The REST API,
    // probes and metrics stay reachable; CORS preflights are answered by the CORS layer
    // outside and never get here.
    // An edge's relay lookups carry the cluster token: never limited, so viewers pulling
    // through an edge do not drain its bucket (real relay pulls would then get 429).
    let post_limit = PostLimit::new(post_limit, redirect::count_rate_limited)
        .exempting_cluster(Some(Arc::clone(&state.cluster_token)));
    let redirects = Router::new()
        .route("/whip", post(redirect::whip))
        .route("/whip/{stream}", post(redirect::whip_named))
        .route("/whep/{stream}", post(redirect::whep))
        .route_layer(middleware::from_fn_with_state(post_limit, limit_posts));
    Router::new()
        .merge(redirects)
        .merge(api)
        .route(HEALTHZ_PATH, get(healthz))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors(cors_origins))
        .layer(middleware::map_response(
            waveguide_control::http::preflight_no_content,
        ))
}

/// What browsers need for a cross-origin WHIP/WHEP POST that is redirected to an edge: the
/// preflight allows the methods and headers of WHIP/WHEP, and every response (the 307 too)
/// carries `Access-Control-Allow-Origin` and exposes `Location`, `ETag` and `Link`.
fn cors(origins: &[String]) -> CorsLayer {
    let origins = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::POST,
            Method::GET,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK])
        .max_age(PREFLIGHT_MAX_AGE)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// Alive: the process answers HTTP. Says nothing about readiness.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the node registry answers and gRPC is listening.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    if let Ok(nodes) = state.view.nodes().await {
        telemetry::set_registry_gauges(&nodes);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
