//! When each packet was sent, for the per-packet delay, keyed by a fingerprint of its payload.
//!
//! A server rewrites sequence numbers, timestamps and SSRCs per viewer, but forwards the
//! payload untouched, so the payload is what identifies a packet on both sides. The clip
//! loops, so the same payload is sent again every loop: the log keeps the latest send, which
//! is the right one as long as delay stays below the loop length (seconds). Audio payloads
//! carry a counter and never repeat.
//!
//! Owns no socket and no clock: callers pass instants.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Entries live between one and two of these; far longer than any delay worth measuring.
const GENERATION: Duration = Duration::from_secs(5);
/// Bytes fingerprinted at each end of a payload: enough to tell entropy-coded data apart
/// without hashing every byte of every packet of every viewer.
const EDGE_BYTES: usize = 32;

/// A 64-bit fingerprint of a payload: its length and up to 32 bytes at each end.
pub fn fingerprint(payload: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (payload.len() as u64).wrapping_mul(K);
    let head = &payload[..payload.len().min(EDGE_BYTES)];
    let tail = &payload[payload.len().saturating_sub(EDGE_BYTES)..];
    for chunk in head.chunks(8).chain(tail.chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

#[derive(Default)]
struct Generations {
    current: HashMap<u64, u64>,
    previous: HashMap<u64, u64>,
    current_since: u64,
}

/// Fingerprint → send time (nanoseconds since the log's epoch). One writer (the publisher),
/// many readers (the viewers), who look up a batch of packets under one read lock.
pub struct SendLog {
    epoch: Instant,
    inner: RwLock<Generations>,
}

impl SendLog {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            inner: RwLock::new(Generations::default()),
        }
    }

    /// `at` as nanoseconds since the epoch (0 before it).
    pub fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Records that a payload with fingerprint `fp` was sent at `at`.
    pub fn record(&self, fp: u64, at: Instant) {
        let ns = self.nanos(at);
        // A poisoned lock means a viewer panicked mid-lookup; the maps are still whole.
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if ns.saturating_sub(g.current_since) > GENERATION.as_nanos() as u64 {
            g.previous = std::mem::take(&mut g.current);
            g.current_since = ns;
        }
        g.current.insert(fp, ns);
    }

    /// For each `(fingerprint, receive ns)`, calls `found(sent ns, receive ns)` when the send
    /// is known.
    pub fn lookup(&self, batch: &[(u64, u64)], mut found: impl FnMut(u64, u64)) {
        if batch.is_empty() {
            return;
        }
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        for &(fp, received) in batch {
            if let Some(&sent) = g.current.get(&fp).or_else(|| g.previous.get(&fp)) {
                found(sent, received);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_tells_payloads_apart() {
        let a = vec![7u8; 1200];
        let mut b = a.clone();
        b[1199] = 8;
        let mut c = a.clone();
        c.push(7);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_ne!(fingerprint(&[]), fingerprint(&[0]));
        let counters: std::collections::HashSet<u64> = (0u64..10_000)
            .map(|n| {
                let mut p = vec![0xfc; 160];
                p[1..9].copy_from_slice(&n.to_be_bytes());
                fingerprint(&p)
            })
            .collect();
        assert_eq!(counters.len(), 10_000);
    }

    #[test]
    fn latest_send_wins_and_old_entries_expire() {
        let t0 = Instant::now();
        let log = SendLog::new(t0);
        log.record(1, t0 + Duration::from_millis(10));
        log.record(1, t0 + Duration::from_millis(20));
        log.record(2, t0 + Duration::from_millis(30));
        let mut got = Vec::new();
        log.lookup(&[(1, 100), (2, 200), (3, 300)], |s, r| got.push((s, r)));
        assert_eq!(got, vec![(20_000_000, 100), (30_000_000, 200)]);

        // Two generations later, entry 2 is gone; a fresh entry is found.
        log.record(4, t0 + Duration::from_secs(6));
        log.record(5, t0 + Duration::from_secs(12));
        let mut sent = Vec::new();
        log.lookup(&[(2, 0), (4, 0), (5, 0)], |s, _| sent.push(s));
        assert_eq!(sent, vec![6_000_000_000, 12_000_000_000]);
    }
}
