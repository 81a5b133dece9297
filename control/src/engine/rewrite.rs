//! Per-viewer sequence number and timestamp rewriting, so a viewer's decoder sees one
//! continuous stream across keyframe replay and publisher reconnects.

use crate::media::{MediaPacket, TrackKind};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Base {
    epoch: u32,
    seq_offset: u16,
    ts_offset: u32,
}

/// Maps one source track's numbering onto a viewer's outgoing track.
#[derive(Debug)]
pub(crate) struct Rewriter {
    kind: TrackKind,
    clock_rate: u32,
    base: Option<Base>,
    last_out: Option<(u16, u32, Instant)>,
}

impl Rewriter {
    pub(crate) fn new(kind: TrackKind, clock_rate: u32) -> Self {
        Self {
            kind,
            clock_rate,
            base: None,
            last_out: None,
        }
    }

    /// Starts numbering anew from the next packet (the next keyframe, for video), continuing
    /// from the last one sent: after a pause, nothing the viewer missed looks lost.
    pub(crate) fn restart(&mut self) {
        self.base = None;
    }

    /// The outgoing (sequence number, timestamp) for `packet`, or `None` while a video
    /// track waits for a keyframe of the current publisher.
    pub(crate) fn map(&mut self, packet: &MediaPacket, now: Instant) -> Option<(u16, u32)> {
        let seq = packet.rtp.header.sequence_number;
        let ts = packet.rtp.header.timestamp;
        let base = match self.base {
            Some(b) if b.epoch == packet.epoch => b,
            _ => {
                if self.kind == TrackKind::Video && !packet.keyframe_start {
                    // A decoder cannot start (or continue across a publisher change) mid-GOP.
                    self.base = None;
                    return None;
                }
                let b = match self.last_out {
                    None => Base {
                        epoch: packet.epoch,
                        seq_offset: rand::random(),
                        ts_offset: rand::random(),
                    },
                    Some((last_seq, last_ts, at)) => {
                        let elapsed = now.saturating_duration_since(at).as_secs_f64();
                        let ticks = ((elapsed * self.clock_rate as f64) as u32).max(1);
                        Base {
                            epoch: packet.epoch,
                            seq_offset: last_seq.wrapping_add(1).wrapping_sub(seq),
                            ts_offset: last_ts.wrapping_add(ticks).wrapping_sub(ts),
                        }
                    }
                };
                self.base = Some(b);
                b
            }
        };
        let out = (
            seq.wrapping_add(base.seq_offset),
            ts.wrapping_add(base.ts_offset),
        );
        let newer = self
            .last_out
            .is_none_or(|(s, _, _)| (out.0.wrapping_sub(s) as i16) > 0);
        if newer {
            self.last_out = Some((out.0, out.1, now));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp;
    use std::time::Duration;

    fn pkt(epoch: u32, seq: u16, ts: u32, key: bool) -> MediaPacket {
        let mut rtp = rtp::Packet::default();
        rtp.header.sequence_number = seq;
        rtp.header.timestamp = ts;
        rtp.payload = Bytes::from_static(&[1]);
        MediaPacket {
            stream: 1,
            kind: TrackKind::Video,
            epoch,
            keyframe_start: key,
            rtp,
            received: Instant::now(),
            delivery: Default::default(),
        }
    }

    #[test]
    fn video_waits_for_keyframe_then_is_continuous() {
        let mut r = Rewriter::new(TrackKind::Video, 90_000);
        let t0 = Instant::now();
        assert!(r.map(&pkt(0, 10, 1000, false), t0).is_none());
        let (s1, ts1) = r.map(&pkt(0, 11, 2000, true), t0).unwrap();
        let (s2, ts2) = r.map(&pkt(0, 12, 5000, false), t0).unwrap();
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(ts2, ts1.wrapping_add(3000));
    }

    #[test]
    fn new_publisher_continues_numbering() {
        let mut r = Rewriter::new(TrackKind::Video, 90_000);
        let t0 = Instant::now();
        r.map(&pkt(0, 100, 9000, true), t0).unwrap();
        let (last_seq, last_ts) = r.map(&pkt(0, 101, 9000, false), t0).unwrap();
        // Publisher comes back with unrelated numbering one second later.
        let t1 = t0 + Duration::from_secs(1);
        assert!(r.map(&pkt(1, 5000, 77, false), t1).is_none());
        let (seq, ts) = r.map(&pkt(1, 5001, 80, true), t1).unwrap();
        assert_eq!(seq, last_seq.wrapping_add(1));
        assert_eq!(ts, last_ts.wrapping_add(90_000));
        let (seq2, _) = r.map(&pkt(1, 5002, 80, false), t1).unwrap();
        assert_eq!(seq2, seq.wrapping_add(1));
    }
}
