//! VP8 from RTP (RFC 7741) to whole frames, and a keyframe's picture size.
//!
//! Sans-IO: packets in, frames out. A frame starts at a packet with the S bit and partition
//! index 0 and ends at the marker bit; a sequence gap drops frames until the next keyframe.

use bytes::{Bytes, BytesMut};

/// Largest frame kept; a larger one is dropped rather than buffered without bound.
const MAX_FRAME: usize = 8 << 20;

/// One VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// An intra frame.
    pub keyframe: bool,
    /// The frame as a decoder takes it.
    pub data: Bytes,
}

/// Reassembles frames of one VP8 RTP stream.
#[derive(Debug, Default)]
pub struct Depacketizer {
    building: Option<(u32, BytesMut)>,
    next_seq: Option<u16>,
    broken: bool,
}

/// The payload after the VP8 payload descriptor, and whether it starts a frame.
fn descriptor(payload: &[u8]) -> Option<(bool, &[u8])> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let m = *payload.get(at)? & 0x80 != 0;
            at += if m { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    Some((start, payload.get(at..)?))
}

impl Depacketizer {
    /// Takes one RTP packet; returns the frame it completed, if any.
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<Frame> {
        let lost = self.next_seq.is_some_and(|s| s != sequence);
        self.next_seq = Some(sequence.wrapping_add(1));
        if lost {
            self.building = None;
            self.broken = true;
        }
        let (start, data) = descriptor(payload)?;
        if start {
            self.building = Some((timestamp, BytesMut::with_capacity(data.len() * 4)));
        }
        let (ts, frame) = self.building.as_mut()?;
        if *ts != timestamp || frame.len() + data.len() > MAX_FRAME {
            self.building = None;
            self.broken = true;
            return None;
        }
        frame.extend_from_slice(data);
        if !marker {
            return None;
        }
        let (ts, frame) = self.building.take()?;
        // The frame tag's first bit is 0 for an intra frame.
        let keyframe = frame.first().is_some_and(|b| b & 0x01 == 0);
        if self.broken {
            if !keyframe {
                return None;
            }
            self.broken = false;
        }
        Some(Frame {
            rtp_timestamp: ts,
            keyframe,
            data: frame.freeze(),
        })
    }
}

/// The picture size of a VP8 keyframe (RFC 6386 section 9.1), scaling bits dropped.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];

    #[test]
    fn reassembles_across_packets_and_reads_the_size() {
        let mut d = Depacketizer::default();
        // Extended descriptor with a 15-bit picture id, start of partition 0.
        let mut p1 = vec![0x90, 0x80, 0x81, 0x23];
        p1.extend_from_slice(&KEY[..5]);
        let mut p2 = vec![0x80, 0x80, 0x81, 0x23];
        p2.extend_from_slice(&KEY[5..]);
        assert!(d.push(1, 9000, false, &p1).is_none());
        let f = d.push(2, 9000, true, &p2).unwrap();
        assert!(f.keyframe);
        assert_eq!(&f.data[..], &KEY);
        assert_eq!(keyframe_size(&f.data), Some((640, 480)));
    }

    #[test]
    fn a_loss_waits_for_the_next_keyframe() {
        let mut d = Depacketizer::default();
        assert!(d.push(1, 0, true, &[0x10, 0x01, 0, 0]).is_some());
        // Sequence 2 lost; 3 is a whole delta frame: dropped.
        assert!(d.push(3, 3000, true, &[0x10, 0x01, 0, 0]).is_none());
        let key = [&[0x10][..], &KEY[..]].concat();
        assert!(d.push(4, 6000, true, &key).is_some_and(|f| f.keyframe));
        assert!(d.push(5, 9000, true, &[0x10, 0x01, 0, 0]).is_some());
    }
}
