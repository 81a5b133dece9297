//! H.264 as FLV carries it: the `AVCDecoderConfigurationRecord` (avcC) with the parameter
//! sets, and length-prefixed NAL units; plus what SDP needs from the SPS.
//!
//! Owns bitstream framing only; RTP packetization is `packetizer`'s.

use super::error::MediaError;
use bytes::Bytes;

/// NAL unit type: coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type: coded slice of an IDR picture.
pub const NAL_IDR: u8 = 5;
/// NAL unit type: sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type: picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type: access unit delimiter (dropped: RTP marks frames itself).
pub const NAL_AUD: u8 = 9;
/// NAL unit type: filler data (dropped).
pub const NAL_FILLER: u8 = 12;

/// Parameter sets in one record, at most (the format allows 31 SPS and 255 PPS; encoders
/// send one of each).
const MAX_PARAMETER_SETS: usize = 16;

/// The type of a NAL unit.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Reads Exp-Golomb and fixed-width fields from the start of a NAL unit's payload, skipping
/// emulation-prevention bytes.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> BitReader<'a> {
    /// A reader over `rbsp_with_emulation` (the NAL unit after its header byte).
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn current(&mut self) -> Option<u8> {
        if self.bit == 0 {
            // 0x000003: the 03 is an emulation-prevention byte, not payload.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        self.data.get(self.byte).copied()
    }

    /// One bit.
    pub(crate) fn bit(&mut self) -> Option<u32> {
        let b = self.current()?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Some(u32::from(v))
    }

    /// `n` bits (n <= 32).
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned Exp-Golomb.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }
}

