//! What a viewer checks in the packets it receives, as plain state machines: sequence gaps
//! ([`SeqTracker`]) and the first complete H.264 keyframe ([`KeyframeTracker`]). They see
//! decrypted RTP only; SRTP authentication has already been done by `rtc`.

use super::annexb::nal;

/// Loss from sequence numbers: packets expected (first to highest, 16-bit wrap extended)
/// against packets received. Reordered packets count once they arrive; duplicates are counted
/// as received (there is no retransmission in a viewer without NACK, so they are rare).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    received: u64,
    /// `(expected, received)` when [`Self::mark`] was called.
    mark: Option<(u64, u64)>,
}

impl SeqTracker {
    pub fn on_packet(&mut self, seq: u16) {
        self.received += 1;
        let Some(_) = self.first else {
            // Start one cycle up so packets reordered before the first do not underflow.
            let ext = (1 << 16) + u64::from(seq);
            self.first = Some(ext);
            self.highest = ext;
            return;
        };
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let ext = (self.highest as i64 + delta).max(0) as u64;
        self.highest = self.highest.max(ext);
        if let Some(first) = &mut self.first {
            *first = (*first).min(ext);
        }
    }

    /// Packets from the first to the highest sequence number seen.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets never received (never negative, whatever duplicates did).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Remembers the counters now, so [`Self::since_mark`] can tell a window's loss apart.
    pub fn mark(&mut self) {
        self.mark = Some((self.expected(), self.received));
    }

    /// `(expected, received)` since [`Self::mark`] (everything if never marked).
    pub fn since_mark(&self) -> (u64, u64) {
        let (e, r) = self.mark.unwrap_or((0, 0));
        (
            self.expected().saturating_sub(e),
            self.received.saturating_sub(r),
        )
    }
}

/// The header fields of an SRTP packet that travel in the clear (SRTP encrypts only the
/// payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearHeader {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// The clear header of a datagram if it is RTP; `None` for STUN, DTLS, RTCP or anything
/// shorter than a header (demultiplexing per RFC 7983 and RFC 5761).
pub fn clear_rtp_header(data: &[u8]) -> Option<ClearHeader> {
    if data.len() < 12 || !(128..=191).contains(&data[0]) || (192..=223).contains(&data[1]) {
        return None;
    }
    Some(ClearHeader {
        payload_type: data[1] & 0x7f,
        marker: data[1] & 0x80 != 0,
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
    })
}

/// Whether an RTP payload begins a NAL unit (a single NAL unit, a STAP-A, or the first FU-A
/// fragment), rather than continuing one.
fn starts_nal_unit(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(1..=24) => true,
        Some(28) => payload.get(1).is_some_and(|fu| fu & 0x80 != 0),
        _ => false,
    }
}

/// Whether an RTP payload carries (part of) an IDR slice.
pub fn carries_idr(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(nal::IDR) => true,
        Some(28) => payload.get(1).is_some_and(|fu| fu & 0x1f == nal::IDR),
        Some(24) => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest[2] & 0x1f == nal::IDR {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        _ => false,
    }
}

/// Finds the first complete keyframe: every packet of an access unit (same RTP timestamp)
/// that carries an IDR slice, in sequence from one that starts a NAL unit to the one with the
/// marker bit.
#[derive(Debug, Clone, Default)]
pub struct KeyframeTracker {
    current_ts: Option<u32>,
    last_seq: Option<u16>,
    last_marker: bool,
    intact: bool,
    has_idr: bool,
    done: bool,
}

