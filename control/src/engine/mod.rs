//! The WebRTC engine: answers WHIP and WHEP offers and carries media between peers.
//!
//! Peer connections are `rtc` sans-IO state machines held by [shards](shard): each shard is one
//! task that owns a UDP socket per local address on its own port and every peer on them, so the
//! node listens on `udp_port .. udp_port + shards` and nothing else. The server is ICE-lite
//! with host candidates. A publisher's packet is parsed once into an `Arc<MediaPacket>` and
//! handed to every shard once; each shard writes it to its own viewers, rewriting SSRC, payload
//! type, sequence numbers and timestamps per viewer, and sealing and sending it itself once the
//! viewer's SRTP key is proven (`direct.rs`, with the keys from `srtp_keys.rs`).
//!
//! This module owns sessions (the WHIP/WHEP resources) and their lifecycle; it owns no HTTP.

mod delivery;
mod demux;
mod direct;
mod feedback;
mod fragment;
mod ingest;
mod metrics;
mod negotiate;
mod offer;
mod peer;
mod pending;
mod resend_gate;
mod restart;
mod retransmit;
mod rewrite;
mod rtt;
mod saturation;
mod send;
mod session;
mod setup;
mod shard;
mod sockets;
mod srtp_keys;
mod stats;
mod tasks;
mod trickle;

use crate::cluster::{NodeLimits, Upstream};
use crate::config::{ViewerConfig, WebRtcConfig};
use crate::error::{Error, Result};
use crate::service::Service;
use crate::stream::Streams;
use metrics::EngineMetrics;
use pending::{PendingRefusal, PendingSessions};
use saturation::ShardLoad;
use shard::{Command, ShardSettings};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tasks::{housekeeping, run_shard};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Datagrams a shard may have waiting before its socket readers drop new ones.
const DATAGRAM_QUEUE: usize = 8192;

pub use delivery::{Delivery, SessionStats};
pub use ingest::Ingest;
use session::SessionEntry;
pub use session::{
    PatchOutcome, SessionAnswer, SessionInfo, SessionKind, SessionState, WatchCredentials,
};
pub use sockets::local_ipv4_addresses;
pub use trickle::MAX_FRAGMENT_BYTES;

/// Entry points for the fuzz targets in `fuzz/`: the parsers fed by the network, without the
/// sockets. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::fragment::parse_fragment as parse;
    use super::{offer, setup};
    use std::time::Instant;

    /// Parses `sdp` as an offer and answers it as a publisher and as a viewer would be.
    pub fn answer_offers(sdp: &str) {
        let candidates = ["127.0.0.1:9".parse().expect("a literal socket address")];
        let Ok(parsed) = offer::parse(sdp) else {
            return;
        };
        if let Ok((_, tracks)) =
            setup::publisher(&parsed, sdp.to_owned(), &[], &candidates, Instant::now())
        {
            let stream = crate::stream::StreamRef {
                id: 1,
                name: "fuzz".into(),
                tracks: tracks.into_iter().map(|t| t.info).collect(),
                publisher_shard: None,
                viewers: 0,
            };
            let _ = setup::viewer(
                &parsed,
                sdp.to_owned(),
                &stream,
                &candidates,
                None,
                Instant::now(),
            );
        }
    }

    /// Parses a trickle-ICE fragment.
    pub fn parse_fragment(fragment: &str) {
        let _ = parse(fragment);
    }
}

/// State the shards share with the signaling side.
pub(crate) struct Shared {
    streams: Arc<Streams>,
    media: Vec<mpsc::Sender<Arc<crate::media::MediaPacket>>>,
    commands: Vec<mpsc::UnboundedSender<Command>>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    metrics: EngineMetrics,
    /// Each shard's load, as the shard last measured it (`saturation.rs`).
    loads: Vec<ShardLoad>,
    /// Viewer sessions answered and not connected yet (`pending.rs`).
    pending: Mutex<PendingSessions>,
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes a session's entry; a session still connecting leaves that count.
    fn remove_session(&self, session: &str) -> Option<SessionEntry> {
        let mut entry = self.sessions().remove(session);
        if let Some(counted) = entry.as_mut().and_then(|e| e.connecting.take()) {
            self.release_pending(counted);
        }
        entry
    }

    fn forget_session(&self, session: &str) {
        self.remove_session(session);
    }

