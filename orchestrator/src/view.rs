//! The HTTP side's view of the registry: the list of nodes, read from the store at most once a
//! second and shared by every redirect, `GET /api/v1/nodes`, `GET /api/v1/streams*` and
//! `/metrics`, instead of one full read (with Redis: SMEMBERS, MGET and the JSON of every node)
//! per request.
//!
//! Owns when the list is read again:
//! - after [`MAX_AGE`];
//! - after any change this process made ([`Store::changes`]: a node announced, gone or swept,
//!   a stream started or ended, drain or health changed; heartbeats' load is not one), so a
//!   single orchestrator never answers from a list older than its last change;
//! - by one request at a time: the others wait for that read instead of reading too.
//!
//! What the view cannot know is a change another orchestrator made on the same Redis within
//! the last second. Redirects for a stream the view does not hold therefore read the store
//! itself ([`RegistryView::fresh`]) before they answer `404`, so a stream that started after
//! the list was taken is found where it is, never answered from the old list.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::store::{Store, StoreError};

/// The longest a list is used.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A list of nodes, when it was read, and the store's change count before the read.
struct Snapshot {
    read_at: Instant,
    changes: u64,
    nodes: Arc<Vec<Node>>,
}

/// The shared, at most a second old, list of nodes. Cheap to clone.
#[derive(Clone)]
pub struct RegistryView {
    store: Store,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
    /// Held by the one request that reads the store for everyone.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl RegistryView {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            snapshot: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// Every live node, by id, as of at most [`MAX_AGE`] ago and after this process's last
    /// change.
    pub async fn nodes(&self) -> Result<Arc<Vec<Node>>, StoreError> {
        if let Some(nodes) = self.current(Instant::now()) {
            return Ok(nodes);
        }
        let _reading = self.reading.lock().await;
        // Another request may have read it while this one waited.
        if let Some(nodes) = self.current(Instant::now()) {
            return Ok(nodes);
        }
        self.read().await
    }

    /// Every live node, read from the store now (and kept as the view): for an answer the view
    /// may be too old to give.
    pub async fn fresh(&self) -> Result<Arc<Vec<Node>>, StoreError> {
        let _reading = self.reading.lock().await;
        self.read().await
    }

    async fn read(&self) -> Result<Arc<Vec<Node>>, StoreError> {
        // Counted before the read: a change landing during it makes the list stale at once.
        let changes = self.store.changes();
        let nodes = Arc::new(self.store.nodes().await?);
        *self.lock() = Some(Snapshot {
            read_at: Instant::now(),
            changes,
            nodes: Arc::clone(&nodes),
        });
        Ok(nodes)
    }

    fn current(&self, now: Instant) -> Option<Arc<Vec<Node>>> {
        let changes = self.store.changes();
        self.lock()
            .as_ref()
            .filter(|s| s.changes == changes && now.saturating_duration_since(s.read_at) < MAX_AGE)
            .map(|s| Arc::clone(&s.nodes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        // Replaced whole, never left half-written.
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeInfo, StreamLocation, now_ms};
    use crate::store::StoreConfig;

    fn store() -> Store {
        Store::open(&StoreConfig::default(), Duration::from_secs(30)).unwrap()
    }

    fn node(id: &str) -> Node {
        let info = NodeInfo {
            id: id.to_owned(),
            ..NodeInfo::default()
        };
        Node::announced(info, [], 0, now_ms())
    }

    #[tokio::test]
    async fn a_change_made_here_is_seen_at_once_and_the_list_is_shared_otherwise() {
        let store = store();
        let view = RegistryView::new(store.clone());
        store.put_node(node("a")).await.unwrap();
        let first = view.nodes().await.unwrap();
        assert_eq!(first.len(), 1);
        let again = view.nodes().await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "read once, shared");

        store
            .stream_held(
                "a",
                StreamLocation::from(&waveguide_proto::v1::StreamInfo {
                    name: "demo".to_owned(),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        let after = view.nodes().await.unwrap();
        assert!(
            after[0].streams.contains_key("demo"),
            "a stream started after the list was read is in the next answer"
        );

        // A heartbeat's load is not a change: the list is kept.
        let kept = view.nodes().await.unwrap();
        store
            .heartbeat("a", &waveguide_proto::v1::NodeLoad::default(), 0)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&kept, &view.nodes().await.unwrap()));
    }

    #[tokio::test]
    async fn a_list_is_used_for_at_most_a_second() {
        let store = store();
        let view = RegistryView::new(store.clone());
        let empty = view.nodes().await.unwrap();
        assert!(empty.is_empty());
        let read_at = view.lock().as_ref().unwrap().read_at;
        assert!(view.current(read_at + MAX_AGE / 2).is_some());
        assert!(view.current(read_at + MAX_AGE).is_none(), "too old");
        // `fresh` reads even when the list is current.
        store.put_node(node("b")).await.unwrap();
        assert_eq!(view.fresh().await.unwrap().len(), 1);
    }
}
