//! The expiry sweeper: once per heartbeat interval, drops nodes silent for three heartbeats
//! (with their streams), logs each, and refreshes the registry gauges.
//!
//! Reads already ignore expired records; the sweep makes the drop visible in logs and frees
//! memory (in Redis, the records expire by themselves and the sweep prunes the id set).

use std::time::Duration;

use crate::store::Store;
use crate::telemetry;

pub async fn run(store: Store, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.sweep().await {
            Ok(dropped) => {
                for id in dropped {
                    tracing::warn!(node = %id, "node {id} dropped: no heartbeat");
                }
            }
            Err(err) => tracing::debug!(%err, "sweep skipped: registry unavailable"),
        }
        if let Ok(nodes) = store.nodes().await {
            telemetry::set_registry_gauges(&nodes);
        }
    }
}
