//! The unit of fan-out.

use rtc::rtp;
use serde::Serialize;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Opus.
    Audio,
    /// H.264, VP8, VP9 or AV1.
    Video,
}

impl TrackKind {
    /// Index into per-stream track arrays (`[audio, video]`).
    pub fn index(self) -> usize {
        match self {
            TrackKind::Audio => 0,
            TrackKind::Video => 1,
        }
    }
}

/// One publisher packet, parsed once and shared (behind an `Arc`) with every shard and viewer.
/// The payload is `Bytes`, so per-viewer clones copy only the small header.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    /// Which stream (the registry's numeric id).
    pub stream: u64,
    /// Which of the stream's tracks.
    pub kind: TrackKind,
    /// The publisher generation: a new publisher on the same stream bumps it, and viewers
    /// re-base their sequence numbers and timestamps so their decoders continue.
    pub epoch: u32,
    /// First packet of a keyframe (video only): where a viewer may start decoding.
    pub keyframe_start: bool,
    /// The packet, header extensions stripped (ids are per connection).
    pub rtp: rtp::Packet,
}
