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
mod ingest;
mod metrics;
mod offer;
mod peer;
mod restart;
mod rewrite;
mod rtt;
mod setup;
mod shard;
mod sockets;
mod srtp_keys;
mod stats;

use crate::cluster::{NodeLimits, TicketScope, Upstream};
use crate::config::{ViewerConfig, WebRtcConfig};
use crate::error::{Error, Result};
use crate::service::{PublishRequest, Service};
use crate::stream::{IngestProtocol, NewPublisher, Streams, TrackInfo};
use metrics::EngineMetrics;
use peer::{Peer, PeerId, PublisherRole, Role, ViewerRole};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use shard::{Command, Datagram, Shard};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Datagrams a shard may have waiting before its socket readers drop new ones.
const DATAGRAM_QUEUE: usize = 8192;

/// Whether a session publishes or watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A WHIP publisher.
    Publisher,
    /// A WHEP viewer.
    Viewer,
}

pub use delivery::{Delivery, SessionStats};
pub use ingest::Ingest;
pub use sockets::local_ipv4_addresses;

/// Entry points for the fuzz targets in `fuzz/`: the parsers fed by the network, without the
/// sockets. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{offer, parse_fragment as parse, setup};
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

/// What a PATCH did.
#[derive(Debug, Clone)]
pub enum PatchOutcome {
    /// Candidates added (`204`).
    Trickled,
    /// ICE restarted: our new credentials and candidates, and the resource's new ETag (`200`).
    Restarted {
        /// `application/trickle-ice-sdpfrag` body.
        fragment: String,
        /// New entity tag.
        etag: String,
    },
}

/// A session the engine answered.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    /// Opaque id, the last segment of the session resource URL.
    pub session: String,
    /// The stream it publishes or watches.
    pub stream: String,
    /// The answer SDP.
    pub sdp: String,
    /// The resource's entity tag.
    pub etag: String,
}

#[derive(Debug, Clone)]
struct SessionEntry {
    shard: usize,
    peer: PeerId,
    stream: String,
    kind: SessionKind,
    etag: String,
    created: Instant,
    /// Dropped with the entry: watchers then learn the session ended.
    state: tokio::sync::watch::Sender<SessionState>,
    /// Keyframe requests sent to this publisher so far.
    keyframe_requests: tokio::sync::watch::Sender<u64>,
    /// Another edge pulling the stream (a relay), not an end viewer.
    relay_pull: bool,
    /// The operator's pause and cap (viewers).
    delivery: Delivery,
}

impl SessionEntry {
    fn info(&self, session: &str, now: Instant) -> SessionInfo {
        SessionInfo {
            session: session.to_owned(),
            stream: self.stream.clone(),
            kind: self.kind,
            state: *self.state.borrow(),
            age: now.saturating_duration_since(self.created),
            relay_pull: self.relay_pull,
            delivery: self.delivery,
        }
    }
}

/// What a viewer presents besides its offer.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchCredentials<'a> {
    /// `?ticket=` from an orchestrator's redirect.
    pub ticket: Option<&'a str>,
    /// The `Authorization` header value.
    pub authorization: Option<&'a str>,
}

/// Where a WebRTC session is, for those who follow it (gRPC signaling, the entity API). The
/// end of a session is its watch channel closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Answered; ICE and DTLS not done yet.
    Connecting,
    /// Media can flow.
    Connected,
}

/// One WebRTC session on this node.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id (last segment of its WHIP/WHEP resource URL).
    pub session: String,
    /// Its stream.
    pub stream: String,
    /// Publisher or viewer.
    pub kind: SessionKind,
    /// Where it is.
    pub state: SessionState,
    /// How long ago it was answered.
    pub age: Duration,
    /// A viewer that is another edge pulling the stream (a relay link), not an end viewer.
    pub relay_pull: bool,
    /// The operator's pause and cap (viewers).
    pub delivery: Delivery,
}

