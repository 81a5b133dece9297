//! A shard: one task that owns its UDP sockets and every peer connection on them, and delivers
//! each publisher packet to its own viewers. Packets reach a shard once, whatever the number
//! of viewers on it; nothing here takes a lock per packet.

use super::Shared;
use super::delivery::{Admit, Delivery, RateMeter, SessionStats};
use super::demux::Demux;
use super::direct::{DirectPath, Path};
use super::peer::{Peer, PeerId, Role};
use super::setup::ViewerTrack;
use crate::media::{KeyframeCache, MediaPacket, TrackKind};
use crate::stream::KeyframeRoute;
use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How often timers are checked; rtc's timers (ICE keep-alive, DTLS retransmit, RTCP reports)
/// need no finer grain, and one tick serves every peer.
const TICK: Duration = Duration::from_millis(10);
/// A peer that has not connected after this long is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A publisher whose ICE consent lapsed (5 s without a check) is gone once its media has
/// been silent this long too. Consent alone is not enough: RFC 7675 clients check every 4–6 s
/// (aiortc: 5 s ± 20 %), so a live publisher can miss the 5 s mark while still sending.
const PUBLISHER_SILENCE: Duration = Duration::from_millis(1500);
/// Keyframe requests to one publisher are merged into at most one per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Work for a shard from the signaling side.
pub(crate) enum Command {
    AddPeer {
        id: PeerId,
        peer: Box<Peer>,
    },
    Trickle {
        id: PeerId,
        candidates: Vec<RTCIceCandidateInit>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An ICE restart with the client's new credentials; replies with our answer fragment.
    /// A fragment with credentials: trickle if they are the session's, else an ICE restart;
    /// replies with our answer fragment for a restart.
    Restart {
        id: PeerId,
        ufrag: String,
        pwd: String,
        candidates: Vec<RTCIceCandidateInit>,
        reply: oneshot::Sender<Result<Option<String>, String>>,
    },
    Close {
        id: PeerId,
        reason: &'static str,
    },
    /// The stream is over (grace expired, or its new publisher changed codecs): end its viewers.
    EndStream {
        stream: u64,
    },
    RequestKeyframe {
        stream: u64,
    },
    /// An operator's new pause or cap for a viewer.
    Deliver {
        id: PeerId,
        delivery: Delivery,
    },
    /// A snapshot of the session's delivery.
    Stats {
        id: PeerId,
        reply: oneshot::Sender<SessionStats>,
    },
}

/// A shard's sockets with their local addresses.
type Sockets = [(Arc<UdpSocket>, SocketAddr)];

/// A datagram read by one of the shard's socket readers.
pub(crate) struct Datagram {
    pub socket: usize,
    pub from: SocketAddr,
    pub data: BytesMut,
}

#[derive(Default)]
struct LocalStream {
    video_cache: KeyframeCache,
    viewers: Vec<PeerId>,
    publisher: Option<PeerId>,
    last_keyframe_request: Option<Instant>,
    /// What the publisher sends, for viewers' bitrate caps.
    rate: RateMeter,
}

pub(crate) struct Shard {
    index: usize,
    shared: Arc<Shared>,
    sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
    peers: HashMap<PeerId, Peer>,
    demux: Demux,
    streams: HashMap<u64, LocalStream>,
    /// The peer being worked on, so a panic inside the WebRTC library costs that peer only.
    current: Option<PeerId>,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
    ) -> Self {
        Self {
            index,
            shared,
            sockets,
            peers: HashMap::new(),
            demux: Demux::default(),
            streams: HashMap::new(),
            current: None,
        }
    }

