//! The node registry: every [`Node`] record, in process memory or in Redis.
//!
//! Owns where records live and when they expire: a record not refreshed by a heartbeat (or a
//! `NodeUp`) for [`Store::expiry`] (three heartbeats) is gone, with every stream it held. Both
//! backends offer the same small set of primitives (put, read-modify-write, remove, list,
//! sweep); the domain operations (stream started, heartbeat, drain, ...) are written once here
//! on top of them, so the two backends cannot disagree on semantics.
//!
//! With `kind = "redis"` every answer of the store comes from Redis, so several orchestrators
//! on one Redis give the same answers; the HTTP side reads through [`crate::view`], which keeps
//! a list for at most a second and drops it on every change counted by [`Store::changes`].

mod memory;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::node::{Node, StreamLocation, now_ms};
pub use memory::MemoryStore;
pub use redis::RedisStore;
use waveguide_proto::v1;

/// How long one store operation may take before it fails (Redis down or restarting).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// `[store]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` (default) or `redis`.
    pub kind: StoreKind,
    /// The Redis URL, for `kind = "redis"`.
    pub url: String,
    /// Prepended to every Redis key, so several clusters can share one Redis.
    pub prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "waveguide:".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("a stored node record is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("node record `{0}` kept changing under concurrent updates")]
    Contended(String),
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Applied; `resync_required` when the node must re-send `NodeUp`.
    Applied { resync_required: bool },
    /// The node is not known (never announced, expired, or the store lost it): resync.
    UnknownNode,
}