    /// The session's WebRTC connection is up.
    fn session_connected(&self, session: &str) {
        let counted = self.sessions().get_mut(session).and_then(|entry| {
            entry.state.send_replace(SessionState::Connected);
            entry.connecting.take()
        });
        if let Some(counted) = counted {
            self.release_pending(counted);
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingSessions> {
        // A few integer updates at a time; a poisoned count is still a count.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a viewer session of `client` as connecting, or refuses it.
    fn admit_pending(&self, client: Option<IpAddr>) -> Result<PendingHold<'_>> {
        let mut pending = self.pending();
        match pending.admit(client) {
            Ok(()) => {
                self.metrics.connecting.set(f64::from(pending.total()));
                Ok(PendingHold {
                    shared: self,
                    counted: Some(Connecting { client }),
                })
            }
            Err(PendingRefusal::Client(max)) => {
                self.metrics.viewers_refused_connecting_ip.increment(1);
                let who = client.map(crate::rate::client_key);
                let who = who.map_or_else(|| "this client".to_owned(), |ip| ip.to_string());
                Err(Error::TooManyRequests(format!(
                    "{max} viewer sessions from {who} are still connecting; connect them, or \
                     wait until they time out ({} s)",
                    shard::CONNECT_TIMEOUT.as_secs()
                )))
            }
            Err(PendingRefusal::Total(max)) => {
                self.metrics.viewers_refused_connecting.increment(1);
                Err(Error::AtCapacity(format!(
                    "{max} sessions connecting at once"
                )))
            }
        }
    }

    /// The session entry of `session` holds the count now (released if it is gone already).
    fn hold_pending(&self, session: &str, hold: PendingHold<'_>) {
        if let Some(entry) = self.sessions().get_mut(session) {
            entry.connecting = hold.keep();
        }
    }

    fn release_pending(&self, counted: Connecting) {
        let mut pending = self.pending();
        pending.release(counted.client);
        self.metrics.connecting.set(f64::from(pending.total()));
    }

    /// A keyframe was asked of the publisher `session`.
    fn keyframe_requested(&self, session: &str) {
        if let Some(entry) = self.sessions().get(session) {
            entry.keyframe_requests.send_modify(|n| *n += 1);
        }
    }

    /// Ends `name` now if `session` is its publisher, and its viewers with it.
    fn end_stream(&self, name: &str, session: &str) {
        if let Some(id) = self.streams.end(name, session) {
            info!(stream = %name, "publisher ended the stream");
            for tx in &self.commands {
                let _ = tx.send(Command::EndStream { stream: id });
            }
        }
    }

    /// Hands a publisher packet to every shard once; a full shard queue drops and counts.
    /// A packet for taps only never reaches the shards (nor their keyframe caches).
    fn fan_out(&self, packet: Arc<crate::media::MediaPacket>) {
        self.streams.taps().feed(&packet);
        if packet.delivery.audience == crate::media::Audience::Taps {
            return;
        }
        for tx in &self.media {
            if tx.try_send(Arc::clone(&packet)).is_err() {
                self.metrics.drops_shard_queue.increment(1);
            }
        }
    }
}

/// A session counted as connecting: its client, if known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connecting {
    client: Option<IpAddr>,
}

/// A viewer session admitted as connecting while it is set up: released if the setup fails,
/// handed to its session entry if it succeeds.
pub(crate) struct PendingHold<'a> {
    shared: &'a Shared,
    counted: Option<Connecting>,
}

impl PendingHold<'_> {
    /// The count now belongs to the session entry.
    fn keep(mut self) -> Option<Connecting> {
        self.counted.take()
    }
}