    /// Runs one unit of work; if the WebRTC library panics, the peer it was working on is
    /// dropped and the shard (with every other peer) carries on.
    fn guarded(&mut self, work: impl FnOnce(&mut Self)) {
        self.current = None;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self)));
        if outcome.is_err() {
            let culprit = self.current.take();
            tracing::error!(shard = self.index, peer = ?culprit, "panic in the WebRTC engine; dropping the peer");
            if let Some(id) = culprit {
                let now = Instant::now();
                let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.close_peer(id, "engine fault", now)
                }));
                if closed.is_err() {
                    // Closing panicked too: forget the peer without touching its connection.
                    self.peers.remove(&id);
                }
            }
        }
        self.current = None;
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut media: mpsc::Receiver<Arc<MediaPacket>>,
        mut datagrams: mpsc::Receiver<Datagram>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                Some(cmd) = commands.recv() => self.guarded(|s| s.on_command(cmd)),
                Some(d) = datagrams.recv() => {
                    let now = Instant::now();
                    self.guarded(|s| s.on_datagram(d, now));
                    for _ in 0..64 {
                        match datagrams.try_recv() {
                            Ok(d) => self.guarded(|s| s.on_datagram(d, now)),
                            Err(_) => break,
                        }
                    }
                }
                Some(p) = media.recv() => {
                    let now = Instant::now();
                    self.guarded(|s| s.on_media(&p, now));
                    for _ in 0..256 {
                        // One packet to every viewer takes milliseconds at hundreds of
                        // viewers: a joining viewer's ICE and DTLS (and an operator's command)
                        // go between packets, not after a whole keyframe's worth of them.
                        if !datagrams.is_empty() || !commands.is_empty() {
                            break;
                        }
                        match media.try_recv() {
                            Ok(p) => self.guarded(|s| s.on_media(&p, now)),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => self.guarded(|s| s.on_tick(Instant::now())),
                else => break,
            }
        }
        debug!(shard = self.index, "shard stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::AddPeer { id, peer } => {
                self.current = Some(id);
                self.demux.add_ufrag(&peer.local_ufrag, id);
                let local = self.streams.entry(peer.stream).or_default();
                match &peer.role {
                    Role::Publisher(_) => local.publisher = Some(id),
                    Role::Viewer(_) => local.viewers.push(id),
                }
                self.peers.insert(id, *peer);
                self.drain(id, now);
            }
            Command::Trickle {
                id,
                candidates,
                reply,
            } => {
                let result = match self.peers.get_mut(&id) {
                    None => Err("session ended".to_owned()),
                    Some(peer) => candidates
                        .into_iter()
                        .try_for_each(|c| peer.pc.add_remote_candidate(c))
                        .map_err(|e| e.to_string()),
                };
                let _ = reply.send(result);
                self.drain(id, now);
            }
            Command::Restart {
                id,
                ufrag,
                pwd,
                candidates,
                reply,
            } => {
                use super::restart::{Patched, is_current, restart_ice};
                let result = match self.peers.get_mut(&id) {
                    None => Err("session ended".to_owned()),
                    Some(peer) if is_current(peer, &ufrag, &pwd) => candidates
                        .into_iter()
                        .try_for_each(|c| peer.pc.add_remote_candidate(c))
                        .map(|()| Patched::Trickle)
                        .map_err(|e| e.to_string()),
                    Some(peer) => restart_ice(peer, &ufrag, &pwd, now)
                        .map(|(old, new, frag)| Patched::Restarted(old, new, frag)),
                };
                if let Ok(Patched::Restarted(old, new, _)) = &result {
                    self.demux.remove(old, &[], id);
                    self.demux.add_ufrag(new, id);
                }
                let _ = reply.send(result.map(|p| match p {
                    Patched::Trickle => None,
                    Patched::Restarted(_, _, frag) => Some(frag),
                }));
                self.drain(id, now);
            }
            Command::Close { id, reason } => self.close_peer(id, reason, now),
            Command::EndStream { stream } => {
                if let Some(local) = self.streams.get_mut(&stream) {
                    local.video_cache.clear();
                    let viewers = std::mem::take(&mut local.viewers);
                    for v in viewers {
                        self.close_peer(v, "stream ended", now);
                    }
                }
                if self
                    .streams
                    .get(&stream)
                    .is_some_and(|l| l.publisher.is_none())
                {
                    self.streams.remove(&stream);
                }
            }
            Command::Deliver { id, delivery } => self.set_delivery(id, delivery, now),
            Command::Stats { id, reply } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    let _ = reply.send(super::stats::collect(peer, now));
                }
            }
            Command::RequestKeyframe { stream } => {
                if let Some(id) = self.streams.get(&stream).and_then(|l| l.publisher)
                    && let Some(Peer {
                        role: Role::Publisher(p),
                        ..
                    }) = self.peers.get_mut(&id)
                {
                    p.keyframe_request_pending = true;
                    self.send_keyframe_request(id, now);
                }
            }
        }
    }

    fn on_datagram(&mut self, d: Datagram, now: Instant) {
        let Some(id) = self.demux.route(&d.data, d.from) else {
            self.shared.metrics.unroutable.increment(1);
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.demux.forget_addr(d.from);
            return;
        };
        if !peer.remote_addrs.contains(&d.from) {
            peer.remote_addrs.push(d.from);
        }
        peer.socket = Some(d.socket);
        peer.remote = Some(d.from);
        self.current = Some(id);
        let local_addr = self.sockets[d.socket].1;
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: d.from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d.data,
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            debug!(session = %peer.session, "dropped datagram: {e}");
        }
        if let Role::Viewer(v) = &mut peer.role
            && let Some(direct) = v.direct.as_mut()
        {
            direct.heard_from(d.from);
        }
        self.drain(id, now);
    }

    fn on_tick(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.current = Some(id);
            if let Some(peer) = self.peers.get_mut(&id)
                && let Err(e) = peer.pc.handle_timeout(now)
            {
                debug!(session = %peer.session, "timeout handling: {e}");
            }
            self.drain(id, now);
        }
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && now.duration_since(p.created) > CONNECT_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.close_peer(id, "never connected", now);
        }
        let pending: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.role, Role::Publisher(r) if r.keyframe_request_pending))
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            self.send_keyframe_request(id, now);
        }
        let clock = self.shared.streams.clock_ms(now);
        let silence = PUBLISHER_SILENCE.as_millis() as u64;
        let vanished: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                matches!(&p.role, Role::Publisher(r) if r.ice_disconnected
                    && clock.saturating_sub(r.last_media.load(Ordering::Relaxed)) >= silence)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in vanished {
            self.close_peer(id, "publisher gone (no ICE consent for 5 s, no media)", now);
        }
    }

    /// Delivers one publisher packet to this shard's viewers of its stream.
    fn on_media(&mut self, packet: &Arc<MediaPacket>, now: Instant) {
        let Some(local) = self.streams.get_mut(&packet.stream) else {
            // No viewers and no publisher here yet: remember the GOP for viewers to come.
            let mut local = LocalStream::default();
            if packet.kind == TrackKind::Video {
                local.video_cache.push(packet);
            }
            self.streams.insert(packet.stream, local);
            return;
        };
        if packet.kind == TrackKind::Video {
            local.video_cache.push(packet);
        }
        local.rate.add(packet.rtp.payload.len(), now);
        let stream_bps = local.rate.bps();
        let mut want_keyframe = false;
        for id in &local.viewers {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            self.current = Some(*id);
            want_keyframe |= deliver(peer, packet, stream_bps, now, &self.sockets, &self.shared);
            flush(peer, &self.sockets, &self.shared);
        }
        if want_keyframe {
            self.request_keyframe(packet.stream, now);
        }
    }

    fn request_keyframe(&mut self, stream: u64, now: Instant) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if local
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        local.last_keyframe_request = Some(now);
        match self.shared.streams.keyframe_route(stream) {
            Some(KeyframeRoute::Shard(shard)) => {
                if let Some(tx) = self.shared.commands.get(shard) {
                    let _ = tx.send(Command::RequestKeyframe { stream });
                }
            }
            Some(KeyframeRoute::Flag(flag)) => flag.store(true, Ordering::Relaxed),
            None => {}
        }
    }

    fn send_keyframe_request(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        if p.last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        if p.video_receiver.is_none()
            && let Some(ssrc) = p.ssrcs[TrackKind::Video.index()]
        {
            // No track event named the video receiver (some clients' tracks open late): find
            // it by kind, with the SSRC the media arrives on.
            let receivers: Vec<_> = peer.pc.get_receivers().collect();
            p.video_receiver = receivers
                .into_iter()
                .find(|r| {
                    peer.pc
                        .rtp_receiver(*r)
                        .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
                })
                .map(|r| (r, ssrc));
        }
        let Some((receiver, media_ssrc)) = p.video_receiver else {
            return;
        };
        p.keyframe_request_pending = false;
        p.last_keyframe_request = Some(now);
        p.keyframe_requests_sent += 1;
        if let Some(index) = p
            .tracks
            .iter()
            .position(|t| t.info.kind == TrackKind::Video)
            && let Some(counters) = p.counters.get(index)
        {
            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.keyframe_requested(&peer.session);
        if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match r.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => self.shared.metrics.plis_sent.increment(1),
                Err(e) => debug!(session = %peer.session, "PLI not sent: {e}"),
            }
        }
        flush(peer, &self.sockets, &self.shared);
    }

    /// Runs a peer's outputs dry: datagrams out, events and media handled, next timer noted.
    fn drain(&mut self, id: PeerId, now: Instant) {
        self.current = Some(id);
        let mut became_connected = false;
        let mut failed = None;
        let mut out_packets: Vec<Arc<MediaPacket>> = Vec::new();
        let mut keyframe_wanted = false;
        let mut nacks = 0u64;
        {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            flush(peer, &self.sockets, &self.shared);
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        debug!(session = %peer.session, %state, "connection state");
                        match state {
                            RTCPeerConnectionState::Connected if !peer.connected => {
                                peer.connected = true;
                                became_connected = true;
                            }
                            RTCPeerConnectionState::Failed => failed = Some("connection failed"),
                            // A publisher without ICE consent for 5 s may have dropped off the
                            // network; the tick ends it once its media has stopped too (see
                            // PUBLISHER_SILENCE), rather than after the 15 s failed timeout.
                            RTCPeerConnectionState::Disconnected => {
                                if let Role::Publisher(p) = &mut peer.role {
                                    p.ice_disconnected = true;
                                }
                            }
                            RTCPeerConnectionState::Connected => {
                                if let Role::Publisher(p) = &mut peer.role {
                                    p.ice_disconnected = false;
                                }
                            }
                            RTCPeerConnectionState::Closed => failed = Some("connection closed"),
                            _ => {}
                        }
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        let is_video = peer
                            .pc
                            .rtp_receiver(init.receiver_id)
                            .is_some_and(|r| r.track().kind() == RtpCodecKind::Video);
                        if let Role::Publisher(p) = &mut peer.role
                            && is_video
                            && p.video_receiver.is_none()
                        {
                            p.video_receiver = Some((init.receiver_id, init.ssrc));
                        }
                    }
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(_, rtp) => {
                        if let Role::Publisher(p) = &mut peer.role
                            && let Some(packet) = ingest(p, peer.stream, rtp, now, &self.shared)
                        {
                            out_packets.push(packet);
                        }
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        for p in &packets {
                            let any = p.as_any();
                            if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                                && let Role::Viewer(v) = &mut peer.role
                            {
                                let arrived = std::time::SystemTime::now();
                                for report in &rr.reports {
                                    if let Some(s) = super::rtt::sample(
                                        report.last_sender_report,
                                        report.delay,
                                        arrived,
                                    ) {
                                        v.rtt.update(s);
                                    }
                                }
                            }
                            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                                self.shared.metrics.plis_received.increment(1);
                                keyframe_wanted |= matches!(peer.role, Role::Viewer(_));
                                if let Role::Viewer(v) = &mut peer.role {
                                    v.keyframe_requests += 1;
                                }
                            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                self.shared.metrics.nacks_received.increment(1);
                                if let Role::Viewer(v) = &mut peer.role {
                                    v.nacks += 1;
                                }
                                resend(peer, nack, &self.sockets, &self.shared);
                                nacks += u64::from(matches!(peer.role, Role::Viewer(_)));
                            }
                        }
                    }
                    _ => {}
                }
            }
            flush(peer, &self.sockets, &self.shared);
            peer.next_timeout = peer.pc.poll_timeout();
        }
        let stream = self.peers.get(&id).map(|p| p.stream);
        for packet in out_packets {
            self.shared.fan_out(packet);
        }
        if became_connected {
            self.on_connected(id, now);
        }
        if keyframe_wanted && let Some(stream) = stream {
            self.request_keyframe(stream, now);
        }
        if nacks > 0
            && let Some(stream) = stream
        {
            // Rare (loss only): a registry lookup per NACK message is fine here.
            self.shared
                .streams
                .count_nacks(stream, TrackKind::Video, nacks);
        }
        if let Some(reason) = failed {
            self.close_peer(id, reason, now);
        }
    }

    fn on_connected(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        info!(session = %peer.session, stream = %peer.stream_name, "connected");
        self.shared.session_connected(&peer.session);
        if !matches!(peer.role, Role::Viewer(_)) {
            return;
        }
        let stream = peer.stream;
        if let Some(local) = self.streams.get(&stream) {
            // Replay the newest GOP so the first picture does not wait for the next keyframe.
            let stream_bps = local.rate.bps();
            for packet in local.video_cache.packets() {
                deliver(peer, packet, stream_bps, now, &self.sockets, &self.shared);
                flush(peer, &self.sockets, &self.shared);
            }
        }
        // A WebRTC publisher also gets one (rate-limited) request, so the picture is fresh.
        self.request_keyframe(stream, now);
    }

    /// Applies an operator's pause or cap. A resumed viewer starts again at the newest cached
    /// keyframe, numbering on from where it stopped.
    fn set_delivery(&mut self, id: PeerId, delivery: Delivery, now: Instant) {
        self.current = Some(id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Role::Viewer(v) = &mut peer.role else {
            return;
        };
        let resumed = v.delivery.settings.paused && !delivery.paused;
        v.delivery.settings = delivery;
        if !resumed || !peer.connected {
            return;
        }
        for (_, rewriter) in &mut v.tracks {
            rewriter.restart();
        }
        v.delivery.video_held = true;
        let stream = peer.stream;
        let mut want_keyframe = true;
        if let Some(local) = self.streams.get(&stream) {
            let stream_bps = local.rate.bps();
            for (i, packet) in local.video_cache.packets().enumerate() {
                let waits = deliver(peer, packet, stream_bps, now, &self.sockets, &self.shared);
                // A cache that starts with a keyframe serves the picture at once.
                if i == 0 {
                    want_keyframe = waits;
                }
                flush(peer, &self.sockets, &self.shared);
            }
        }
        if want_keyframe {
            self.request_keyframe(stream, now);
        }
    }

    fn close_peer(&mut self, id: PeerId, reason: &'static str, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        let _ = peer.pc.close();
        flush(&mut peer, &self.sockets, &self.shared);
        self.demux.remove(&peer.local_ufrag, &peer.remote_addrs, id);
        if let Some(local) = self.streams.get_mut(&peer.stream) {
            local.viewers.retain(|v| *v != id);
            if local.publisher == Some(id) {
                local.publisher = None;
            }
        }
        self.shared.forget_session(&peer.session);
        match peer.role {
            Role::Publisher(_) => {
                self.shared
                    .streams
                    .publisher_gone(&peer.stream_name, &peer.session, now);
                self.shared.metrics.publisher_left();
            }
            Role::Viewer(_) => {
                self.shared.streams.add_viewers(&peer.stream_name, -1);
                self.shared.metrics.viewer_left();
            }
        }
        info!(session = %peer.session, stream = %peer.stream_name, reason, "session ended");
    }
}