/// The registry, in one of its two backends. Cheap to clone (shared state).
#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Opens the configured backend. Redis connects lazily: a Redis that is down now makes
    /// operations fail (and readiness report it), not the start.
    pub fn open(config: &StoreConfig, expiry: Duration) -> Result<Self, StoreError> {
        Ok(match config.kind {
            StoreKind::Memory => Self::Memory(MemoryStore::new(expiry)),
            StoreKind::Redis => Self::Redis(RedisStore::open(&config.url, &config.prefix, expiry)?),
        })
    }

    /// How long a node lives without a heartbeat.
    pub fn expiry(&self) -> Duration {
        match self {
            Self::Memory(m) => m.expiry(),
            Self::Redis(r) => r.expiry(),
        }
    }

    /// How many changes to nodes, streams, drain or health state this process has made (a
    /// heartbeat's load is not counted). Bumped after each one lands, so a list read before a
    /// count was taken may miss a change, one read after it cannot.
    pub fn changes(&self) -> u64 {
        self.change_counter().load(Ordering::Acquire)
    }

    fn change_counter(&self) -> &AtomicU64 {
        match self {
            Self::Memory(m) => &m.changes,
            Self::Redis(r) => &r.changes,
        }
    }

    /// Counts a change that has landed; passes `result` through.
    fn changed<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.change_counter().fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => bounded(r.ping()).await,
        }
    }

    /// Replaces everything known about `node.info.id` (`NodeUp`).
    pub async fn put_node(&self, node: Node) -> Result<(), StoreError> {
        let result = match self {
            Self::Memory(m) => {
                m.put(node);
                Ok(())
            }
            Self::Redis(r) => bounded(r.put(&node)).await,
        };
        self.changed(result)
    }

    /// Changes a live node's record; `None` when the node is not known (or expired). `change`
    /// may run more than once (Redis retries on a concurrent write), each time on a fresh copy.
    /// Counted as a change ([`Store::changes`]).
    pub async fn update_node<R>(
        &self,
        id: &str,
        change: impl FnMut(&mut Node) -> R,
    ) -> Result<Option<R>, StoreError> {
        let result = self.update_uncounted(id, change).await;
        self.changed(result)
    }

    /// [`Store::update_node`] for what is not a change of the view: a heartbeat's load, a probe
    /// that found nothing new.
    async fn update_uncounted<R>(
        &self,
        id: &str,
        change: impl FnMut(&mut Node) -> R,
    ) -> Result<Option<R>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.update(id, change)),
            Self::Redis(r) => bounded(r.update(id, change)).await,
        }
    }

    /// Forgets a node and its streams; whether it was known.
    pub async fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let result = match self {
            Self::Memory(m) => Ok(m.remove(id)),
            Self::Redis(r) => bounded(r.remove(id)).await,
        };
        self.changed(result)
    }

    /// One live node.
    pub async fn node(&self, id: &str) -> Result<Option<Node>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get(id)),
            Self::Redis(r) => bounded(r.get(id)).await,
        }
    }

    /// Every live node, by id.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let mut nodes = match self {
            Self::Memory(m) => m.list(),
            Self::Redis(r) => match bounded(r.list()).await {
                Ok(nodes) => {
                    r.remember(&nodes);
                    nodes
                }
                Err(e) => match r.last_known() {
                    Some(nodes) => {
                        tracing::warn!(
                            "store unreachable ({e}); answering from the last known nodes"
                        );
                        nodes
                    }
                    None => return Err(e),
                },
            },
        };
        nodes.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(nodes)
    }

    /// Drops expired records; returns the ids this call dropped (for the log).
    pub async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let result = match self {
            Self::Memory(m) => Ok(m.sweep()),
            Self::Redis(r) => bounded(r.sweep()).await,
        };
        match result {
            Ok(dropped) if dropped.is_empty() => Ok(dropped),
            other => self.changed(other),
        }
    }

    // Domain operations, written once over the primitives above.

    /// `StreamStarted` / `StreamUpdated`: the node holds `stream` (replacing what it said
    /// before). `None` when the node is unknown.
    pub async fn stream_held(
        &self,
        node_id: &str,
        stream: StreamLocation,
    ) -> Result<Option<()>, StoreError> {
        self.update_node(node_id, |node| {
            node.streams.insert(stream.name.clone(), stream.clone());
        })
        .await
    }

    /// `StreamEnded`: the node no longer holds `stream`; `Some(was it held)`, `None` when the
    /// node is unknown.
    pub async fn stream_ended(
        &self,
        node_id: &str,
        stream: &str,
    ) -> Result<Option<bool>, StoreError> {
        self.update_node(node_id, |node| node.streams.remove(stream).is_some())
            .await
    }

    /// `ReportStatus`: records the load and refreshes the node's expiry.
    pub async fn heartbeat(
        &self,
        node_id: &str,
        load: &v1::NodeLoad,
        last_event_sequence: u64,
    ) -> Result<Heartbeat, StoreError> {
        let outcome = self
            .update_uncounted(node_id, |node| {
                node.apply_load(load, last_event_sequence, now_ms());
                node.resync_required
            })
            .await?;
        Ok(match outcome {
            Some(resync_required) => Heartbeat::Applied { resync_required },
            None => Heartbeat::UnknownNode,
        })
    }

    /// Sets the drain flag; `None` when the node is unknown.
    pub async fn set_draining(
        &self,
        node_id: &str,
        draining: bool,
    ) -> Result<Option<()>, StoreError> {
        self.update_node(node_id, |node| node.draining = draining)
            .await
    }

    /// Records a health probe: `healthy`, and the drain state when the node told it. Returns the
    /// previous `healthy`, or `None` when the node is unknown.
    pub async fn set_health(
        &self,
        node_id: &str,
        healthy: bool,
        draining: Option<bool>,
    ) -> Result<Option<bool>, StoreError> {
        let result = self
            .update_uncounted(node_id, |node| {
                let was = (node.healthy, node.draining);
                node.healthy = healthy;
                if let Some(draining) = draining {
                    node.draining = draining;
                }
                was
            })
            .await;
        match result {
            // A probe that changed nothing (every probe of a healthy node) is not a change.
            Ok(Some((was, was_draining)))
                if was == healthy && draining.is_none_or(|d| d == was_draining) =>
            {
                Ok(Some(was))
            }
            other => self.changed(other.map(|r| r.map(|(was, _)| was))),
        }
    }
}

/// Runs a store operation with [`OPERATION_TIMEOUT`].
async fn bounded<T>(
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or(Err(StoreError::Timeout(OPERATION_TIMEOUT)))
}

/// A node record is expired when its last heartbeat is older than `expiry`.
fn is_live(node: &Node, expiry: Duration, now_ms: u64) -> bool {
    node.is_fresh(now_ms, expiry_ms(expiry))
}

fn expiry_ms(expiry: Duration) -> u64 {
    u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX)
}
