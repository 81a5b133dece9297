//! The unit of fan-out.

use rtc::rtp;
use serde::Serialize;
use std::time::Instant;

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
    /// When the node received it from the publisher: a shard never sends a packet older than
    /// the configured bound (`[viewers] max_delay_ms`), however far behind it has fallen.
    pub received: Instant,
    /// Who gets it, and its decode time when that differs from its presentation time.
    pub delivery: Delivery,
}

/// What an input knows about a packet beyond its RTP header. WHIP publishers and every input
/// without reordering leave it at the default: for everyone, decoded when presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Who gets the packet.
    pub audience: Audience,
    /// How long after its decode time the picture is presented, in RTP clock ticks (positive
    /// for pictures decoded before B-frames that are shown first). The RTP timestamp is the
    /// presentation time, as RTP defines it; the decode time is `timestamp - offset`.
    pub composition_offset: i32,
}

/// Who gets a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Audience {
    /// WebRTC viewers (through the shards) and taps.
    #[default]
    Everyone,
    /// Taps only: an H.264 B-frame, which browsers' WebRTC decoders cannot take (they do not
    /// reorder) but a muxer for MSE (LL-HLS) keeps. Such packets are numbered in an RTP
    /// sequence of their own, so the viewers' sequence has no gap where they are left out.
    Taps,
}

impl MediaPacket {
    /// The same packet with a payload of its own, for one shard: the shards then share no
    /// reference count (see the engine's shard).
    pub fn copy_for_shard(&self) -> Self {
        let mut rtp = self.rtp.clone();
        rtp.payload = bytes::Bytes::copy_from_slice(&self.rtp.payload);
        Self { rtp, ..*self }
    }
}
