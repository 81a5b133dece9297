//! Whether the orchestrator accepts work, and the task that keeps it current.
//!
//! Ready = the node registry answers, gRPC is listening and shutdown has not begun. `/readyz`
//! reads it; the store watcher also flips the gRPC health status with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic_health::server::HealthReporter;

use crate::grpc;
use crate::store::Store;

/// How often the watcher pings the store.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Readiness(Arc<Flags>);

#[derive(Default)]
struct Flags {
    store_reachable: AtomicBool,
    grpc_listening: AtomicBool,
    stopping: AtomicBool,
}

impl Readiness {
    // Lone flags that order no other memory: Relaxed is enough.

    pub fn set_store_reachable(&self, reachable: bool) {
        self.0.store_reachable.store(reachable, Ordering::Relaxed);
    }

    pub fn store_reachable(&self) -> bool {
        self.0.store_reachable.load(Ordering::Relaxed)
    }

    pub fn set_grpc_listening(&self, listening: bool) {
        self.0.grpc_listening.store(listening, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.store_reachable()
            && self.0.grpc_listening.load(Ordering::Relaxed)
            && !self.0.stopping.load(Ordering::Relaxed)
    }
}

/// Pings the store every second; records the answer and mirrors it in gRPC health. Logs
/// transitions only.
pub async fn watch_store(store: Store, readiness: Readiness, health: HealthReporter) {
    let mut interval = tokio::time::interval(STORE_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        interval.tick().await;
        let result = store.ping().await;
        let reachable = result.is_ok();
        if last != Some(reachable) {
            match &result {
                Ok(()) => tracing::info!("node registry reachable"),
                Err(err) => tracing::warn!(%err, "node registry unreachable"),
            }
            grpc::set_serving(&health, reachable).await;
            readiness.set_store_reachable(reachable);
            last = Some(reachable);
        }
    }
}
