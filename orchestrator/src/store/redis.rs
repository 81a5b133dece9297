//! The shared registry (`[store] kind = "redis"`): node records in Redis, so several
//! orchestrators behind one load balancer give the same answers.
//!
//! Layout, under the configured prefix (default `waveguide:`):
//! - `{prefix}node:{id}`: the node's whole [`Node`] record as one JSON value, written with
//!   `PX` = what is left of its expiry (three heartbeats after the last one), so Redis itself
//!   deletes a node that went silent, with its streams.
//! - `{prefix}nodes`: the set of node ids, to list them without `KEYS`. An id whose record has
//!   expired is removed from the set by [`RedisStore::sweep`] (and ignored by reads before).
//!
//! Updates are read-modify-write with a compare-and-set script (the record is replaced only if
//! it is still byte for byte what was read), retried on a concurrent write, so a heartbeat
//! handled by one orchestrator never loses a stream event handled by another.
//! The connection is a `redis::aio::ConnectionManager`: it reconnects by itself when Redis
//! restarts; until then operations fail fast and readiness reports the store unreachable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{StoreError, expiry_ms, is_live};
use crate::node::{Node, now_ms};

/// Replaces `KEYS[1]` with `ARGV[2]` (expiring in `ARGV[3]` ms) only if it still holds `ARGV[1]`.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Concurrent writers on one node record are a handful at most (a heartbeat, an event, a probe);
/// a writer that lost the race waits a little, jittered, so a burst of them spreads out.
const MAX_ATTEMPTS: u32 = 40;

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    expiry: Duration,
    /// The last list Redis gave, and when: redirects are served from it while Redis is
    /// unreachable (see [`RedisStore::last_known`]).
    last_list: Arc<Mutex<Option<Snapshot>>>,
    /// Counts this process's changes to streams and node states ([`super::Store::changes`]).
    pub(super) changes: Arc<std::sync::atomic::AtomicU64>,
}

/// A list of nodes and when (ms) Redis gave it.
type Snapshot = (u64, Vec<Node>);

/// How long a Redis outage may be bridged with the last known list before answers fail.
const FALLBACK_FOR_MS: u64 = 60_000;