/// State the shards share with the signaling side.
pub(crate) struct Shared {
    streams: Arc<Streams>,
    media: Vec<mpsc::Sender<Arc<crate::media::MediaPacket>>>,
    commands: Vec<mpsc::UnboundedSender<Command>>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    metrics: EngineMetrics,
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_session(&self, session: &str) {
        self.sessions().remove(session);
    }

    /// The session's WebRTC connection is up.
    fn session_connected(&self, session: &str) {
        if let Some(entry) = self.sessions().get(session) {
            entry.state.send_replace(SessionState::Connected);
        }
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
    fn fan_out(&self, packet: Arc<crate::media::MediaPacket>) {
        self.streams.taps().feed(&packet);
        for tx in &self.media {
            if tx.try_send(Arc::clone(&packet)).is_err() {
                self.metrics.drops_shard_queue.increment(1);
            }
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
        });
        let mut candidates = Vec::new();
        for (index, ((shard_sockets, media), commands)) in
            bound.into_iter().zip(media_rx).zip(cmd_rx).enumerate()
        {
            let (dgram_tx, dgram_rx) = mpsc::channel(DATAGRAM_QUEUE);
            let mut sockets = Vec::new();
            for (socket_index, (std_socket, addr)) in shard_sockets.sockets.into_iter().enumerate()
            {
                let socket = Arc::new(UdpSocket::from_std(std_socket)?);
                tokio::spawn(read_socket(
                    Arc::clone(&socket),
                    socket_index,
                    dgram_tx.clone(),
                    Arc::clone(&shared),
                ));
                sockets.push((socket, addr));
            }
            info!(
                shard = index,
                sockets = ?sockets.iter().map(|s| s.1).collect::<Vec<_>>(),
                candidates = ?shard_sockets.candidates,
                "WebRTC shard listening"
            );
            candidates.push(shard_sockets.candidates);
            let shard = Shard::new(index, Arc::clone(&shared), sockets);
            tokio::spawn(shard.run(commands, media, dgram_rx));
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

    /// Answers a publisher's offer: authorizes it, takes the stream (or returns 409), starts
    /// the session on a shard.
    pub async fn publish(
        &self,
        request: PublishRequest<'_>,
        offer_sdp: String,
        protocol: IngestProtocol,
    ) -> Result<SessionAnswer> {
        self.admit_publisher()?;
        let stream = self.service.authorize_publish(protocol, request).await?;
        let offer = offer::parse(&offer_sdp)?;
        let now = Instant::now();
        let previous: Vec<TrackInfo> = self
            .shared
            .streams
            .get(&stream)
            .map(|s| s.tracks)
            .unwrap_or_default();
        let shard = self.pick_shard();
        let (built, tracks) = contain_panic(|| {
            setup::publisher(&offer, offer_sdp, &previous, &self.candidates[shard], now)
        })?;
        let session = new_session_id();
        let last_media = Arc::new(AtomicU64::new(0));
        let infos: Vec<TrackInfo> = tracks.iter().map(|t| t.info.clone()).collect();
        let claim = self.shared.streams.claim(
            &stream,
            protocol,
            infos,
            NewPublisher {
                session: session.clone(),
                shard: Some(shard),
                last_media: Arc::clone(&last_media),
                revoked: Arc::default(),
                keyframe_wanted: None,
            },
            now,
        )?;
        self.take_over(&stream, &claim);
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            pc: built.pc,
            session: session.clone(),
            stream_name: stream.clone(),
            stream: claim.stream,
            local_ufrag: built.local_ufrag,
            role: Role::Publisher(PublisherRole {
                epoch: claim.epoch,
                tracks,
                counters: claim.counters,
                last_media,
                ssrcs: [None, None],
                video_receiver: None,
                last_keyframe_request: None,
                keyframe_request_pending: false,
                keyframe_requests_sent: 0,
                ice_disconnected: false,
            }),
            next_timeout: None,
            socket: None,
            remote_addrs: Vec::new(),
            created: now,
            connected: false,
            remote: None,
        };
        let etag = self.register(&session, shard, id, &stream, SessionKind::Publisher, false);
        self.send(
            shard,
            Command::AddPeer {
                id,
                peer: Box::new(peer),
            },
        )?;
        self.shared.metrics.publisher_joined();
        info!(%session, %stream, shard, publishes = claim.epoch + 1, "publisher session started");
        Ok(SessionAnswer {
            session,
            stream,
            sdp: built.answer_sdp,
            etag,
        })
    }

    /// Answers a viewer's offer for `stream`. With a relay ticket (or the cluster token as its
    /// bearer token) the viewer is another edge pulling the stream: it is not held to the end-viewer ceiling, and a stream this node
    /// does not have is a 404 rather than a pull of its own (which could loop). Otherwise a
    /// missing stream is pulled from the edge that has it, when a relay is set up.
    pub async fn watch(
        &self,
        stream: &str,
        offer_sdp: String,
        credentials: WatchCredentials<'_>,
    ) -> Result<SessionAnswer> {
        let relay_pull = match credentials.ticket {
            Some(t) => {
                self.service.verify_ticket(t, TicketScope::Relay, stream)?;
                true
            }
            None => self.service.is_cluster_bearer(credentials.authorization),
        };
        let offer = offer::parse(&offer_sdp)?;
        let (_, viewers) = self.shared.streams.live_counts();
        if self.limits.is_draining() {
            return Err(Error::Draining);
        }
        if !relay_pull
            && let Some(max) = self.limits.max_viewers()
            && viewers >= max as usize
        {
            return Err(Error::AtCapacity(format!("viewer limit of {max}")));
        }
        let mut found = self.shared.streams.get(stream);
        if found.is_none()
            && !relay_pull
            && let Some(upstream) = self.upstream.get()
        {
            upstream.pull(stream).await?;
            found = self.shared.streams.get(stream);
        }
        let stream_ref = found.ok_or_else(|| Error::StreamNotFound(stream.to_owned()))?;
        if !relay_pull
            && let Some(max) = self.limits.stream_max_viewers(stream)
            && stream_ref.viewers >= max as usize
        {
            return Err(Error::AtCapacity(format!(
                "stream `{stream}` viewer limit of {max}"
            )));
        }
        let now = Instant::now();
        let shard = self.pick_shard();
        // Without a provider to wrap, the viewer simply stays on rtc's write path.
        let keys = self
            .direct_send
            .then(|| srtp_keys::KeyCapture::new().ok().map(Arc::new))
            .flatten();
        let (built, tracks) = contain_panic(|| {
            setup::viewer(
                &offer,
                offer_sdp,
                &stream_ref,
                &self.candidates[shard],
                keys.clone(),
                now,
            )
        })?;
        let session = new_session_id();
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            pc: built.pc,
            session: session.clone(),
            stream_name: stream.to_owned(),
            stream: stream_ref.id,
            local_ufrag: built.local_ufrag,
            role: Role::Viewer(ViewerRole::new(
                tracks,
                keys.map(|k| Box::new(direct::DirectPath::new(k))),
            )),
            next_timeout: None,
            socket: None,
            remote_addrs: Vec::new(),
            created: now,
            connected: false,
            remote: None,
        };
        let etag = self.register(&session, shard, id, stream, SessionKind::Viewer, relay_pull);
        self.shared.streams.add_viewers(stream, 1);
        self.shared.metrics.viewer_joined();
        self.send(
            shard,
            Command::AddPeer {
                id,
                peer: Box::new(peer),
            },
        )?;
        info!(%session, %stream, shard, "viewer session started");
        Ok(SessionAnswer {
            session,
            stream: stream.to_owned(),
            sdp: built.answer_sdp,
            etag,
        })
    }

