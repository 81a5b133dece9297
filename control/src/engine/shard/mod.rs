//! A shard: one task that owns its UDP sockets and every peer connection on them, and delivers
//! each publisher packet to its own viewers. Packets reach a shard once, whatever the number
//! of viewers on it; nothing here takes a lock per packet.

mod connection;
mod media;

use super::Shared;
use super::delivery::{Delivery, RateMeter, SessionStats};
use super::demux::{Demux, local_pwd};
use super::peer::{Peer, PeerId, Role};
use super::saturation::LoadMeter;
use super::send::{Egress, Tally};
use super::trickle::PatchRefused;
use crate::media::{KeyframeCache, MediaPacket};
use bytes::BytesMut;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;
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
/// A peer that has not connected after this long is dropped. ICE and DTLS take well under a
/// second on a working path (a few with a TURN relay far away); a session that never connects
/// holds a peer and a viewer slot until then (see `pending.rs`).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
        /// Whether the candidates fit under the session's cap as a trickle (`trickle.rs`); a
        /// restart clears the agent's remote candidates, so there they always fit.
        trickle_fits: bool,
        reply: oneshot::Sender<Result<Option<String>, PatchRefused>>,
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

/// A datagram read by one of the shard's socket readers.
pub(crate) struct Datagram {
    pub socket: usize,
    pub from: SocketAddr,
    pub data: BytesMut,
    /// When the socket reader took it off the socket: a publisher's media counts its age from
    /// here, so time spent waiting for a busy shard counts against the delay bound too.
    pub at: Instant,
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
    out: Egress,
    peers: HashMap<PeerId, Peer>,
    demux: Demux,
    streams: HashMap<u64, LocalStream>,
    /// The peer being worked on, so a panic inside the WebRTC library costs that peer only.
    current: Option<PeerId>,
    meter: LoadMeter,
    gauges: ShardGauges,
    was_saturated: bool,
    /// Arrival time of the datagram being handled (see [`Datagram::at`]).
    arrived: Option<Instant>,
    /// Give each packet a copy of its own on this shard (set when there are several shards):
    /// every viewer's send touches the packet's reference counts, and a count that the shards
    /// share is a cache line moving between their cores for each viewer.
    local_copy: bool,
}

/// How a shard is run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardSettings {
    /// Packets older than this are not sent (`[viewers] max_delay_ms`).
    pub max_delay: Duration,
    /// Packets a second past which the shard counts as saturated (`[webrtc] shard_max_pps`).
    pub max_pps: u64,
    /// Whether the node has more than one shard.
    pub several: bool,
}

/// The shard's own gauges, set once per load window.
struct ShardGauges {
    busy: ::metrics::Gauge,
    lag: ::metrics::Gauge,
    saturated: ::metrics::Gauge,
    /// Remote addresses the shard's demultiplexer has learned.
    demux_addresses: ::metrics::Gauge,
}

