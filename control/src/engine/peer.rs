//! One peer connection as a shard holds it: the sans-IO connection plus what it is for.

use super::delivery::ViewerDelivery;
use super::direct::DirectPath;
use super::rewrite::Rewriter;
use super::rtt::SmoothedRtt;
use super::setup::{PublisherTrack, ViewerTrack};
use crate::stream::TrackCounters;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// Engine-wide peer id (shards never reuse one).
pub(crate) type PeerId = u64;

/// A connection and its role.
pub(crate) struct Peer {
    pub pc: RTCPeerConnection,
    pub session: String,
    pub stream_name: String,
    pub stream: u64,
    pub local_ufrag: String,
    pub role: Role,
    pub next_timeout: Option<Instant>,
    /// Index of the shard socket the peer last spoke to: replies leave from it, so their
    /// source address is the one the peer reached.
    pub socket: Option<usize>,
    pub created: Instant,
    pub connected: bool,
    /// Where its last datagram came from.
    pub remote: Option<SocketAddr>,
}

/// What a peer does.
pub(crate) enum Role {
    Publisher(PublisherRole),
    Viewer(ViewerRole),
}

/// A publisher's state.
pub(crate) struct PublisherRole {
    pub epoch: u32,
    pub tracks: Vec<PublisherTrack>,
    pub counters: Vec<Arc<TrackCounters>>,
    pub last_media: Arc<AtomicU64>,
    /// The one SSRC forwarded per kind (`[audio, video]`); others (simulcast layers, RTX) are
    /// not forwarded.
    pub ssrcs: [Option<u32>; 2],
    /// The video receiver and its media SSRC, for keyframe requests.
    pub video_receiver: Option<(RTCRtpReceiverId, u32)>,
    pub last_keyframe_request: Option<Instant>,
    pub keyframe_request_pending: bool,
    /// Keyframe requests sent to it.
    pub keyframe_requests_sent: u64,
    /// ICE says disconnected (no consent check for 5 s); gone once its media stops too.
    pub ice_disconnected: bool,
}

/// A viewer's state.
pub(crate) struct ViewerRole {
    pub tracks: Vec<(ViewerTrack, Rewriter)>,
    /// Set once the first video packet went out, for the join-time histogram.
    pub first_video_sent: bool,
    /// Pause and quality cap.
    pub delivery: ViewerDelivery,
    /// Writes the connection refused.
    pub write_drops: u64,
    /// Its NACK messages and keyframe requests (PLI/FIR); rtc 0.21's statistics leave both 0.
    pub nacks: u64,
    pub keyframe_requests: u64,
    /// From its receiver reports.
    pub rtt: SmoothedRtt,
    /// Sealing and sending past rtc once its key is proven (none: always through rtc).
    pub direct: Option<Box<DirectPath>>,
}

impl ViewerRole {
    pub(crate) fn new(tracks: Vec<ViewerTrack>, direct: Option<Box<DirectPath>>) -> Self {
        Self {
            tracks: tracks
                .into_iter()
                .map(|t| {
                    let rw = Rewriter::new(t.kind, t.codec.clock_rate());
                    (t, rw)
                })
                .collect(),
            first_video_sent: false,
            delivery: ViewerDelivery::default(),
            write_drops: 0,
            nacks: 0,
            keyframe_requests: 0,
            rtt: SmoothedRtt::default(),
            direct,
        }
    }
}
