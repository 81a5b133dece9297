//! H.264 NAL units to RTP payloads (RFC 6184, packetization-mode 1): a NAL unit that fits is
//! sent as it is, a larger one as FU-A fragments, and the parameter sets as one STAP-A.
//!
//! Owns payload framing only: sequence numbers, timestamps and the marker are `video`'s.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest RTP payload we make: with RTP, SRTP and UDP/IP headers the datagram stays well
/// under a 1280-byte IPv6 minimum MTU path plus tunnels.
pub const MAX_PAYLOAD: usize = 1200;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Appends the payloads for `nal`.
pub fn nal_payloads(nal: &Bytes, max: usize, out: &mut Vec<Bytes>) {
    if nal.is_empty() {
        return;
    }
    if nal.len() <= max {
        out.push(nal.clone());
        return;
    }
    let header = nal[0];
    let indicator = (header & 0xe0) | FU_A;
    let nal_type = header & 0x1f;
    let body = &nal[1..];
    let step = max.saturating_sub(2).max(1);
    let count = body.len().div_ceil(step);
    for (i, fragment) in body.chunks(step).enumerate() {
        let mut fu_header = nal_type;
        if i == 0 {
            fu_header |= 0x80;
        }
        if i + 1 == count {
            fu_header |= 0x40;
        }
        let mut p = BytesMut::with_capacity(2 + fragment.len());
        p.put_u8(indicator);
        p.put_u8(fu_header);
        p.put_slice(fragment);
        out.push(p.freeze());
    }
}

/// Appends the parameter sets: one STAP-A when they fit, otherwise one payload each.
pub fn parameter_set_payloads(sets: &[&Bytes], max: usize, out: &mut Vec<Bytes>) {
    let sets: Vec<&Bytes> = sets.iter().copied().filter(|s| !s.is_empty()).collect();
    let total: usize = 1 + sets.iter().map(|s| 2 + s.len()).sum::<usize>();
    if sets.len() < 2 || total > max {
        for s in sets {
            nal_payloads(s, max, out);
        }
        return;
    }
    // F is the OR of the aggregated units' F bits, NRI their maximum.
    let forbidden = sets.iter().fold(0, |acc, s| acc | (s[0] & 0x80));
    let nri = sets.iter().map(|s| s[0] & 0x60).max().unwrap_or(0x60);
    let mut p = BytesMut::with_capacity(total);
    p.put_u8(forbidden | nri | STAP_A);
    for s in sets {
        // Each set is shorter than `max` here, so its length fits 16 bits.
        p.put_u16(s.len() as u16);
        p.put_slice(s);
    }
    out.push(p.freeze());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_nal_is_single() {
        let nal = Bytes::from_static(&[0x41, 1, 2, 3]);
        let mut out = Vec::new();
        nal_payloads(&nal, MAX_PAYLOAD, &mut out);
        assert_eq!(out, vec![nal]);
    }

    #[test]
    fn large_nal_is_fragmented_and_reassembles() {
        let mut v = vec![0x65];
        v.extend((0..5000).map(|i| i as u8));
        let nal = Bytes::from(v);
        let mut out = Vec::new();
        nal_payloads(&nal, 1200, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|p| p.len() <= 1200));
        assert_eq!(out[0][0], 0x60 | 28);
        assert_eq!(out[0][1], 0x80 | 5);
        assert_eq!(out[1][1], 5);
        assert_eq!(out[4][1], 0x40 | 5);
        let mut back = vec![(out[0][0] & 0xe0) | (out[0][1] & 0x1f)];
        for p in &out {
            back.extend_from_slice(&p[2..]);
        }
        assert_eq!(back, nal.to_vec());
    }

    #[test]
    fn parameter_sets_aggregate() {
        let sps = Bytes::from_static(&[0x67, 0x64, 0, 0x1f]);
        let pps = Bytes::from_static(&[0x68, 0xeb]);
        let mut out = Vec::new();
        parameter_set_payloads(&[&sps, &pps], MAX_PAYLOAD, &mut out);
        assert_eq!(
            out,
            vec![Bytes::from_static(&[
                0x78, 0, 4, 0x67, 0x64, 0, 0x1f, 0, 2, 0x68, 0xeb
            ])]
        );
        // Too large to aggregate: sent one by one.
        let mut out = Vec::new();
        parameter_set_payloads(&[&sps, &pps], 8, &mut out);
        assert_eq!(out, vec![sps, pps]);
    }
}