impl ShardGauges {
    fn new(index: usize) -> Self {
        let shard = index.to_string();
        Self {
            busy: ::metrics::gauge!("waveguide_shard_busy_ratio", "shard" => shard.clone()),
            lag: ::metrics::gauge!("waveguide_shard_lag_seconds", "shard" => shard.clone()),
            saturated: ::metrics::gauge!("waveguide_shard_saturated", "shard" => shard.clone()),
            demux_addresses: ::metrics::gauge!("waveguide_demux_addresses", "shard" => shard),
        }
    }
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
        settings: ShardSettings,
    ) -> Self {
        Self {
            index,
            out: Egress {
                sockets,
                tally: Tally::default(),
                shared,
            },
            peers: HashMap::new(),
            demux: Demux::new(),
            streams: HashMap::new(),
            current: None,
            meter: LoadMeter::new(settings.max_delay, settings.max_pps, Instant::now()),
            gauges: ShardGauges::new(index),
            was_saturated: false,
            arrived: None,
            local_copy: settings.several,
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
                Some(cmd) = commands.recv() => {
                    let started = Instant::now();
                    self.guarded(|s| s.on_command(cmd));
                    self.meter.worked(started.elapsed());
                }
                Some(d) = datagrams.recv() => {
                    let now = Instant::now();
                    self.guarded(|s| s.on_datagram(d, now));
                    for _ in 0..64 {
                        match datagrams.try_recv() {
                            Ok(d) => self.guarded(|s| s.on_datagram(d, now)),
                            Err(_) => break,
                        }
                    }
                    self.meter.worked(now.elapsed());
                }
                Some(p) = media.recv() => {
                    let started = Instant::now();
                    self.guarded(|s| s.on_media(&p, started));
                    for _ in 0..256 {
                        // One packet to every viewer takes milliseconds at hundreds of
                        // viewers: a joining viewer's ICE and DTLS (and an operator's command)
                        // go between packets, not after a whole keyframe's worth of them.
                        if !datagrams.is_empty() || !commands.is_empty() {
                            break;
                        }
                        match media.try_recv() {
                            // Each packet's own time: its age decides whether it is sent.
                            Ok(p) => self.guarded(|s| s.on_media(&p, Instant::now())),
                            Err(_) => break,
                        }
                    }
                    self.meter.worked(started.elapsed());
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.guarded(|s| s.on_tick(now));
                    self.meter.worked(now.elapsed());
                    self.account(Instant::now());
                }
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
                let pwd = peer.pc.local_description().and_then(|d| local_pwd(&d.sdp));
                self.demux
                    .add_ufrag(&peer.local_ufrag, pwd.as_deref().unwrap_or_default(), id);
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
                trickle_fits,
                reply,
            } => {
                use super::restart::{Patched, is_current, restart_ice};
                let result = match self.peers.get_mut(&id) {
                    None => Err(PatchRefused::Ended),
                    Some(peer) if is_current(peer, &ufrag, &pwd) && !trickle_fits => {
                        Err(PatchRefused::TooManyCandidates)
                    }
                    Some(peer) if is_current(peer, &ufrag, &pwd) => candidates
                        .into_iter()
                        .try_for_each(|c| peer.pc.add_remote_candidate(c))
                        .map(|()| Patched::Trickle)
                        .map_err(|e| PatchRefused::Invalid(e.to_string())),
                    Some(peer) => restart_ice(peer, &ufrag, &pwd, now)
                        .map(|(old, new, frag)| Patched::Restarted(old, new, frag))
                        .map_err(PatchRefused::Invalid),
                };
                if let Ok(Patched::Restarted(old, new, _)) = &result {
                    let pwd = self
                        .peers
                        .get(&id)
                        .and_then(|p| p.pc.local_description())
                        .and_then(|d| local_pwd(&d.sdp));
                    self.demux.remove_ufrag(old);
                    self.demux
                        .add_ufrag(new, pwd.as_deref().unwrap_or_default(), id);
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
        let clock = self.out.shared.streams.clock_ms(now);
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

    /// Once per tick: what was sent goes into the node's counters and the load window; a closed
    /// window publishes the shard's load.
    fn account(&mut self, now: Instant) {
        let (packets, bytes) = self.out.tally.take();
        if packets > 0 {
            self.out.metrics.packets_out.increment(packets);
            self.out.metrics.bytes_out.increment(bytes);
            self.meter.sent(packets);
        }
        let load = &self.out.loads[self.index];
        if let Some(verdict) = self.meter.tick(now, load) {
            self.gauges
                .demux_addresses
                .set(self.demux.addresses() as f64);
            self.gauges.busy.set(verdict.busy);
            self.gauges.lag.set(verdict.lag.as_secs_f64());
            self.gauges
                .saturated
                .set(f64::from(u8::from(verdict.saturated)));
            if verdict.saturated != self.was_saturated {
                self.was_saturated = verdict.saturated;
                if verdict.saturated {
                    warn!(
                        shard = self.index,
                        busy = verdict.busy,
                        lag_ms = verdict.lag.as_millis() as u64,
                        stale = verdict.stale,
                        packets_per_sec = verdict.packets_per_sec as u64,
                        "shard saturated: new viewers go to other shards or are refused"
                    );
                } else {
                    info!(
                        shard = self.index,
                        busy = verdict.busy,
                        "shard keeps up again"
                    );
                }
            }
        }
    }
}