    /// Applies an `application/trickle-ice-sdpfrag` PATCH: new remote candidates (trickle), or
    /// new remote credentials (an ICE restart, answered with ours).
    pub async fn patch(
        &self,
        kind: SessionKind,
        stream: &str,
        session: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchOutcome> {
        let entry = self.lookup(kind, stream, session)?;
        if let Some(tag) = if_match
            && tag != "*"
            && tag.trim_matches('"') != entry.etag.trim_matches('"')
        {
            return Err(Error::PreconditionFailed);
        }
        let parsed = parse_fragment(fragment)?;
        if let Some((ufrag, pwd)) = parsed.restart {
            let (reply, rx) = oneshot::channel();
            let candidates = parsed.candidates;
            self.send(
                entry.shard,
                Command::Restart {
                    id: entry.peer,
                    ufrag,
                    pwd,
                    candidates,
                    reply,
                },
            )?;
            let answer = match rx.await {
                Ok(Ok(Some(answer))) => answer,
                Ok(Ok(None)) => return Ok(PatchOutcome::Trickled),
                Ok(Err(reason)) => return Err(Error::MalformedFragment(reason)),
                Err(_) => return Err(Error::SessionNotFound),
            };
            let etag = new_etag();
            if let Some(e) = self.shared.sessions().get_mut(session) {
                e.etag = etag.clone();
            }
            return Ok(PatchOutcome::Restarted {
                fragment: answer,
                etag,
            });
        }
        if parsed.candidates.is_empty() {
            return Ok(PatchOutcome::Trickled);
        }
        let (reply, rx) = oneshot::channel();
        let candidates = parsed.candidates;
        self.send(
            entry.shard,
            Command::Trickle {
                id: entry.peer,
                candidates,
                reply,
            },
        )?;
        match rx.await {
            Ok(Ok(())) => Ok(PatchOutcome::Trickled),
            Ok(Err(reason)) => Err(Error::MalformedFragment(reason)),
            Err(_) => Err(Error::SessionNotFound),
        }
    }

    /// Ends a session (HTTP DELETE). A publisher's DELETE ends its stream at once: the grace
    /// period is for publishers that vanish, not for ones that say goodbye.
    pub fn end(&self, kind: SessionKind, stream: &str, session: &str) -> Result<()> {
        let entry = self.lookup(kind, stream, session)?;
        self.shared.forget_session(session);
        self.send(
            entry.shard,
            Command::Close {
                id: entry.peer,
                reason: "ended by client",
            },
        )?;
        if kind == SessionKind::Publisher {
            self.shared.end_stream(stream, session);
        }
        Ok(())
    }

    /// Ends `stream` now, publisher and viewers (an operator's or the Service's decision).
    pub fn kick(&self, stream: &str, reason: &str) -> Result<()> {
        let (id, session) = self
            .shared
            .streams
            .kick(stream)
            .ok_or_else(|| Error::StreamNotFound(stream.to_owned()))?;
        if let Some(session) = session
            && let Ok(entry) = self.lookup(SessionKind::Publisher, stream, &session)
        {
            self.shared.forget_session(&session);
            let _ = self.send(
                entry.shard,
                Command::Close {
                    id: entry.peer,
                    reason: "stream kicked",
                },
            );
        }
        for tx in &self.shared.commands {
            let _ = tx.send(Command::EndStream { stream: id });
        }
        info!(%stream, %reason, "stream kicked");
        Ok(())
    }

    fn lookup(&self, kind: SessionKind, stream: &str, session: &str) -> Result<SessionEntry> {
        self.shared
            .sessions()
            .get(session)
            .filter(|e| e.kind == kind && e.stream == stream)
            .cloned()
            .ok_or(Error::SessionNotFound)
    }

    /// What a new publisher's claim leaves to do, whatever its protocol: close the stale
    /// publisher it replaced, and end held viewers whose codecs it does not carry.
    fn take_over(&self, stream: &str, claim: &crate::stream::PublisherClaim) {
        if let Some(old) = &claim.replaced {
            info!(%stream, "replacing a stale publisher");
            self.close_session(old);
        }
        if !claim.viewers_continue {
            info!(%stream, "publisher changed codecs; ending held viewers");
            for tx in &self.shared.commands {
                let _ = tx.send(Command::EndStream {
                    stream: claim.stream,
                });
            }
        }
    }

    fn close_session(&self, session: &str) {
        let entry = self.shared.sessions().remove(session);
        if let Some(e) = entry {
            let _ = self.send(
                e.shard,
                Command::Close {
                    id: e.peer,
                    reason: "replaced by a new publisher",
                },
            );
        }
    }

    /// Records a new session; returns its first entity tag.
    fn register(
        &self,
        session: &str,
        shard: usize,
        peer: PeerId,
        stream: &str,
        kind: SessionKind,
        relay_pull: bool,
    ) -> String {
        let etag = new_etag();
        self.shared.sessions().insert(
            session.to_owned(),
            SessionEntry {
                shard,
                peer,
                stream: stream.to_owned(),
                kind,
                etag: etag.clone(),
                created: Instant::now(),
                state: tokio::sync::watch::Sender::new(SessionState::Connecting),
                keyframe_requests: tokio::sync::watch::Sender::new(0),
                relay_pull,
                delivery: Delivery::default(),
            },
        );
        etag
    }

    /// Every WebRTC session on this node.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let now = Instant::now();
        let mut all: Vec<SessionInfo> = self
            .shared
            .sessions()
            .iter()
            .map(|(id, e)| e.info(id, now))
            .collect();
        all.sort_by(|a, b| a.session.cmp(&b.session));
        all
    }