/// Turns a WebRTC publisher's RTP packet into the shared packet every viewer gets.
fn ingest(
    p: &mut super::peer::PublisherRole,
    stream: u64,
    rtp: rtc::rtp::Packet,
    now: Instant,
    shared: &Shared,
) -> Option<Arc<MediaPacket>> {
    let (index, track) = p
        .tracks
        .iter()
        .enumerate()
        .find(|(_, t)| t.payload_type == rtp.header.payload_type)?;
    let kind = track.info.kind;
    let ssrc = &mut p.ssrcs[kind.index()];
    if *ssrc.get_or_insert(rtp.header.ssrc) != rtp.header.ssrc {
        return None;
    }
    let source = super::ingest::Source {
        stream,
        epoch: p.epoch,
        counters: &p.counters[index],
        last_media: &p.last_media,
    };
    Some(source.packet(&track.info, rtp, now, shared))
}

/// Delivers one packet to a viewer as its pause and cap allow. Returns whether the viewer
/// waits for a keyframe (so one should be asked for).
fn deliver(
    peer: &mut Peer,
    packet: &Arc<MediaPacket>,
    stream_bps: u64,
    now: Instant,
    sockets: &Sockets,
    shared: &Shared,
) -> bool {
    let Role::Viewer(v) = &mut peer.role else {
        return false;
    };
    match v.delivery.admit(packet.kind, stream_bps) {
        Admit::Hold => return false,
        Admit::ResumeVideo => {
            for (track, rewriter) in &mut v.tracks {
                if track.kind == TrackKind::Video {
                    rewriter.restart();
                }
            }
        }
        Admit::Send => {}
    }
    forward(peer, packet, now, sockets, shared)
}

