//! The streams live on this node: their tracks, publisher, viewers and counters.
//!
//! This registry is the signaling path's view (REST, WHIP/WHEP decisions); the media path never
//! takes its lock: shards keep their own per-stream state and only touch the atomic counters.

mod registry;
mod status;
mod tap;

pub use registry::{
    KeyframeRoute, NewPublisher, PublisherClaim, StreamRef, Streams, TrackCounters, TrackInfo,
};
pub use status::{StreamStatus, TrackStatus};
pub use tap::{Tap, Taps};

/// Ingest protocols, as shown in the API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestProtocol {
    /// WebRTC-HTTP ingest.
    Whip,
    /// RTMP (OBS, ffmpeg).
    Rtmp,
    /// FTL (Glimesh/Mixer's protocol).
    Ftl,
    /// Pulled from another edge over WHEP.
    Relay,
    /// WebRTC negotiated over gRPC `WebRtcSignaling.Signal`.
    Signaling,
}

impl IngestProtocol {
    /// Lower-case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestProtocol::Whip => "whip",
            IngestProtocol::Rtmp => "rtmp",
            IngestProtocol::Ftl => "ftl",
            IngestProtocol::Relay => "relay",
            IngestProtocol::Signaling => "signaling",
        }
    }
}

/// Whether `name` can be a stream name: it appears in URLs and logs, so keep it plain.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