impl Drop for PendingHold<'_> {
    fn drop(&mut self) {
        if let Some(counted) = self.counted.take() {
            self.shared.release_pending(counted);
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A media socket could not be bound.
    #[error("WebRTC UDP sockets: {0}")]
    Bind(#[from] std::io::Error),
}

/// The engine handle the HTTP (and later gRPC) signaling uses.
pub struct Engine {
    shared: Arc<Shared>,
    candidates: Vec<Vec<SocketAddr>>,
    next_shard: AtomicUsize,
    next_peer: AtomicU64,
    service: Service,
    ice_servers: Vec<String>,
    limits: NodeLimits,
    /// Viewers' media sealed and sent by the shard once their key is proven (`direct.rs`).
    direct_send: bool,
    upstream: OnceLock<Arc<dyn Upstream>>,
}

impl Engine {
    /// Binds the shards' sockets and starts the shards and the housekeeping task.
    pub async fn start(
        webrtc: &WebRtcConfig,
        viewers: &ViewerConfig,
        service: Service,
        streams: Arc<Streams>,
    ) -> std::result::Result<Arc<Engine>, StartError> {
        let bound = sockets::bind(webrtc)?;
        let mut media_tx = Vec::new();
        let mut media_rx = Vec::new();
        let mut cmd_tx = Vec::new();
        let mut cmd_rx = Vec::new();
        for _ in &bound {
            let (tx, rx) = mpsc::channel(viewers.queue_packets.max(64));
            media_tx.push(tx);
            media_rx.push(rx);
            let (tx, rx) = mpsc::unbounded_channel();
            cmd_tx.push(tx);
            cmd_rx.push(rx);
        }
        let shared = Arc::new(Shared {
            streams: Arc::clone(&streams),
            media: media_tx,
            commands: cmd_tx,
            sessions: Mutex::default(),
            metrics: EngineMetrics::new(),
            loads: bound.iter().map(|_| ShardLoad::default()).collect(),
            pending: Mutex::new(PendingSessions::new(
                viewers.max_connecting_per_ip,
                viewers.max_connecting,
            )),
        });
        let settings = ShardSettings {
            max_delay: viewers.max_delay(),
            max_pps: webrtc.shard_max_pps,
            several: bound.len() > 1,
        };
        let mut candidates = Vec::new();
        for (index, ((shard_sockets, media), commands)) in
            bound.into_iter().zip(media_rx).zip(cmd_rx).enumerate()
        {
            info!(
                shard = index,
                sockets = ?shard_sockets.sockets.iter().map(|s| s.1).collect::<Vec<_>>(),
                candidates = ?shard_sockets.candidates,
                "WebRTC shard listening"
            );
            candidates.push(shard_sockets.candidates);
            let shared = Arc::clone(&shared);
            let (ready_tx, ready_rx) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("wg-shard-{index}"))
                .spawn(move || {
                    run_shard(
                        index,
                        shared,
                        shard_sockets.sockets,
                        settings,
                        commands,
                        media,
                        ready_tx,
                    )
                })?;
            ready_rx.await.map_err(|_| {
                std::io::Error::other(format!("shard {index} stopped while starting"))
            })??;
        }
        tokio::spawn(housekeeping(Arc::clone(&shared), viewers.reconnect_grace()));
        Ok(Arc::new(Engine {
            shared,
            candidates,
            next_shard: AtomicUsize::new(0),
            next_peer: AtomicU64::new(1),
            service,
            ice_servers: webrtc.ice_servers.clone(),
            limits: NodeLimits::default(),
            direct_send: webrtc.direct_send,
            upstream: OnceLock::new(),
        }))
    }

    /// The Service that authorizes publishers.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The node's streams.
    pub fn streams(&self) -> &Streams {
        &self.shared.streams
    }

    /// Drain state and session ceilings, changeable at run time.
    pub fn limits(&self) -> &NodeLimits {
        &self.limits
    }

    /// Lets viewers of a stream this node does not have trigger a pull from another edge.
    /// Set once, at start.
    pub fn set_upstream(&self, upstream: Arc<dyn Upstream>) {
        if self.upstream.set(upstream).is_err() {
            warn!("the upstream (relay) was set twice; keeping the first");
        }
    }

    /// Makes `stream` live here when another edge of the cluster has it, through the relay
    /// (as a WHEP viewer's POST does); `Ok` at once when it is local already. For outputs that
    /// read a stream without being WebRTC viewers (LL-HLS): their tap keeps the pull alive.
    pub async fn pull_if_remote(&self, stream: &str) -> Result<()> {
        if self.shared.streams.get(stream).is_some() {
            return Ok(());
        }
        if self.limits.is_draining() {
            return Err(Error::Draining);
        }
        match self.upstream.get() {
            Some(upstream) => upstream.pull(stream).await,
            None => Err(Error::StreamNotFound(stream.to_owned())),
        }
    }

    /// Refuses a new publisher while draining or at the publisher ceiling.
    pub(crate) fn admit_publisher(&self) -> Result<()> {
        let (publishers, _) = self.shared.streams.live_counts();
        if self.limits.is_draining() {
            return Err(Error::Draining);
        }
        match self.limits.max_publishers() {
            Some(max) if publishers >= max as usize => {
                Err(Error::AtCapacity(format!("publisher limit of {max}")))
            }
            _ => Ok(()),
        }
    }

    /// STUN/TURN URLs for clients.
    pub fn ice_servers(&self) -> &[String] {
        &self.ice_servers
    }

    fn pick_shard(&self) -> usize {
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.candidates.len()
    }

    /// The next shard in turn that keeps up with its viewers; `503` when none does.
    fn pick_viewer_shard(&self) -> Result<usize> {
        let count = self.candidates.len();
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|i| (first + i) % count)
            .find(|&shard| !self.shared.loads[shard].saturated())
            .ok_or_else(|| {
                self.shared.metrics.viewers_refused_saturated.increment(1);
                Error::AtCapacity("every media shard is saturated".into())
            })
    }

    /// Each shard's load as it last measured it: (busy share, lag, saturated).
    pub fn shard_loads(&self) -> Vec<(f64, Duration, bool)> {
        let loads = &self.shared.loads;
        loads
            .iter()
            .map(|l| (l.busy(), l.lag(), l.saturated()))
            .collect()
    }

    /// Asks the publisher of stream `stream` for a keyframe, for an output that starts
    /// mid-stream (a recording). Merged with viewers' requests by the publisher's shard.
    pub fn request_keyframe(&self, stream: u64) {
        match self.shared.streams.keyframe_route(stream) {
            Some(crate::stream::KeyframeRoute::Shard(shard)) => {
                let _ = self.send(shard, Command::RequestKeyframe { stream });
            }
            Some(crate::stream::KeyframeRoute::Flag(flag)) => flag.store(true, Ordering::Relaxed),
            None => {}
        }
    }

    fn send(&self, shard: usize, cmd: Command) -> Result<()> {
        self.shared.commands[shard]
            .send(cmd)
            .map_err(|_| Error::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::negotiate::contain_panic;
    use super::*;
    use crate::stream::TrackInfo;
    use std::time::Instant;

    const CHROME_PUBLISH: &str = include_str!("../../tests/fixtures/chrome-publish-offer.sdp");
    const CHROME_VIEW: &str = include_str!("../../tests/fixtures/chrome-view-offer.sdp");

    #[test]
    fn chrome_offers_answer() {
        let cands = ["127.0.0.1:9".parse().unwrap()];
        let now = Instant::now();
        let offer = offer::parse(CHROME_PUBLISH).unwrap();
        let (built, tracks) =
            setup::publisher(&offer, CHROME_PUBLISH.into(), &[], &cands, now).unwrap();
        assert!(built.answer_sdp.contains("a=ice-lite"));
        assert!(built.answer_sdp.contains("127.0.0.1 9 typ host"));
        assert_eq!(tracks.len(), 2);
        let stream = crate::stream::StreamRef {
            id: 1,
            name: "demo".into(),
            tracks: tracks.iter().map(|t| t.info.clone()).collect(),
            publisher_shard: Some(0),
            viewers: 0,
        };
        let view = offer::parse(CHROME_VIEW).unwrap();
        let (answer, vtracks) =
            setup::viewer(&view, CHROME_VIEW.into(), &stream, &cands, None, now).unwrap();
        assert_eq!(vtracks.len(), 2);
        assert!(answer.answer_sdp.contains("a=sendonly"));
    }

    /// A viewer offering video and audio to an audio-only stream gets the video section
    /// answered inactive, not rejected (a rejected first m-line breaks Chromium's BUNDLE) and not
    /// sendonly (a silent video track stalls the page's media element).
    #[test]
    fn audio_only_stream_answers_video_inactive() {
        let cands = ["127.0.0.1:9".parse().unwrap()];
        let stream = crate::stream::StreamRef {
            id: 1,
            name: "radio".into(),
            tracks: vec![TrackInfo {
                kind: crate::media::TrackKind::Audio,
                codec: crate::media::CodecParams {
                    codec: crate::media::Codec::Opus,
                    fmtp: "minptime=10;useinbandfec=1".into(),
                    channels: 2,
                },
            }],
            publisher_shard: None,
            viewers: 0,
        };
        let view = offer::parse(CHROME_VIEW).unwrap();
        let (answer, tracks) = setup::viewer(
            &view,
            CHROME_VIEW.into(),
            &stream,
            &cands,
            None,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(tracks.len(), 1);
        let video = answer
            .answer_sdp
            .split("m=")
            .find(|m| m.starts_with("video"))
            .expect("a video section");
        assert!(!video.starts_with("video 0 "), "rejected: {video}");
        assert!(video.contains("a=inactive"), "not inactive: {video}");
    }

    /// Mangled offers (lines dropped, duplicated, truncated, bytes flipped) are refused or
    /// answered, never a panic.
    #[test]
    fn mangled_offers_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands = ["127.0.0.1:9".parse().unwrap()];
        let lines: Vec<&str> = CHROME_PUBLISH.split("\r\n").collect();
        for _ in 0..300 {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..l.len());
                match rng.random_range(0..4) {
                    0 => {
                        l.remove(i);
                    }
                    1 => {
                        let dup = l[i].clone();
                        l.insert(i, dup);
                    }
                    2 => {
                        let cut = rng.random_range(0..=l[i].len());
                        l[i].truncate(cut);
                    }
                    _ => {
                        let mut b = l[i].clone().into_bytes();
                        if !b.is_empty() {
                            let j = rng.random_range(0..b.len());
                            b[j] = rng.random_range(b' '..=b'~');
                        }
                        l[i] = String::from_utf8(b).unwrap_or_default();
                    }
                }
            }
            let sdp = l.join("\r\n");
            let _ = contain_panic(|| {
                let offer = offer::parse(&sdp)?;
                setup::publisher(&offer, sdp.clone(), &[], &cands, Instant::now()).map(|_| ())
            });
        }
    }
}