/// Writes one packet to a viewer, rewritten for it. Returns whether the viewer waits for a
/// keyframe (so one should be asked for).
fn forward(
    peer: &mut Peer,
    packet: &Arc<MediaPacket>,
    now: Instant,
    sockets: &Sockets,
    shared: &Shared,
) -> bool {
    let Role::Viewer(v) = &mut peer.role else {
        return false;
    };
    let Some((track, rewriter)) = v.tracks.iter_mut().find(|(t, _)| t.kind == packet.kind) else {
        return false;
    };
    let Some((seq, ts)) = rewriter.map(packet, now) else {
        return packet.kind == TrackKind::Video;
    };
    let rtp = for_viewer(packet, track, seq, ts);
    let sender = track.sender;
    if packet.kind == TrackKind::Video && !v.first_video_sent {
        v.first_video_sent = true;
        shared
            .metrics
            .join_seconds
            .record(now.duration_since(peer.created).as_secs_f64());
    }
    if let Some(direct) = v.direct.as_mut() {
        if direct.takes(packet.kind, now) {
            if send_direct(direct, &rtp, sockets, shared) && packet.kind == TrackKind::Video {
                direct.remember(seq, ts, packet);
            }
            return false;
        }
        direct.expect(packet.kind, &rtp);
    }
    match peer.pc.rtp_sender(sender) {
        Some(mut s) => {
            if let Err(e) = s.write_rtp(now, rtp) {
                v.write_drops += 1;
                shared.metrics.drops_write.increment(1);
                debug!(session = %peer.session, "write_rtp: {e}");
            }
        }
        None => {
            v.write_drops += 1;
            shared.metrics.drops_write.increment(1);
        }
    }
    false
}