impl BitReader<'_> {
    /// Signed Exp-Golomb.
    pub(crate) fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Some(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// The SPS fields a slice header's layout depends on (ISO 14496-10 §7.3.2.1.1).
#[derive(Debug, Clone, Copy)]
struct SpsInfo {
    separate_colour_plane: bool,
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    frame_mbs_only: bool,
}

impl SpsInfo {
    fn parse(sps: &[u8]) -> Option<Self> {
        let mut r = BitReader::new(sps.get(1..)?);
        let profile = r.bits(8)?;
        r.bits(16)?; // constraint flags, level
        r.ue()?; // seq_parameter_set_id
        let mut separate_colour_plane = false;
        if matches!(
            profile,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            let chroma_format = r.ue()?;
            if chroma_format == 3 {
                separate_colour_plane = r.bit()? == 1;
            }
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.bit()?; // qpprime_y_zero_transform_bypass_flag
            if r.bit()? == 1 {
                let lists = if chroma_format == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? == 1 {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let log2_max_frame_num = r.ue()? + 4;
        let poc_type = r.ue()?;
        let (mut log2_max_poc_lsb, mut delta_pic_order_always_zero) = (0, false);
        match poc_type {
            0 => log2_max_poc_lsb = r.ue()? + 4,
            1 => {
                delta_pic_order_always_zero = r.bit()? == 1;
                r.se()?;
                r.se()?;
                let cycle = r.ue()?;
                if cycle > 255 {
                    return None;
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        r.ue()?; // pic_width_in_mbs_minus1
        r.ue()?; // pic_height_in_map_units_minus1
        let frame_mbs_only = r.bit()? == 1;
        if log2_max_frame_num > 16 || log2_max_poc_lsb > 16 {
            return None;
        }
        Some(Self {
            separate_colour_plane,
            log2_max_frame_num,
            poc_type,
            log2_max_poc_lsb,
            delta_pic_order_always_zero,
            frame_mbs_only,
        })
    }
}

/// The PPS fields a slice header's layout depends on (ISO 14496-10 §7.3.2.2).
#[derive(Debug, Clone, Copy)]
struct PpsInfo {
    bottom_field_pic_order_in_frame_present: bool,
    num_ref_idx_l0_default: u32,
    redundant_pic_cnt_present: bool,
}

impl PpsInfo {
    fn parse(pps: &[u8]) -> Option<Self> {
        let mut r = BitReader::new(pps.get(1..)?);
        r.ue()?; // pic_parameter_set_id
        r.ue()?; // seq_parameter_set_id
        r.bit()?; // entropy_coding_mode_flag
        let bottom_field_pic_order_in_frame_present = r.bit()? == 1;
        if r.ue()? != 0 {
            // Slice groups (FMO): Baseline-only, never from RTMP encoders.
            return None;
        }
        let num_ref_idx_l0_default = r.ue()? + 1;
        r.ue()?; // num_ref_idx_l1_default_active_minus1
        r.bit()?; // weighted_pred_flag
        r.bits(2)?; // weighted_bipred_idc
        r.se()?; // pic_init_qp_minus26
        r.se()?; // pic_init_qs_minus26
        r.se()?; // chroma_qp_index_offset
        r.bit()?; // deblocking_filter_control_present_flag
        r.bit()?; // constrained_intra_pred_flag
        let redundant_pic_cnt_present = r.bit()? == 1;
        Some(Self {
            bottom_field_pic_order_in_frame_present,
            num_ref_idx_l0_default,
            redundant_pic_cnt_present,
        })
    }
}

/// Active list-0 references of a P slice (§7.3.3), `None` for other slices or on error.
fn p_slice_refs(nal: &[u8], sps: &SpsInfo, pps: &PpsInfo) -> Option<u32> {
    let idr = nal_type(nal) == NAL_IDR;
    let mut r = BitReader::new(nal.get(1..)?);
    r.ue()?; // first_mb_in_slice
    if !matches!(r.ue()?, 0 | 5) {
        return None;
    }
    r.ue()?; // pic_parameter_set_id
    if sps.separate_colour_plane {
        r.bits(2)?;
    }
    r.bits(sps.log2_max_frame_num)?;
    let mut field_pic = false;
    if !sps.frame_mbs_only {
        field_pic = r.bit()? == 1;
        if field_pic {
            r.bit()?;
        }
    }
    if idr {
        r.ue()?;
    }
    if sps.poc_type == 0 {
        r.bits(sps.log2_max_poc_lsb)?;
        if pps.bottom_field_pic_order_in_frame_present && !field_pic {
            r.se()?;
        }
    }
    if sps.poc_type == 1 && !sps.delta_pic_order_always_zero {
        r.se()?;
        if pps.bottom_field_pic_order_in_frame_present && !field_pic {
            r.se()?;
        }
    }
    if pps.redundant_pic_cnt_present {
        r.ue()?;
    }
    if r.bit()? == 1 {
        Some(r.ue()? + 1)
    } else {
        Some(pps.num_ref_idx_l0_default)
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Whether a slice NAL unit (type 1 or 5) is a B slice.
pub fn is_b_slice(nal: &[u8]) -> bool {
    let Some(payload) = nal.get(1..) else {
        return false;
    };
    let mut r = BitReader::new(payload);
    let _first_mb = r.ue();
    matches!(r.ue(), Some(1 | 6))
}

/// The decoder configuration from an AVC sequence header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    /// Sequence parameter sets.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
}

fn read_sets(
    data: &Bytes,
    pos: &mut usize,
    count: usize,
    want_type: u8,
) -> Result<Vec<Bytes>, MediaError> {
    if count > MAX_PARAMETER_SETS {
        return Err(MediaError::AvcConfig("too many parameter sets"));
    }
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        let len = data
            .get(*pos..*pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(MediaError::AvcConfig("truncated"))?;
        let start = *pos + 2;
        if start + len > data.len() || len == 0 {
            return Err(MediaError::AvcConfig("parameter set length"));
        }
        let set = data.slice(start..start + len);
        if nal_type(&set) != want_type {
            return Err(MediaError::AvcConfig("parameter set of the wrong type"));
        }
        sets.push(set);
        *pos = start + len;
    }
    Ok(sets)
}

impl AvcConfig {
    /// Parses an `AVCDecoderConfigurationRecord` (ISO 14496-15 §5.2.4.1).
    pub fn parse(data: &Bytes) -> Result<Self, MediaError> {
        let head = data.get(..6).ok_or(MediaError::AvcConfig("truncated"))?;
        if head[0] != 1 {
            return Err(MediaError::AvcConfig("configuration version is not 1"));
        }
        let length_size = usize::from(head[4] & 0x03) + 1;
        if length_size == 3 {
            return Err(MediaError::AvcConfig("3-byte NAL length"));
        }
        let mut pos = 6;
        let sps = read_sets(data, &mut pos, usize::from(head[5] & 0x1f), NAL_SPS)?;
        let pps_count = *data.get(pos).ok_or(MediaError::AvcConfig("truncated"))?;
        pos += 1;
        let pps = read_sets(data, &mut pos, usize::from(pps_count), NAL_PPS)?;
        if sps.is_empty() || pps.is_empty() {
            return Err(MediaError::AvcConfig("no SPS or no PPS"));
        }
        if sps[0].len() < 4 {
            return Err(MediaError::AvcConfig("SPS too short"));
        }
        Ok(Self {
            length_size,
            sps,
            pps,
        })
    }

    /// `profile-level-id` for SDP: profile_idc, constraint flags and level_idc of the SPS.
    pub fn profile_level_id(&self) -> String {
        // `parse` guarantees a first SPS of at least 4 bytes.
        let s = &self.sps[0];
        format!("{:02x}{:02x}{:02x}", s[1], s[2], s[3])
    }

    /// How many reference pictures a P slice may use, from its header; `None` when the
    /// parameter sets or the header cannot be read.
    pub fn p_slice_refs(&self, nal: &[u8]) -> Option<u32> {
        let sps = SpsInfo::parse(&self.sps[0])?;
        let pps = PpsInfo::parse(self.pps.first()?)?;
        p_slice_refs(nal, &sps, &pps)
    }

    /// The `a=fmtp` parameters viewers are offered.
    ///
    /// The profile is announced as Constrained Baseline at the stream's own level, whatever the
    /// SPS says. Browsers offer only the H.264 profiles they can also encode (Chromium 156
    /// offers 42001f, 42e01f, 4d001f and f4001f, no High), so an honest `64…` would match no
    /// viewer's offer; yet every browser's decoder takes the High and Main streams RTMP
    /// encoders send (OBS's own WHIP output labels its x264 High stream 42e01f the same way).
    /// `level-asymmetry-allowed=1` lets the stream's level exceed what the viewer offered.
    pub fn fmtp(&self) -> String {
        // `parse` guarantees a first SPS of at least 4 bytes.
        let level = self.sps[0][3];
        format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e0{level:02x}")
    }
}

/// Splits a frame of length-prefixed NAL units (zero-copy slices of `data`).
pub fn nal_units(data: &Bytes, length_size: usize, out: &mut Vec<Bytes>) -> Result<(), MediaError> {
    let mut pos = 0;
    while pos < data.len() {
        let prefix = data
            .get(pos..pos + length_size)
            .ok_or(MediaError::NalLength)?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let start = pos + length_size;
        let end = start.checked_add(len).ok_or(MediaError::NalLength)?;
        if end > data.len() {
            return Err(MediaError::NalLength);
        }
        if len > 0 {
            out.push(data.slice(start..end));
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An avcC for High profile level 3.1 with one SPS and one PPS.
    pub(crate) fn avcc() -> Bytes {
        avcc_of(
            &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9],
            &[0x68, 0xeb, 0xe3, 0xcb],
        )
    }

    /// An avcC (4-byte lengths) holding one SPS and one PPS; profile and level come from the SPS.
    pub(crate) fn avcc_of(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        Bytes::from(v)
    }

    #[test]
    fn parses_avcc_and_derives_fmtp() {
        let c = AvcConfig::parse(&avcc()).unwrap();
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps.len(), 1);
        assert_eq!(c.pps.len(), 1);
        assert_eq!(c.profile_level_id(), "64001f");
        assert_eq!(
            c.fmtp(),
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        );
    }

    #[test]
    fn refuses_bad_avcc() {
        let good = avcc();
        for n in 0..good.len() {
            assert!(AvcConfig::parse(&good.slice(..n)).is_err(), "prefix {n}");
        }
        let mut v = good.to_vec();
        v[0] = 2;
        assert!(AvcConfig::parse(&Bytes::from(v)).is_err());
        let mut v = good.to_vec();
        v[8] = 0x68; // SPS slot holding a PPS
        assert!(AvcConfig::parse(&Bytes::from(v)).is_err());
    }

    #[test]
    fn splits_length_prefixed_nal_units() {
        let data = Bytes::from_static(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x06]);
        let mut out = Vec::new();
        nal_units(&data, 4, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Bytes::from_static(&[0x65, 1]), Bytes::from_static(&[0x06])]
        );
        let bad = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
        assert!(nal_units(&bad, 4, &mut Vec::new()).is_err());
        let bad = Bytes::from_static(&[0, 0]);
        assert!(nal_units(&bad, 4, &mut Vec::new()).is_err());
    }
}
