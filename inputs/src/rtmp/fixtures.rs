//! Test-only: the FLV files in `testdata/` as tags.

use bytes::Bytes;

/// One FLV tag: type (8 audio, 9 video, 18 data), timestamp in ms, body.
pub type Tag = (u8, u32, Bytes);

pub const TONE_44K_STEREO: &[u8] = include_bytes!("testdata/tone-44k-stereo.flv");
pub const TONE_48K_MONO: &[u8] = include_bytes!("testdata/tone-48k-mono.flv");
pub const AV_BFRAMES: &[u8] = include_bytes!("testdata/av-bframes.flv");

/// Every tag of an FLV file (header, then tags each followed by a back pointer).
pub fn tags(file: &[u8]) -> Vec<Tag> {
    assert_eq!(&file[..3], b"FLV");
    let mut pos = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize + 4;
    let mut out = Vec::new();
    while pos + 11 <= file.len() {
        let h = &file[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = Bytes::copy_from_slice(&file[pos + 11..pos + 11 + size]);
        out.push((h[0], ts, body));
        pos += 11 + size + 4;
    }
    out
}
