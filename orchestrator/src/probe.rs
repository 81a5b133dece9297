//! The health prober: every 2 s, `ModuleService.HealthCheck` on each known node (1 s limit).
//!
//! A node that fails, times out or answers NOT_SERVING is marked unhealthy (it gets nothing
//! new until a probe succeeds again); SERVING marks it healthy and not draining; DRAINING marks
//! it healthy and draining. Owns only this loop; what "eligible" means is `select`'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use waveguide_proto::v1::ServingStatus;

use crate::node::Node;
use crate::node_client::NodeClients;
use crate::store::Store;

pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(store: Store, clients: Arc<NodeClients>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let nodes = match store.nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                tracing::debug!(%err, "health probes skipped: registry unavailable");
                continue;
            }
        };
        let mut probes = JoinSet::new();
        for node in nodes {
            probes.spawn(probe(store.clone(), Arc::clone(&clients), node));
        }
        while probes.join_next().await.is_some() {}
    }
}

async fn probe(store: Store, clients: Arc<NodeClients>, node: Node) {
    let (healthy, draining, detail) = match clients.health(&node.info).await {
        Ok(answer) => match ServingStatus::try_from(answer.status) {
            Ok(ServingStatus::Serving) => (true, Some(false), answer.message),
            Ok(ServingStatus::Draining) => (true, Some(true), answer.message),
            _ => (false, None, format!("not serving: {}", answer.message)),
        },
        Err(err) => (false, None, err.to_string()),
    };
    match store.set_health(node.id(), healthy, draining).await {
        Ok(Some(was_healthy)) if was_healthy != healthy => {
            if healthy {
                tracing::info!(node = %node.id(), "node healthy again");
            } else {
                tracing::warn!(node = %node.id(), %detail, "node unhealthy: it gets nothing new");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::debug!(node = %node.id(), %err, "cannot record a health probe"),
    }
}
