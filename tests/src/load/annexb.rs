//! H.264 Annex-B byte streams: split into NAL units, and group the NAL units into access units
//! (one per picture), which is what the publisher sends per frame.

/// NAL unit types this module tells apart.
pub mod nal {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// The type of a NAL unit (its first byte's low five bits).
pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |b| b & 0x1f)
}

/// The NAL units of an Annex-B stream, without start codes (and without the zero bytes that
/// precede a 4-byte start code).
pub fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        // The next unit's start code begins 3 bytes before its payload.
        let end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        let mut unit = &data[start..end];
        while let [rest @ .., 0] = unit {
            unit = rest;
        }
        if !unit.is_empty() {
            units.push(unit);
        }
    }
    units
}

fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// Whether a slice is the first of its picture: `first_mb_in_slice` (the first ue(v) after
/// the header byte) is 0, which Exp-Golomb codes as a single `1` bit.
fn first_slice_of_picture(unit: &[u8]) -> bool {
    unit.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// One picture's NAL units, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit<'a> {
    pub units: Vec<&'a [u8]>,
}

impl AccessUnit<'_> {
    /// Whether the picture is an IDR (a decoder can start here).
    pub fn is_keyframe(&self) -> bool {
        self.units.iter().any(|u| nal_type(u) == nal::IDR)
    }

    /// The access unit as Annex-B bytes (4-byte start codes), the form `H264Payloader` takes.
    pub fn to_annexb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.units.iter().map(|u| u.len() + 4).sum());
        for unit in &self.units {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(unit);
        }
        out
    }
}

/// Groups NAL units into access units (H.264 7.4.1.2.3, simplified): a new one starts at an
/// access unit delimiter, at SEI/SPS/PPS after the picture's slices, or at a slice that is the
/// first of a new picture.
pub fn access_units(data: &[u8]) -> Vec<AccessUnit<'_>> {
    let mut out = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut has_slice = false;
    for unit in nal_units(data) {
        let t = nal_type(unit);
        let starts_new = match t {
            nal::AUD => true,
            nal::SEI | nal::SPS | nal::PPS | 14..=18 => has_slice,
            t if is_vcl(t) => has_slice && first_slice_of_picture(unit),
            _ => false,
        };
        if starts_new && !current.is_empty() {
            out.push(AccessUnit {
                units: std::mem::take(&mut current),
            });
            has_slice = false;
        }
        has_slice |= is_vcl(t);
        current.push(unit);
    }
    if !current.is_empty() {
        out.push(AccessUnit { units: current });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(units: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, u) in units.iter().enumerate() {
            // Mix 4- and 3-byte start codes, as encoders do.
            if i % 2 == 0 {
                out.extend_from_slice(&[0, 0, 0, 1]);
            } else {
                out.extend_from_slice(&[0, 0, 1]);
            }
            out.extend_from_slice(u);
        }
        out
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const SEI: &[u8] = &[0x06, 0x05, 0x01];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];
    const P1: &[u8] = &[0x41, 0x9a, 0x02];
    const P2: &[u8] = &[0x41, 0x9a, 0x04];
    // A second slice of the same picture: first_mb_in_slice != 0 (leading bit 0).
    const P2_SLICE_B: &[u8] = &[0x41, 0x1a, 0x04];

    #[test]
    fn splits_nal_units_with_both_start_code_lengths() {
        let data = stream(&[SPS, PPS, IDR]);
        assert_eq!(nal_units(&data), vec![SPS, PPS, IDR]);
        assert!(nal_units(&[]).is_empty());
        assert!(nal_units(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn groups_parameter_sets_with_their_keyframe() {
        let data = stream(&[SPS, PPS, SEI, IDR, P1, P2, P2_SLICE_B, SPS, PPS, IDR]);
        let aus = access_units(&data);
        let types: Vec<Vec<u8>> = aus
            .iter()
            .map(|au| au.units.iter().map(|u| nal_type(u)).collect())
            .collect();
        assert_eq!(
            types,
            vec![vec![7, 8, 6, 5], vec![1], vec![1, 1], vec![7, 8, 5]]
        );
        let keys: Vec<bool> = aus.iter().map(AccessUnit::is_keyframe).collect();
        assert_eq!(keys, vec![true, false, false, true]);
    }

    #[test]
    fn delimiters_start_access_units() {
        let aud: &[u8] = &[0x09, 0xf0];
        let data = stream(&[aud, P1, aud, P2]);
        assert_eq!(access_units(&data).len(), 2);
    }

    #[test]
    fn to_annexb_round_trips() {
        let data = stream(&[SPS, PPS, IDR]);
        let aus = access_units(&data);
        let again = aus[0].to_annexb();
        assert_eq!(nal_units(&again), vec![SPS, PPS, IDR]);
        assert!(again.starts_with(&[0, 0, 0, 1, 0x67]));
    }
}