    /// One WebRTC session on this node; `None` when there is no such session (any more).
    pub fn session(&self, session: &str) -> Option<SessionInfo> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.info(session, Instant::now()))
    }

    /// Follows `session`: its state now and each change; the channel closes when it ends.
    /// `None` when there is no such session (any more).
    pub fn follow_session(
        &self,
        session: &str,
    ) -> Option<tokio::sync::watch::Receiver<SessionState>> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.state.subscribe())
    }

    /// Follows the keyframe requests sent to publisher `session`: a count that grows with each.
    /// `None` when there is no such session (any more).
    pub fn follow_keyframe_requests(
        &self,
        session: &str,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.keyframe_requests.subscribe())
    }

    /// Sets how media is delivered to viewer `session`: paused, capped, audio only. A resumed
    /// viewer starts again at the newest cached keyframe.
    pub fn set_delivery(&self, session: &str, delivery: Delivery) -> Result<()> {
        let shard = {
            let mut sessions = self.shared.sessions();
            let entry = sessions
                .get_mut(session)
                .filter(|e| e.kind == SessionKind::Viewer)
                .ok_or(Error::SessionNotFound)?;
            entry.delivery = delivery;
            (entry.shard, entry.peer)
        };
        self.send(
            shard.0,
            Command::Deliver {
                id: shard.1,
                delivery,
            },
        )?;
        info!(%session, ?delivery, "viewer delivery changed");
        Ok(())
    }

    /// The session's delivery figures now, as its shard measured them.
    pub async fn session_stats(&self, session: &str) -> Result<SessionStats> {
        let (shard, id) = self
            .shared
            .sessions()
            .get(session)
            .map(|e| (e.shard, e.peer))
            .ok_or(Error::SessionNotFound)?;
        let (reply, rx) = oneshot::channel();
        self.send(shard, Command::Stats { id, reply })?;
        rx.await.map_err(|_| Error::SessionNotFound)
    }

    /// Ends one session, publisher or viewer, whichever way it was negotiated (a kick).
    pub fn end_session(&self, session: &str) -> Result<()> {
        let (kind, stream) = self
            .shared
            .sessions()
            .get(session)
            .map(|e| (e.kind, e.stream.clone()))
            .ok_or(Error::SessionNotFound)?;
        self.end(kind, &stream, session)
    }

    fn send(&self, shard: usize, cmd: Command) -> Result<()> {
        self.shared.commands[shard]
            .send(cmd)
            .map_err(|_| Error::Unavailable)
    }
}