impl RedisStore {
    /// A lazily connecting store; no I/O happens here.
    pub fn open(url: &str, prefix: &str, expiry: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            expiry,
            last_list: Arc::default(),
            changes: Arc::default(),
        })
    }

    /// Keeps `nodes` as the list to fall back on.
    pub fn remember(&self, nodes: &[Node]) {
        *self.last_list.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((now_ms(), nodes.to_vec()));
    }

    /// The last list Redis gave, as it would look now had nothing changed since: every record
    /// keeps the freshness it had then (heartbeats could not be stored meanwhile, so their age
    /// says nothing). `None` once the outage is older than [`FALLBACK_FOR_MS`]: a stale view
    /// for a minute beats refusing every publisher and viewer; beyond that it is a guess.
    pub fn last_known(&self) -> Option<Vec<Node>> {
        let guard = self.last_list.lock().unwrap_or_else(|p| p.into_inner());
        let (taken, nodes) = guard.as_ref()?;
        let age = now_ms().saturating_sub(*taken);
        if age > FALLBACK_FOR_MS {
            return None;
        }
        Some(
            nodes
                .iter()
                .cloned()
                .map(|mut n| {
                    n.last_seen_ms += age;
                    n
                })
                .collect(),
        )
    }

    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    fn node_key(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }

    fn ids_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Milliseconds left before `node` expires; `None` when it already has.
    fn remaining_ms(&self, node: &Node, now_ms: u64) -> Option<u64> {
        let deadline = node.last_seen_ms.saturating_add(expiry_ms(self.expiry));
        deadline.checked_sub(now_ms).filter(|&left| left > 0)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }

    pub async fn put(&self, node: &Node) -> Result<(), StoreError> {
        let Some(ttl) = self.remaining_ms(node, now_ms()) else {
            return Ok(());
        };
        let json = serde_json::to_string(node)?;
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.node_key(&node.info.id))
            .arg(json)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SADD")
            .arg(self.ids_key())
            .arg(&node.info.id)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    pub async fn update<R>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Node) -> R,
    ) -> Result<Option<R>, StoreError> {
        let key = self.node_key(id);
        let mut connection = self.connection.clone();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                let jitter_us = rand::random_range(200..1_000 * u64::from(attempt.min(10)));
                tokio::time::sleep(std::time::Duration::from_micros(jitter_us)).await;
            }
            let stored: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let mut node: Node = serde_json::from_str(&stored)?;
            let now = now_ms();
            if !is_live(&node, self.expiry, now) {
                return Ok(None);
            }
            let outcome = change(&mut node);
            let Some(ttl) = self.remaining_ms(&node, now) else {
                return Ok(None);
            };
            let replaced: i64 = redis::cmd("EVAL")
                .arg(COMPARE_AND_SET)
                .arg(1)
                .arg(&key)
                .arg(&stored)
                .arg(serde_json::to_string(&node)?)
                .arg(ttl)
                .query_async(&mut connection)
                .await?;
            if replaced == 1 {
                return Ok(Some(outcome));
            }
        }
        Err(StoreError::Contended(id.to_owned()))
    }

    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let (deleted, _): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(self.node_key(id))
            .cmd("SREM")
            .arg(self.ids_key())
            .arg(id)
            .query_async(&mut connection)
            .await?;
        Ok(deleted > 0)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Node>, StoreError> {
        let mut connection = self.connection.clone();
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.node_key(id))
            .query_async(&mut connection)
            .await?;
        let now = now_ms();
        match stored {
            Some(json) => {
                let node: Node = serde_json::from_str(&json)?;
                Ok(is_live(&node, self.expiry, now).then_some(node))
            }
            None => Ok(None),
        }
    }

    /// Every id in the set with its record, `None` where the record is gone.
    async fn records(&self) -> Result<Vec<(String, Option<Node>)>, StoreError> {
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.ids_key())
            .query_async(&mut connection)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let stored: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await?;
        let now = now_ms();
        let mut records = Vec::with_capacity(ids.len());
        for (id, json) in ids.into_iter().zip(stored) {
            let node = match json {
                Some(json) => {
                    let node: Node = serde_json::from_str(&json)?;
                    is_live(&node, self.expiry, now).then_some(node)
                }
                None => None,
            };
            records.push((id, node));
        }
        Ok(records)
    }

    pub async fn list(&self) -> Result<Vec<Node>, StoreError> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter_map(|(_, node)| node)
            .collect())
    }

    /// Removes the ids whose record Redis expired; returns those this call removed (another
    /// orchestrator sweeping at the same moment reports the others).
    pub async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let mut dropped = Vec::new();
        let mut connection = self.connection.clone();
        for (id, node) in self.records().await? {
            if node.is_some() {
                continue;
            }
            // Expired by our clock but not yet by Redis's: delete it, unless it was refreshed.
            let removed: i64 = redis::cmd("EVAL")
                .arg(REMOVE_IF_EXPIRED)
                .arg(2)
                .arg(self.node_key(&id))
                .arg(self.ids_key())
                .arg(&id)
                .arg(now_ms().saturating_sub(expiry_ms(self.expiry)))
                .query_async(&mut connection)
                .await?;
            if removed == 1 {
                dropped.push(id);
            }
        }
        Ok(dropped)
    }
}

/// Removes id `ARGV[1]` from the set `KEYS[2]` (and its record `KEYS[1]`) when the record is
/// gone or was last seen before `ARGV[2]` (Unix ms). Returns 1 when this call removed the id.
const REMOVE_IF_EXPIRED: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local record = cjson.decode(current)
  if record['last_seen_ms'] >= tonumber(ARGV[2]) then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
return redis.call('SREM', KEYS[2], ARGV[1])
";