/// `packet` as the viewer's track numbers it: its SSRC and payload type, the rewritten
/// sequence number and timestamp.
fn for_viewer(packet: &MediaPacket, track: &ViewerTrack, seq: u16, ts: u32) -> rtc::rtp::Packet {
    let mut rtp = packet.rtp.clone();
    rtp.header.ssrc = track.ssrc;
    rtp.header.payload_type = track.payload_type;
    rtp.header.sequence_number = seq;
    rtp.header.timestamp = ts;
    rtp
}

/// Seals and sends one packet on a viewer's direct path; whether it left.
fn send_direct(
    direct: &mut DirectPath,
    rtp: &rtc::rtp::Packet,
    sockets: &Sockets,
    shared: &Shared,
) -> bool {
    let Some((index, to, sealed)) = direct.seal(rtp) else {
        shared.metrics.drops_write.increment(1);
        return false;
    };
    let Some((socket, _)) = sockets.get(index) else {
        shared.metrics.drops_no_route.increment(1);
        return false;
    };
    match socket.try_send_to(&sealed, to) {
        Ok(n) => {
            shared.metrics.packets_out.increment(1);
            shared.metrics.bytes_out.increment(n as u64);
            direct.packets += 1;
            // As WebRTC statistics count bytes: payload only.
            direct.bytes += rtp.payload.len() as u64;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            shared.metrics.drops_socket_full.increment(1);
            // Kept for a NACK all the same: the viewer will ask for it.
            true
        }
        Err(e) => {
            shared.metrics.drops_send_error.increment(1);
            warn!("send to {to}: {e}");
            false
        }
    }
}