/// Runs offer handling so that a panic inside the WebRTC library on a hostile offer refuses
/// that offer (400) instead of taking the request task down.
fn contain_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        warn!("the WebRTC engine panicked on an offer; refused it");
        Err(Error::MalformedSdp(
            "the offer could not be processed".into(),
        ))
    })
}

fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn new_etag() -> String {
    format!("\"{}\"", hex::encode(rand::random::<[u8; 8]>()))
}

/// A parsed trickle-ICE fragment.
#[derive(Debug, Default)]
struct Fragment {
    candidates: Vec<RTCIceCandidateInit>,
    /// New remote ufrag and password: the client restarts ICE.
    restart: Option<(String, String)>,
}

fn parse_fragment(fragment: &str) -> Result<Fragment> {
    let mut mid = None;
    let mut out = Fragment::default();
    let (mut ufrag, mut pwd) = (None, None);
    for line in fragment.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            out.candidates.push(RTCIceCandidateInit {
                candidate: format!("candidate:{c}"),
                sdp_mid: mid.clone(),
                ..Default::default()
            });
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(u.to_owned());
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            pwd = Some(p.to_owned());
        } else if !(line.is_empty() || line.starts_with("a=") || line.starts_with("m=")) {
            return Err(Error::MalformedFragment(format!(
                "unexpected line `{line}`"
            )));
        }
    }
    match (ufrag, pwd) {
        (Some(u), Some(p)) => out.restart = Some((u, p)),
        (None, None) => {}
        _ => {
            return Err(Error::MalformedFragment(
                "an ICE restart needs both a=ice-ufrag and a=ice-pwd".into(),
            ));
        }
    }
    Ok(out)
}

