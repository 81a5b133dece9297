//! What the REST API shows of a stream.

use super::IngestProtocol;
use crate::media::{Codec, TrackKind};
use serde::Serialize;

/// One live (or reconnecting) stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Public name.
    pub name: String,
    /// How it is ingested.
    pub protocol: IngestProtocol,
    /// `live` with a publisher, `reconnecting` while viewers wait for it to come back.
    pub state: &'static str,
    /// Its tracks.
    pub tracks: Vec<TrackStatus>,
    /// Viewers connected now.
    pub viewers: usize,
    /// Seconds since the stream first went live.
    pub uptime_secs: u64,
    /// How many times a publisher (re)started this stream.
    pub publishes: u32,
    /// What the operator should know about the publisher (e.g. B-frames dropped).
    pub notices: Vec<String>,
}

/// One track of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct TrackStatus {
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec name.
    pub codec: Codec,
    /// The negotiated `a=fmtp` parameters.
    pub fmtp: String,
    /// Ingest bitrate over the last measurement window.
    pub bitrate_bps: u64,
    /// Packets received since the stream started.
    pub packets: u64,
    /// Payload bytes received since the stream started.
    pub bytes: u64,
    /// NACK feedback viewers sent about it.
    pub nacks: u64,
    /// Keyframe requests (PLI) sent to its publisher.
    pub keyframe_requests: u64,
    /// When its last keyframe started (Unix milliseconds).
    pub last_keyframe_unix_ms: Option<u64>,
}
