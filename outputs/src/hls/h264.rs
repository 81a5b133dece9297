//! H.264 from RTP (RFC 6184: single NAL unit, STAP-A, FU-A) to access units as MP4 stores them:
//! 4-byte length-prefixed NAL units, the parameter sets kept aside for the `avcC`.
//!
//! Sans-IO: packets in, [`AccessUnit`]s out. A sequence gap inside a picture drops that picture
//! and everything up to the next IDR picture (a decoder cannot use the pictures in between).

use bytes::{BufMut, Bytes, BytesMut};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Largest access unit kept (a 4K intra picture at a high bitrate fits); a larger one is
/// dropped rather than buffered without bound.
const MAX_ACCESS_UNIT: usize = 8 << 20;

/// One coded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// Contains an IDR slice.
    pub keyframe: bool,
    /// Length-prefixed NAL units (parameter sets, delimiters and filler left out).
    pub data: Bytes,
}

/// Reassembles pictures from one H.264 RTP stream.
#[derive(Debug, Default)]
pub struct Depacketizer {
    current: Option<Building>,
    next_seq: Option<u16>,
    /// A packet was lost: pictures are dropped until the next IDR.
    broken: bool,
    fu: Option<BytesMut>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

#[derive(Debug)]
struct Building {
    timestamp: u32,
    data: BytesMut,
    keyframe: bool,
    damaged: bool,
}

impl Depacketizer {
    /// The latest sequence and picture parameter sets seen.
    pub fn parameter_sets(&self) -> Option<(&Bytes, &Bytes)> {
        Some((self.sps.as_ref()?, self.pps.as_ref()?))
    }

    /// Takes one RTP packet; returns the picture it completed, if any (on its marker bit, or
    /// the previous one when this packet starts a new timestamp).
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<AccessUnit> {
        let mut done = None;
        let lost = self.next_seq.is_some_and(|s| s != sequence);
        self.next_seq = Some(sequence.wrapping_add(1));
        if self
            .current
            .as_ref()
            .is_some_and(|b| b.timestamp != timestamp)
        {
            done = self.finish();
        }
        if lost {
            self.fu = None;
            self.broken = true;
            if let Some(b) = &mut self.current {
                b.damaged = true;
            }
        }
        let building = self.current.get_or_insert_with(|| Building {
            timestamp,
            data: BytesMut::new(),
            keyframe: false,
            damaged: false,
        });
        let Some(&header) = payload.first() else {
            return done;
        };
        match header & 0x1f {
            1..=23 => Self::add_nal(building, &mut self.sps, &mut self.pps, payload),
            STAP_A => {
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(nal) = rest.get(2..2 + size) else {
                        building.damaged = true;
                        break;
                    };
                    Self::add_nal(building, &mut self.sps, &mut self.pps, nal);
                    rest = &rest[2 + size..];
                }
            }
            FU_A if payload.len() >= 2 => {
                let fu = payload[1];
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    let mut nal = BytesMut::with_capacity(payload.len() * 4);
                    nal.put_u8((header & 0xe0) | (fu & 0x1f));
                    self.fu = Some(nal);
                }
                match &mut self.fu {
                    Some(nal) => {
                        nal.extend_from_slice(&payload[2..]);
                        if nal.len() > MAX_ACCESS_UNIT {
                            self.fu = None;
                            building.damaged = true;
                        } else if end {
                            let nal = self.fu.take().unwrap_or_default();
                            Self::add_nal(building, &mut self.sps, &mut self.pps, &nal);
                        }
                    }
                    // A middle fragment without its start: the NAL unit is lost.
                    None => building.damaged = true,
                }
            }
            // STAP-B, MTAP, FU-B and reserved types are not used in packetization-mode 1.
            _ => building.damaged = true,
        }
        if marker {
            let finished = self.finish();
            if done.is_none() {
                return finished;
            }
            // Two pictures completed by one packet cannot happen in order; keep the newer.
            return finished.or(done);
        }
        done
    }

    fn add_nal(b: &mut Building, sps: &mut Option<Bytes>, pps: &mut Option<Bytes>, nal: &[u8]) {
        let Some(&first) = nal.first() else { return };
        match first & 0x1f {
            NAL_SPS => *sps = Some(Bytes::copy_from_slice(nal)),
            NAL_PPS => *pps = Some(Bytes::copy_from_slice(nal)),
            NAL_AUD | NAL_FILLER => {}
            t => {
                if b.data.len() + nal.len() + 4 > MAX_ACCESS_UNIT {
                    b.damaged = true;
                    return;
                }
                if t == NAL_IDR {
                    b.keyframe = true;
                }
                b.data.put_u32(u32::try_from(nal.len()).unwrap_or(0));
                b.data.extend_from_slice(nal);
            }
        }
    }

    fn finish(&mut self) -> Option<AccessUnit> {
        let b = self.current.take()?;
        self.fu = None;
        if b.damaged {
            self.broken = true;
            return None;
        }
        if b.data.is_empty() {
            return None;
        }
        if self.broken {
            if !b.keyframe {
                return None;
            }
            self.broken = false;
        }
        Some(AccessUnit {
            rtp_timestamp: b.timestamp,
            keyframe: b.keyframe,
            data: b.data.freeze(),
        })
    }
}