/// Answers a viewer's NACK for video sent on its direct path (rtc's responder only holds what
/// went through rtc, and answers that itself).
fn resend(peer: &mut Peer, nack: &TransportLayerNack, sockets: &Sockets, shared: &Shared) {
    let Role::Viewer(v) = &mut peer.role else {
        return;
    };
    let Some(direct) = v.direct.as_mut() else {
        return;
    };
    let Some((track, _)) = v.tracks.iter().find(|(t, _)| t.kind == TrackKind::Video) else {
        return;
    };
    if !direct.is_direct(TrackKind::Video) || nack.media_ssrc != track.ssrc {
        return;
    }
    for pair in &nack.nacks {
        for seq in pair.packet_list() {
            let Some((ts, packet)) = direct.recall(seq) else {
                continue;
            };
            let rtp = for_viewer(packet, track, seq, ts);
            if send_direct(direct, &rtp, sockets, shared) {
                shared.metrics.retransmits.increment(1);
            }
        }
    }
}

/// Sends everything the connection has queued, from the socket the peer last reached.
/// A full socket drops (and counts) instead of waiting: a slow viewer never stalls the shard.
fn flush(peer: &mut Peer, sockets: &Sockets, shared: &Shared) {
    while let Some(msg) = peer.pc.poll_write() {
        let index = sockets
            .iter()
            .position(|(_, a)| *a == msg.transport.local_addr)
            .or(peer.socket);
        if let Role::Viewer(v) = &mut peer.role
            && let Some(direct) = v.direct.as_mut()
            && let Some(i) = index
        {
            match direct.observe(i, msg.transport.peer_addr, &msg.message) {
                Some(Path::Direct) => shared.metrics.tracks_direct.increment(1),
                Some(Path::Rtc) => shared.metrics.tracks_rtc.increment(1),
                None => {}
            }
        }
        let Some((socket, _)) = index.and_then(|i| sockets.get(i)) else {
            shared.metrics.drops_no_route.increment(1);
            continue;
        };
        match socket.try_send_to(&msg.message, msg.transport.peer_addr) {
            Ok(n) => {
                shared.metrics.packets_out.increment(1);
                shared.metrics.bytes_out.increment(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                shared.metrics.drops_socket_full.increment(1);
            }
            Err(e) => {
                shared.metrics.drops_send_error.increment(1);
                warn!(session = %peer.session, "send to {}: {e}", msg.transport.peer_addr);
            }
        }
    }
}
