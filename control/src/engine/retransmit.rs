//! How much a viewer's NACKs may make the shard send again.
//!
//! A NACK is cheap to send and costly to answer: one generic NACK of ~350 pairs names ~6,000
//! packets, and a viewer may send as many as it likes. [`Retransmits`] decides for each packet
//! a viewer asks for:
//! - **Once per window.** A sequence number is not sent again within max(RTT, 50 ms) (at most
//!   1 s) of its last resend: a viewer that lost the resend asks again after a round trip, and
//!   a NACK that names a packet twice (or every 20 ms) gets it once.
//! - **Within a budget.** A token bucket in payload bytes, refilled at a quarter of the stream's
//!   measured rate (at least [`MIN_RATE_BYTES`] a second) and holding half a second of the
//!   stream (at least [`MIN_BURST_BYTES`]): a loss burst of a keyframe is repaired at once, a
//!   flood costs at most a quarter more than the stream itself.
//!
//! Refused resends are counted by the caller (`waveguide_drops_total{cause}`). Sans-IO: time
//! comes in, a verdict goes out.

use std::time::{Duration, Instant};

/// Sequence numbers remembered (as the direct path's history: older ones are not held anyway).
const SLOTS: usize = 512;
/// No sequence number is resent twice within this, nor within the viewer's RTT.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(50);
/// However long the RTT, a packet may be asked for again after this.
const MAX_WINDOW: Duration = Duration::from_secs(1);
/// The refill is the stream's rate divided by this.
const RATE_DIVISOR: f64 = 4.0;
/// The bucket holds this much of the stream.
const BURST_OF_STREAM: Duration = Duration::from_millis(500);
/// Floors, for streams whose rate is low or not measured yet (bytes a second; bytes).
pub(crate) const MIN_RATE_BYTES: f64 = 32.0 * 1024.0;
pub(crate) const MIN_BURST_BYTES: f64 = 64.0 * 1024.0;

/// What to do with one asked-for packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    Send,
    /// Sent again within the window already.
    Duplicate,
    /// Past the viewer's retransmission budget.
    OverBudget,
}

/// One viewer's retransmission state: recent resends and its token bucket.
#[derive(Debug, Default)]
pub(crate) struct Retransmits {
    /// The last resend of each slot's sequence number.
    resent: Vec<Option<(u16, Instant)>>,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Retransmits {
    /// Whether to resend `seq` (`bytes` of payload) now, for a stream at `stream_bps` and a
    /// viewer at `rtt`; a `Send` is charged.
    pub(crate) fn admit(
        &mut self,
        seq: u16,
        bytes: usize,
        stream_bps: u64,
        rtt: Option<Duration>,
        now: Instant,
    ) -> Resend {
        if self.resent.is_empty() {
            self.resent.resize(SLOTS, None);
        }
        let slot = usize::from(seq) % SLOTS;
        let window = rtt.unwrap_or_default().clamp(MIN_WINDOW, MAX_WINDOW);
        if let Some((last, at)) = self.resent[slot]
            && last == seq
            && now.saturating_duration_since(at) < window
        {
            return Resend::Duplicate;
        }
        let stream_bytes = stream_bps as f64 / 8.0;
        let rate = (stream_bytes / RATE_DIVISOR).max(MIN_RATE_BYTES);
        let burst = (stream_bytes * BURST_OF_STREAM.as_secs_f64()).max(MIN_BURST_BYTES);
        self.tokens = match self.refilled {
            None => burst,
            Some(t) => self.tokens + now.saturating_duration_since(t).as_secs_f64() * rate,
        }
        .min(burst);
        self.refilled = Some(now);
        let cost = bytes as f64;
        if self.tokens < cost {
            return Resend::OverBudget;
        }
        self.tokens -= cost;
        self.resent[slot] = Some((seq, now));
        Resend::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBPS: u64 = 1_000_000;

    #[test]
    fn a_packet_goes_once_per_window() {
        let mut r = Retransmits::default();
        let t = Instant::now();
        assert_eq!(r.admit(7, 1000, MBPS, None, t), Resend::Send);
        assert_eq!(r.admit(7, 1000, MBPS, None, t), Resend::Duplicate);
        let soon = t + Duration::from_millis(40);
        assert_eq!(r.admit(7, 1000, MBPS, None, soon), Resend::Duplicate);
        assert_eq!(r.admit(8, 1000, MBPS, None, soon), Resend::Send);
        // Past 50 ms it may go again (the viewer lost the resend).
        let later = t + Duration::from_millis(60);
        assert_eq!(r.admit(7, 1000, MBPS, None, later), Resend::Send);
        // With a 200 ms RTT the window is the RTT.
        let rtt = Some(Duration::from_millis(200));
        let after = later + Duration::from_millis(150);
        assert_eq!(r.admit(7, 1000, MBPS, rtt, after), Resend::Duplicate);
        let after = later + Duration::from_millis(210);
        assert_eq!(r.admit(7, 1000, MBPS, rtt, after), Resend::Send);
        // A sequence number sharing the slot is another packet.
        let other = 7 + SLOTS as u16;
        assert_eq!(r.admit(other, 1000, MBPS, rtt, after), Resend::Send);
    }

    #[test]
    fn a_flood_is_held_to_the_budget() {
        // 2.5 Mbps: refill 78 KB/s, burst 156 KB.
        let bps = 2_500_000;
        let mut r = Retransmits::default();
        let t0 = Instant::now();
        let mut sent = 0usize;
        // For 5 s, every 20 ms a NACK of 6,000 packets of 1,000 bytes.
        for tick in 0..250u32 {
            let now = t0 + Duration::from_millis(20 * u64::from(tick));
            for seq in 0..6000u16 {
                if r.admit(seq, 1000, bps, None, now) == Resend::Send {
                    sent += 1000;
                }
            }
        }
        let stream = bps as f64 / 8.0;
        let allowed = stream * 0.5 + stream / 4.0 * 5.0;
        assert!(sent as f64 <= allowed + 1000.0, "{sent} > {allowed}");
        assert!(sent as f64 >= allowed * 0.9, "the budget is usable: {sent}");
    }

    #[test]
    fn a_lossy_viewer_is_served_in_full() {
        // A 2.5 Mbps stream of 1,200-byte packets (260 a second) losing one every 20 ms (19 %),
        // each NACKed at once, for 10 s.
        let bps = 2_500_000;
        let mut r = Retransmits::default();
        let t0 = Instant::now();
        let mut seq = 0u16;
        for tick in 0..500u64 {
            let now = t0 + Duration::from_millis(20 * tick);
            assert_eq!(r.admit(seq, 1200, bps, None, now), Resend::Send);
            seq = seq.wrapping_add(5);
        }
    }

    #[test]
    fn an_unmeasured_stream_gets_the_floor() {
        let mut r = Retransmits::default();
        let t = Instant::now();
        let mut sent = 0.0;
        for seq in 0..1000u16 {
            if r.admit(seq, 1000, 0, None, t) == Resend::Send {
                sent += 1000.0;
            }
        }
        assert!(sent <= MIN_BURST_BYTES && sent > MIN_BURST_BYTES - 1000.0);
    }
}