/// Reads bits MSB first, skipping emulation-prevention bytes (`00 00 03`).
struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            let &b = self.data.get(self.byte)?;
            if self.zeros >= 2 && b == 3 {
                self.byte += 1;
                self.zeros = 0;
                return self.bit();
            }
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = *self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(u32::from(v))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let v = i32::try_from(k.div_ceil(2)).ok()?;
        Some(if k % 2 == 1 { v } else { -v })
    }
}

/// The picture size an SPS (NAL unit with its header byte) declares, cropping applied.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u16, u16)> {
    let mut r = BitReader::new(sps.get(1..)?);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // sps id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?;
        }
        r.ue()?;
        r.ue()?;
        r.bit()?;
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            for _ in 0..cycle.min(256) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?;
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?;
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's SPS for 640x480, High profile (`ffmpeg -c:v libx264 -preset veryfast`).
    const SPS_640X480: [u8; 25] = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x3d, 0xb0, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    /// x264's SPS for 1280x720, Constrained Baseline.
    const SPS_1280X720: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
    ];
    /// x264's SPS for 1920x1080 (coded as 1088 lines, 8 cropped).
    const SPS_1920X1080: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x28, 0xda, 0x01, 0xe0, 0x08, 0x9f, 0x97, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x2a,
    ];

    #[test]
    fn sps_sizes() {
        assert_eq!(sps_dimensions(&SPS_640X480), Some((640, 480)));
        assert_eq!(sps_dimensions(&SPS_1280X720), Some((1280, 720)));
        assert_eq!(sps_dimensions(&SPS_1920X1080), Some((1920, 1080)));
        assert_eq!(sps_dimensions(&[0x67]), None);
        assert_eq!(sps_dimensions(&[0x67, 0x64, 0, 0x1e, 0xff]), None);
    }

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![STAP_A | 0x60];
        for n in nals {
            p.extend_from_slice(&u16::try_from(n.len()).unwrap().to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    #[test]
    fn stap_a_and_fu_a_make_one_length_prefixed_keyframe() {
        let mut d = Depacketizer::default();
        assert!(
            d.push(1, 900, false, &stap(&[&[0x67, 1, 2], &[0x68, 3]]))
                .is_none()
        );
        let idr: Vec<u8> = std::iter::once(0x65).chain(0..100u8).collect();
        assert!(d.push(2, 900, false, &[0x7c, 0x85, 0, 1, 2]).is_none());
        let mut mid = vec![0x7c, 0x05];
        mid.extend_from_slice(&idr[4..50]);
        assert!(d.push(3, 900, false, &mid).is_none());
        let mut end = vec![0x7c, 0x45];
        end.extend_from_slice(&idr[50..]);
        let au = d.push(4, 900, true, &end).expect("picture on the marker");
        assert!(au.keyframe);
        assert_eq!(au.rtp_timestamp, 900);
        let mut expected = (idr.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&idr);
        assert_eq!(au.data.as_ref(), expected.as_slice());
        let (sps, pps) = d.parameter_sets().unwrap();
        assert_eq!(
            (sps.as_ref(), pps.as_ref()),
            (&[0x67, 1, 2][..], &[0x68, 3][..])
        );
        // A single NAL unit picture, ended by the next timestamp rather than a marker.
        assert!(d.push(5, 3900, false, &[0x41, 9, 9]).is_none());
        let au = d.push(6, 6900, true, &[0x41, 8]).unwrap();
        assert_eq!(au.rtp_timestamp, 6900);
    }

    #[test]
    fn a_lost_fragment_drops_pictures_until_the_next_idr() {
        let mut d = Depacketizer::default();
        assert!(d.push(10, 0, true, &[0x65, 1]).unwrap().keyframe);
        // FU-A start, then seq 13 instead of 12: the picture is damaged.
        assert!(d.push(11, 3000, false, &[0x7c, 0x81, 1]).is_none());
        assert!(d.push(13, 3000, true, &[0x7c, 0x41, 2]).is_none());
        // An intact P picture still waits for an IDR.
        assert!(d.push(14, 6000, true, &[0x41, 1]).is_none());
        assert!(d.push(15, 9000, true, &[0x65, 2]).unwrap().keyframe);
        assert!(d.push(16, 12000, true, &[0x41, 3]).is_some());
    }

    #[test]
    fn garbage_is_dropped_not_panicked_on() {
        let mut d = Depacketizer::default();
        for (i, p) in [
            &[][..],
            &[0x18, 0xff],
            &[0x1c],
            &[0x1c, 0x40],
            &[0x1f, 0, 0],
        ]
        .iter()
        .enumerate()
        {
            let _ = d.push(i as u16, 0, true, p);
        }
        assert!(d.push(100, 10, true, &[0x65, 1]).is_some());
    }
}
