//! Taps: outputs that are not WebRTC peers (HLS muxing) receive a stream's packets through a
//! bounded channel that the fan-out feeds next to the shards.
//!
//! Owns the per-stream list of tap channels. While nobody taps, feeding costs the fan-out one
//! relaxed atomic load; while someone does, one read lock and a `try_send` per tap (a full
//! channel drops the packet and counts it: the tap's reader sees the sequence gap).

use crate::media::MediaPacket;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

type Senders = Vec<(u64, mpsc::Sender<Arc<MediaPacket>>)>;

/// Every open tap of the node, by stream id.
#[derive(Debug, Default)]
pub struct Taps {
    open: AtomicUsize,
    next_id: AtomicU64,
    dropped: AtomicU64,
    by_stream: RwLock<HashMap<u64, Senders>>,
}

/// One open tap: the packets of one stream. Closing (dropping) it removes it from the fan-out.
#[derive(Debug)]
pub struct Tap {
    /// The stream's packets, in fan-out order.
    pub packets: mpsc::Receiver<Arc<MediaPacket>>,
    taps: Arc<Taps>,
    stream: u64,
    id: u64,
}

impl Taps {
    /// Opens a tap on stream `stream` holding up to `capacity` packets not yet read.
    pub fn open(self: &Arc<Self>, stream: u64, capacity: usize) -> Tap {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.write().entry(stream).or_default().push((id, tx));
        self.open.fetch_add(1, Ordering::Relaxed);
        Tap {
            packets: rx,
            taps: Arc::clone(self),
            stream,
            id,
        }
    }

    /// Hands `packet` to every tap of its stream. The fan-out calls this for every packet.
    pub fn feed(&self, packet: &Arc<MediaPacket>) {
        if self.open.load(Ordering::Relaxed) == 0 {
            return;
        }
        let by_stream = self.by_stream.read().unwrap_or_else(|p| p.into_inner());
        if let Some(senders) = by_stream.get(&packet.stream) {
            for (_, tx) in senders {
                if tx.try_send(Arc::clone(packet)).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Whether stream `stream` has a tap (work only consumers need may then not be skipped).
    pub fn is_tapped(&self, stream: u64) -> bool {
        if self.open.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let by_stream = self.by_stream.read().unwrap_or_else(|p| p.into_inner());
        by_stream.get(&stream).is_some_and(|s| !s.is_empty())
    }

    /// Packets dropped because a tap's channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Senders>> {
        // Entries are pushed and removed whole; a poisoned map is still consistent.
        self.by_stream.write().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, stream: u64, id: u64) {
        let mut by_stream = self.write();
        if let Some(senders) = by_stream.get_mut(&stream) {
            let before = senders.len();
            senders.retain(|(i, _)| *i != id);
            if senders.len() < before {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            if senders.is_empty() {
                by_stream.remove(&stream);
            }
        }
    }
}

impl Tap {
    /// The stream id this tap reads.
    pub fn stream(&self) -> u64 {
        self.stream
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.taps.close(self.stream, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackKind;
    use rtc::rtp;

    fn packet(stream: u64, seq: u16) -> Arc<MediaPacket> {
        let mut rtp = rtp::Packet::default();
        rtp.header.sequence_number = seq;
        Arc::new(MediaPacket {
            stream,
            kind: TrackKind::Video,
            epoch: 0,
            keyframe_start: false,
            rtp,
            received: std::time::Instant::now(),
            delivery: Default::default(),
        })
    }

    #[test]
    fn a_tap_gets_its_streams_packets_only_and_closes_on_drop() {
        let taps = Arc::new(Taps::default());
        taps.feed(&packet(1, 0));
        let mut tap = taps.open(1, 4);
        assert!(taps.is_tapped(1) && !taps.is_tapped(2));
        taps.feed(&packet(1, 1));
        taps.feed(&packet(2, 2));
        assert_eq!(
            tap.packets.try_recv().unwrap().rtp.header.sequence_number,
            1
        );
        assert!(tap.packets.try_recv().is_err());
        drop(tap);
        assert!(!taps.is_tapped(1));
        assert_eq!(taps.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_tap_drops_and_counts() {
        let taps = Arc::new(Taps::default());
        let mut tap = taps.open(7, 2);
        for seq in 0..5 {
            taps.feed(&packet(7, seq));
        }
        assert_eq!(taps.dropped(), 3);
        assert_eq!(
            tap.packets.try_recv().unwrap().rtp.header.sequence_number,
            0
        );
    }
}
