//! Test-only: the FLV files in `testdata/` as tags.

use super::flv::{FileTag, file_tags};

pub const TONE_44K_STEREO: &[u8] = include_bytes!("testdata/tone-44k-stereo.flv");
pub const TONE_48K_MONO: &[u8] = include_bytes!("testdata/tone-48k-mono.flv");
pub const AV_BFRAMES: &[u8] = include_bytes!("testdata/av-bframes.flv");

/// Every tag of an FLV file.
pub fn tags(file: &[u8]) -> Vec<FileTag> {
    file_tags(file).expect("a whole FLV fixture")
}