impl KeyframeTracker {
    /// Feeds one video packet in arrival order; `true` exactly once, on the packet that
    /// completes the first whole keyframe.
    pub fn on_packet(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> bool {
        if self.done {
            return false;
        }
        let follows = self.last_seq.map(|s| s.wrapping_add(1) == seq);
        if self.current_ts != Some(ts) {
            // A new access unit: intact if nothing between it and the previous one is missing.
            let clean_boundary = match follows {
                None => true,
                Some(f) => f && self.last_marker,
            };
            self.current_ts = Some(ts);
            self.intact = clean_boundary && starts_nal_unit(payload);
            self.has_idr = false;
        } else if follows != Some(true) {
            self.intact = false;
        }
        self.has_idr |= carries_idr(payload);
        self.last_seq = Some(seq);
        self.last_marker = marker;
        if marker && self.intact && self.has_idr {
            self.done = true;
            return true;
        }
        false
    }

    pub fn done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_across_wrap() {
        let mut t = SeqTracker::default();
        for seq in [65_534u16, 65_535, 0, 2, 3] {
            t.on_packet(seq);
        }
        assert_eq!(t.expected(), 6);
        assert_eq!(t.received(), 5);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn reordered_packets_are_not_loss() {
        let mut t = SeqTracker::default();
        for seq in [10u16, 12, 11, 9, 13] {
            t.on_packet(seq);
        }
        assert_eq!((t.expected(), t.received(), t.lost()), (5, 5, 0));
    }

    #[test]
    fn mark_separates_a_window() {
        let mut t = SeqTracker::default();
        for seq in [1u16, 3] {
            t.on_packet(seq);
        }
        t.mark();
        for seq in [4u16, 5, 7] {
            t.on_packet(seq);
        }
        assert_eq!(t.since_mark(), (4, 3));
        assert_eq!(t.lost(), 2);
        assert_eq!(SeqTracker::default().since_mark(), (0, 0));
    }

    const STAP_SPS_PPS: &[u8] = &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
    const FU_IDR_START: &[u8] = &[0x7c, 0x85, 1, 2];
    const FU_IDR_MID: &[u8] = &[0x7c, 0x05, 3];
    const FU_IDR_END: &[u8] = &[0x7c, 0x45, 4];
    const P_SLICE: &[u8] = &[0x41, 0x9a];

    #[test]
    fn complete_keyframe_is_found_once() {
        let mut k = KeyframeTracker::default();
        assert!(!k.on_packet(100, 9000, false, STAP_SPS_PPS));
        assert!(!k.on_packet(101, 9000, false, FU_IDR_START));
        assert!(!k.on_packet(102, 9000, false, FU_IDR_MID));
        assert!(k.on_packet(103, 9000, true, FU_IDR_END));
        assert!(k.done());
        assert!(!k.on_packet(104, 12000, true, P_SLICE));
    }

    #[test]
    fn a_gap_inside_the_keyframe_waits_for_the_next_one() {
        let mut k = KeyframeTracker::default();
        k.on_packet(100, 9000, false, STAP_SPS_PPS);
        k.on_packet(101, 9000, false, FU_IDR_START);
        assert!(!k.on_packet(103, 9000, true, FU_IDR_END));
        assert!(!k.on_packet(104, 12000, true, P_SLICE));
        k.on_packet(105, 15000, false, STAP_SPS_PPS);
        k.on_packet(106, 15000, false, FU_IDR_START);
        assert!(k.on_packet(107, 15000, true, FU_IDR_END));
    }

    #[test]
    fn joining_mid_keyframe_or_after_a_lost_boundary_is_not_complete() {
        let mut k = KeyframeTracker::default();
        // First packet received is a middle fragment.
        k.on_packet(50, 9000, false, FU_IDR_MID);
        assert!(!k.on_packet(51, 9000, true, FU_IDR_END));
        // The packet before this keyframe (the previous frame's last) was lost.
        k.on_packet(52, 12000, false, P_SLICE);
        k.on_packet(54, 15000, false, STAP_SPS_PPS);
        assert!(!k.on_packet(55, 15000, true, FU_IDR_END));
    }

    #[test]
    fn clear_header_is_read_from_rtp_only() {
        let mut rtp = vec![
            0x80,
            0x80 | 102,
            0x12,
            0x34,
            0,
            0,
            0x0b,
            0xb8,
            1,
            2,
            3,
            4,
            0xaa,
        ];
        assert_eq!(
            clear_rtp_header(&rtp),
            Some(ClearHeader {
                payload_type: 102,
                seq: 0x1234,
                timestamp: 3000,
                marker: true
            })
        );
        // RTCP sender report (PT 200), STUN, DTLS, and a truncated header are not RTP.
        rtp[1] = 200;
        assert_eq!(clear_rtp_header(&rtp), None);
        assert_eq!(
            clear_rtp_header(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            clear_rtp_header(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(clear_rtp_header(&[0x80, 102, 0, 1]), None);
    }

    #[test]
    fn single_nal_and_stap_a_idr_are_detected() {
        assert!(carries_idr(&[0x65, 1]));
        assert!(carries_idr(&[0x78, 0, 1, 0x67, 0, 2, 0x65, 0]));
        assert!(!carries_idr(STAP_SPS_PPS));
        assert!(!carries_idr(P_SLICE));
        assert!(starts_nal_unit(FU_IDR_START));
        assert!(!starts_nal_unit(FU_IDR_END));
        assert!(!starts_nal_unit(&[]));
    }
}
