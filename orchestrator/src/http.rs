//! The orchestrator's HTTP surface: today liveness, readiness and Prometheus metrics.
//!
//! Owns the routes and their handlers. Does not own the listener, the metrics recorder (installed
//! once per process by `main`) or the decision of when the process is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// Whether the process accepts work. Starts false; `main` sets it once serving and clears it
/// when shutdown begins, so a load balancer stops sending requests before the listener closes.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        // A lone flag that orders no other memory: Relaxed is enough.
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(healthz))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .with_state(state)
}

/// Alive: the process answers HTTP. Says nothing about readiness.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// One HTTP/1.1 request over a fresh connection; returns the status code and the body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        // A recorder of its own: the global one belongs to the process, not to a test.
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("waveguide_orchestrator_build_info").set(1.0);
        });
        let readiness = Readiness::default();
        let app = router(HttpState {
            metrics: handle,
            readiness: readiness.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        assert_eq!(get(addr, HEALTHZ_PATH).await.0, 200);
        assert_eq!(get(addr, READYZ_PATH).await.0, 503);
        readiness.set(true);
        assert_eq!(get(addr, READYZ_PATH).await.0, 200);
        let (status, body) = get(addr, METRICS_PATH).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("waveguide_orchestrator_build_info 1"),
            "{body}"
        );
        assert_eq!(get(addr, "/whep/demo").await.0, 404);
    }
}
