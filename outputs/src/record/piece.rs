//! What the muxers hand the disk writer, and the interface both containers share.

use bytes::Bytes;
use std::time::Duration;

/// One thing to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Start a new file with this header (an fMP4 init segment, or the Matroska header and
    /// tracks); its media starts `start` after the recording's zero.
    Start {
        /// The file's first bytes.
        header: Vec<u8>,
        /// `mp4` or `webm`.
        extension: &'static str,
        /// Where the file's media begins on the recording's timeline.
        start: Duration,
    },
    /// One fragment (`moof` + `mdat`, or one Matroska cluster), appended with one write so
    /// that a crash leaves the file whole up to the fragment before.
    Fragment {
        /// The bytes.
        data: Vec<u8>,
        /// Where the fragment's media ends on the recording's timeline.
        end: Duration,
    },
}

/// A container muxer: timed frames in, [`Piece`]s out. Sans-IO.
pub trait Muxer: Send {
    /// A video frame at `ticks` (90 kHz, since the recording's zero).
    fn push_video(&mut self, ticks: u64, keyframe: bool, frame: Bytes, out: &mut Vec<Piece>);
    /// An Opus frame at `ticks` (48 kHz, since the recording's zero).
    fn push_audio(&mut self, ticks: u64, frame: Bytes, out: &mut Vec<Piece>);
    /// The recording ends: whatever is held goes out as a last fragment.
    fn finish(&mut self, out: &mut Vec<Piece>);
}

/// 90 kHz video ticks.
pub const VIDEO_HZ: u64 = 90_000;
/// 48 kHz Opus ticks.
pub const AUDIO_HZ: u64 = 48_000;

/// `ticks` of a `hz` clock as a duration.
pub fn ticks(ticks: u64, hz: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(hz.max(1))) as u64)
}