async fn read_socket(
    socket: Arc<UdpSocket>,
    index: usize,
    tx: mpsc::Sender<Datagram>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = Datagram {
                    socket: index,
                    from,
                    data: bytes::BytesMut::from(&buf[..n]),
                };
                match tx.try_send(d) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared.metrics.drops_datagram_queue.increment(1)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP port-unreachable from a vanished peer surfaces here on Linux; keep reading.
            Err(e) => tracing::debug!("UDP receive: {e}"),
        }
    }
}

/// Once a second: bitrates, and ending streams whose publisher did not come back in time.
async fn housekeeping(shared: Arc<Shared>, grace: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        shared.streams.sample_bitrates(now);
        for (id, name) in shared.streams.expire(grace, now) {
            warn!(stream = %name, "publisher did not return within the grace period; ending viewers");
            for tx in &shared.commands {
                let _ = tx.send(Command::EndStream { stream: id });
            }
        }
        let (live, viewers) = shared.streams.live_counts();
        ::metrics::gauge!("waveguide_streams").set(live as f64);
        ::metrics::gauge!("waveguide_stream_viewers").set(viewers as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn trickle_fragment_parses_candidates_and_restarts() {
        let frag = "a=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let c = parse_fragment(frag).unwrap();
        assert_eq!(c.candidates.len(), 1);
        assert_eq!(c.candidates[0].sdp_mid.as_deref(), Some("0"));
        assert!(c.candidates[0].candidate.starts_with("candidate:1 1 udp"));
        assert!(c.restart.is_none());
        let r =
            parse_fragment("a=ice-ufrag:abcd\r\na=ice-pwd:efghefghefghefghefghefgh\r\n").unwrap();
        assert_eq!(r.restart.unwrap().0, "abcd");
        assert!(matches!(
            parse_fragment("a=ice-ufrag:abcd\r\n"),
            Err(Error::MalformedFragment(_))
        ));
        assert!(matches!(
            parse_fragment("garbage"),
            Err(Error::MalformedFragment(_))
        ));
    }
}
