//! The in-process registry (`[store] kind = "memory"`, the default): a map behind a mutex.
//!
//! Owns expiry for this backend: reads never return a record older than the expiry, and
//! [`MemoryStore::sweep`] (run by the sweeper task) deletes them. State is lost with the process;
//! edges rebuild it by re-sending `NodeUp` when their next heartbeat is answered with a resync.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::is_live;
use crate::node::{Node, now_ms};

#[derive(Clone)]
pub struct MemoryStore {
    nodes: Arc<Mutex<HashMap<String, Node>>>,
    expiry: Duration,
    /// Counts this process's changes to streams and node states ([`super::Store::changes`]).
    pub(super) changes: Arc<AtomicU64>,
}

impl MemoryStore {
    pub fn new(expiry: Duration) -> Self {
        Self {
            nodes: Arc::default(),
            expiry,
            changes: Arc::default(),
        }
    }

    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Node>> {
        // A panic while holding the lock leaves whole records behind (every change is a
        // single assignment), so the map is still usable.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn put(&self, node: Node) {
        self.lock().insert(node.info.id.clone(), node);
    }

    pub fn update<R>(&self, id: &str, mut change: impl FnMut(&mut Node) -> R) -> Option<R> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(id)?;
        if !is_live(node, self.expiry, now_ms()) {
            return None;
        }
        Some(change(node))
    }

    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    pub fn get(&self, id: &str) -> Option<Node> {
        let now = now_ms();
        self.lock()
            .get(id)
            .filter(|node| is_live(node, self.expiry, now))
            .cloned()
    }

    pub fn list(&self) -> Vec<Node> {
        let now = now_ms();
        self.lock()
            .values()
            .filter(|node| is_live(node, self.expiry, now))
            .cloned()
            .collect()
    }

    pub fn sweep(&self) -> Vec<String> {
        let now = now_ms();
        let mut dropped = Vec::new();
        self.lock().retain(|id, node| {
            let live = is_live(node, self.expiry, now);
            if !live {
                dropped.push(id.clone());
            }
            live
        });
        dropped.sort();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;
    use crate::node::{NodeInfo, Protocol, StreamLocation};
    use waveguide_proto::v1;

    fn announced(id: &str) -> Node {
        let stream = StreamLocation {
            name: "demo".into(),
            protocol: Protocol::Whip,
            tracks: Vec::new(),
            viewers: 0,
            started_at_ms: 0,
            origin_node_id: id.into(),
        };
        Node::announced(
            NodeInfo {
                id: id.into(),
                ..NodeInfo::default()
            },
            [stream],
            1,
            now_ms(),
        )
    }

    #[tokio::test]
    async fn a_silent_node_expires_with_its_streams_and_heartbeats_keep_it() {
        let store = Store::Memory(MemoryStore::new(Duration::from_millis(300)));
        store.put_node(announced("quiet")).await.unwrap();
        store.put_node(announced("chatty")).await.unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let beat = store
                .heartbeat("chatty", &v1::NodeLoad::default(), 1)
                .await
                .unwrap();
            assert_eq!(
                beat,
                Heartbeat::Applied {
                    resync_required: false
                }
            );
        }
        // Expired records are invisible before the sweeper runs...
        let ids: Vec<String> = store
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.info.id)
            .collect();
        assert_eq!(ids, ["chatty"]);
        assert!(store.node("quiet").await.unwrap().is_none());
        assert_eq!(
            store
                .heartbeat("quiet", &v1::NodeLoad::default(), 1)
                .await
                .unwrap(),
            Heartbeat::UnknownNode
        );
        // ...and the sweeper deletes them once.
        assert_eq!(store.sweep().await.unwrap(), ["quiet"]);
        assert!(store.sweep().await.unwrap().is_empty());
        assert!(store.nodes().await.unwrap()[0].streams.contains_key("demo"));
    }

    use super::super::Heartbeat;

    #[tokio::test]
    async fn stream_and_drain_operations_need_a_known_node() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3)));
        assert_eq!(store.stream_ended("nobody", "demo").await.unwrap(), None);
        store.put_node(announced("a")).await.unwrap();
        assert_eq!(store.stream_ended("a", "demo").await.unwrap(), Some(true));
        assert_eq!(store.stream_ended("a", "demo").await.unwrap(), Some(false));
        assert_eq!(store.set_draining("a", true).await.unwrap(), Some(()));
        assert!(store.node("a").await.unwrap().unwrap().draining);
        assert_eq!(
            store.set_health("a", false, None).await.unwrap(),
            Some(true)
        );
        assert!(store.remove_node("a").await.unwrap());
        assert!(!store.remove_node("a").await.unwrap());
    }
}
