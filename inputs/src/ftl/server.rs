//! The FTL sockets: one task per control connection, one task that owns every stream's media
//! state and receives all media datagrams (streams are told apart by their declared SSRCs,
//! whose ownership and source address `routes` checks).
//!
//! A control connection counts against `max_connections` and `max_connections_per_ip` (closed
//! at accept past them) and has `connect_timeout_secs` from accept to `200 hi` for the whole
//! HMAC / CONNECT / attributes exchange. The key check runs before anything else is asked of
//! the Service; with a webhook Service the key itself comes from the webhook (FTL proves the
//! key with an HMAC, so it cannot be checked without it), so those lookups are limited to
//! [`MAX_KEY_LOOKUPS`] at once and to the connection's deadline.

use super::control::{ControlChannel, ControlEvent};
use super::media::{Declared, MediaAction, MediaSession};
use super::routes::{Collision, Routes, Verdict};
use crate::admission::{Admission, LogThrottle};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha512;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};
use waveguide_control::Engine;
use waveguide_control::engine::Ingest;
use waveguide_control::media::{Codec, CodecParams, TrackKind};
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::{IngestProtocol, TrackInfo};

/// A stream whose control channel or media is silent this long ends (the client pings every
/// 5 s and gives up after 30 s itself).
const SILENCE: Duration = Duration::from_secs(30);
/// Stream-key lookups (a webhook call with a webhook Service) in flight at once, before the
/// client's HMAC can be checked.
pub const MAX_KEY_LOOKUPS: usize = 16;

/// `[ftl]` in the edge config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtlConfig {
    /// Whether the FTL ports are opened.
    pub enabled: bool,
    /// Control channel address; `ftl_app` always connects to port 8084.
    pub listen: SocketAddr,
    /// UDP port media is sent to (announced in `200 hi. Use UDP port N`).
    pub media_port: u16,
    /// Control connections served at once; more are closed at accept.
    pub max_connections: NonZeroUsize,
    /// Control connections served at once from one client address (IPv6: one /64).
    pub max_connections_per_ip: NonZeroUsize,
    /// Seconds from accept until `200 hi. Use UDP port N`: the HMAC challenge, `CONNECT` and
    /// the attributes together, however slowly the bytes arrive.
    pub connect_timeout_secs: NonZeroU64,
}

impl Default for FtlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            media_port: 8085,
            max_connections: NonZeroUsize::new(512).expect("512 is not zero"),
            max_connections_per_ip: NonZeroUsize::new(8).expect("8 is not zero"),
            connect_timeout_secs: NonZeroU64::new(10).expect("10 is not zero"),
        }
    }
}

enum MediaCommand {
    /// The attributes are complete: claim the declared SSRCs for this session (media from
    /// `source` only), or say which collides.
    Claim {
        id: u64,
        stream: String,
        source: IpAddr,
        declared: Declared,
        ended: oneshot::Sender<&'static str>,
        answer: oneshot::Sender<Result<(), Collision>>,
    },
    /// The stream is live: media of this session goes to `ingest`.
    Attach { id: u64, ingest: Ingest },
    /// The control connection is gone; `clean` when the client said DISCONNECT (the stream
    /// ends now) rather than vanishing (viewers wait out the reconnect grace period).
    Unregister { id: u64, clean: bool },
}

struct Datagram {
    socket: usize,
    from: SocketAddr,
    data: Bytes,
}

/// Serves FTL until the process ends: control connections on `listener`, media on
/// `config.media_port` of every local address the control listener serves.
pub async fn serve(
    listener: TcpListener,
    config: FtlConfig,
    engine: Arc<Engine>,
) -> std::io::Result<()> {
    let ips = media_ips(config.listen.ip())?;
    let mut sockets = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(ip, config.media_port);
        let socket = UdpSocket::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("bind FTL media UDP {addr}: {e}"))
        })?;
        sockets.push(Arc::new(socket));
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (dgram_tx, dgram_rx) = mpsc::channel(4096);
    for (index, socket) in sockets.iter().enumerate() {
        tokio::spawn(read_media(Arc::clone(socket), index, dgram_tx.clone()));
    }
    tokio::spawn(media_owner(sockets, cmd_rx, dgram_rx));
    let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
    let connect_timeout = Duration::from_secs(config.connect_timeout_secs.get());
    let lookups = Arc::new(Semaphore::new(MAX_KEY_LOOKUPS));
    let mut refusals = LogThrottle::new(Duration::from_secs(10));
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("FTL accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics::counter!(
                    "waveguide_ingest_refused_total",
                    "protocol" => "ftl",
                    "cause" => refusal.cause()
                )
                .increment(1);
                if let Some(more) = refusals.allow(Instant::now()) {
                    warn!(%peer, "FTL: {refusal}; refusing (and {more} more since the last line)");
                }
                continue;
            }
        };
        next_id += 1;
        let connection = ControlConnection {
            id: next_id,
            media_port: config.media_port,
            deadline: Instant::now() + connect_timeout,
            connect_timeout,
            engine: Arc::clone(&engine),
            media: cmd_tx.clone(),
            lookups: Arc::clone(&lookups),
        };
        let cmd_tx = cmd_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let id = connection.id;
            match connection.run(stream).await {
                Ok(reason) => info!(%peer, reason, "FTL connection closed"),
                Err(e) => warn!(%peer, "FTL connection closed: {e}"),
            }
            let _ = cmd_tx.send(MediaCommand::Unregister { id, clean: false });
        });
    }
}

fn media_ips(listen: IpAddr) -> std::io::Result<Vec<IpAddr>> {
    if !listen.is_unspecified() {
        return Ok(vec![listen]);
    }
    // One socket per local address, so echoes and NACKs leave from the address the client
    // sends to (a client with a connected UDP socket drops anything else).
    waveguide_control::engine::local_ipv4_addresses()
}

async fn read_media(socket: Arc<UdpSocket>, index: usize, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let d = Datagram {
                    socket: index,
                    from,
                    data: Bytes::copy_from_slice(&buf[..n]),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(d) {
                    return;
                }
            }
            Err(e) => debug!("FTL media receive: {e}"),
        }
    }
}

struct Registered {
    media: MediaSession,
    /// `None` until the engine has started the stream.
    ingest: Option<Ingest>,
    ended: Option<oneshot::Sender<&'static str>>,
    last_packet: Instant,
}

/// Owns every FTL stream's media state; nothing else touches it.
async fn media_owner(
    sockets: Vec<Arc<UdpSocket>>,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
    mut datagrams: mpsc::Receiver<Datagram>,
) {
    let mut streams: HashMap<u64, Registered> = HashMap::new();
    let mut routes = Routes::default();
    let foreign = metrics::counter!("waveguide_drops_total", "cause" => "ftl_foreign_source");
    let mut foreign_log = LogThrottle::new(Duration::from_secs(10));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(cmd) = commands.recv() => match cmd {
                MediaCommand::Claim { id, stream, source, declared, ended, answer } => {
                    let ssrcs: Vec<_> = [
                        declared.video.map(|(ssrc, _)| (ssrc, TrackKind::Video)),
                        declared.audio.map(|(ssrc, _)| (ssrc, TrackKind::Audio)),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    match routes.claim(id, &stream, source, &ssrcs) {
                        Ok(replaced) => {
                            for old in replaced {
                                if let Some(mut r) = streams.remove(&old)
                                    && let Some(tx) = r.ended.take()
                                {
                                    let _ = tx.send("a new connection took over the stream");
                                }
                            }
                            streams.insert(id, Registered {
                                media: MediaSession::new(declared),
                                ingest: None,
                                ended: Some(ended),
                                last_packet: Instant::now(),
                            });
                            let _ = answer.send(Ok(()));
                        }
                        Err(collision) => {
                            let _ = answer.send(Err(collision));
                        }
                    }
                }
                MediaCommand::Attach { id, ingest } => {
                    if let Some(r) = streams.get_mut(&id) {
                        r.ingest = Some(ingest);
                        r.last_packet = Instant::now();
                    }
                }
                MediaCommand::Unregister { id, clean } => {
                    routes.release(id);
                    if let Some(r) = streams.remove(&id)
                        && clean
                        && let Some(ingest) = r.ingest
                    {
                        ingest.end();
                    }
                }
            },
            Some(d) = datagrams.recv() => {
                let Some(ssrc) = d.data.get(8..12).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { continue };
                let id = match routes.route(ssrc, d.from) {
                    Verdict::Session(id) => id,
                    Verdict::Unknown => continue,
                    Verdict::Foreign(id) => {
                        foreign.increment(1);
                        if let Some(more) = foreign_log.allow(Instant::now()) {
                            debug!(from = %d.from, ssrc, session = id, "FTL media from an address other than the publisher's dropped (and {more} more since the last line)");
                        }
                        continue;
                    }
                };
                let Some(r) = streams.get_mut(&id) else { continue };
                let Some(ingest) = &r.ingest else { continue };
                r.last_packet = Instant::now();
                for action in r.media.on_datagram(&d.data) {
                    match action {
                        MediaAction::Forward(kind, packet) => {
                            if ingest.send(kind, packet).is_err()
                                && let Some(tx) = r.ended.take()
                            {
                                let _ = tx.send("another publisher took the stream");
                            }
                        }
                        MediaAction::Reply(bytes) => {
                            if let Some(s) = sockets.get(d.socket) {
                                let _ = s.try_send_to(&bytes, d.from);
                            }
                        }
                        MediaAction::Ignore => {}
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for r in streams.values_mut() {
                    if now.duration_since(r.last_packet) > SILENCE
                        && let Some(tx) = r.ended.take()
                    {
                        let _ = tx.send("media silent for 30 s");
                    }
                }
            }
            else => return,
        }
    }
}

/// Why a control connection failed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] super::control::ControlError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no `200 hi` within {0:?} of connecting")]
    Deadline(Duration),
    #[error("refused: {0}")]
    Collision(#[from] Collision),
}

/// One control connection, from accept to its end.
struct ControlConnection {
    id: u64,
    media_port: u16,
    /// Until the attributes are accepted, every read, write and Service call ends by then.
    deadline: Instant,
    connect_timeout: Duration,
    engine: Arc<Engine>,
    media: mpsc::UnboundedSender<MediaCommand>,
    lookups: Arc<Semaphore>,
}

impl ControlConnection {
    /// Runs `step` until the connect deadline.
    async fn before_deadline<T>(
        &self,
        step: impl std::future::Future<Output = T>,
    ) -> Result<T, ConnectionError> {
        tokio::time::timeout_at(self.deadline.into(), step)
            .await
            .map_err(|_| ConnectionError::Deadline(self.connect_timeout))
    }

    async fn run(self, mut stream: TcpStream) -> Result<&'static str, ConnectionError> {
        let remote = stream.peer_addr()?;
        let challenge: Vec<u8> = (0..128).map(|_| rand::random::<u8>()).collect();
        let mut channel = ControlChannel::new(challenge);
        let mut credentials: Option<(String, Option<String>)> = None;
        let (ended_tx, mut ended_rx) = oneshot::channel::<&'static str>();
        let mut ended_tx = Some(ended_tx);
        let mut live = false;
        let mut buf = vec![0u8; 4096];
        loop {
            let silent = Instant::now() + SILENCE;
            let until = if live {
                silent
            } else {
                silent.min(self.deadline)
            };
            let n = tokio::select! {
                r = tokio::time::timeout_at(until.into(), stream.read(&mut buf)) => match r {
                    Err(_) if until < silent => {
                        return Err(ConnectionError::Deadline(self.connect_timeout));
                    }
                    Err(_) => return Ok("control channel silent for 30 s"),
                    Ok(r) => r?,
                },
                reason = &mut ended_rx => return Ok(reason.unwrap_or("media ended")),
            };
            if n == 0 {
                return Ok("client closed the control channel");
            }
            let events = channel.feed(&buf[..n])?;
            for event in events {
                match event {
                    ControlEvent::Connect { channel: ch, hmac } => {
                        let permit = self
                            .before_deadline(self.lookups.acquire())
                            .await?
                            .map_err(|_| ConnectionError::Refused("shutting down".into()))?;
                        let checked = self
                            .before_deadline(authorize(
                                &self.engine,
                                ch,
                                channel.challenge(),
                                &hmac,
                                remote,
                            ))
                            .await?;
                        drop(permit);
                        match checked {
                            Ok(c) => {
                                channel.accept();
                                credentials = Some(c);
                            }
                            Err(reason) => {
                                channel.reject();
                                self.write(&mut stream, &channel.take_replies(), live)
                                    .await?;
                                return Err(ConnectionError::Refused(reason));
                            }
                        }
                    }
                    ControlEvent::Ready => {
                        let (name, key) = credentials.clone().ok_or_else(|| {
                            ConnectionError::Refused("attributes before CONNECT".into())
                        })?;
                        let (declared, tracks) = declared_tracks(&channel);
                        if tracks.is_empty() {
                            return Err(ConnectionError::Refused(
                                "no H264 video or Opus audio declared".into(),
                            ));
                        }
                        let Some(ended) = ended_tx.take() else {
                            return Err(ConnectionError::Refused("attributes twice".into()));
                        };
                        let (answer, claimed) = oneshot::channel();
                        let _ = self.media.send(MediaCommand::Claim {
                            id: self.id,
                            stream: name.clone(),
                            source: remote.ip(),
                            declared,
                            ended,
                            answer,
                        });
                        if let Ok(Err(collision)) = claimed.await {
                            channel.refuse(collision.reply_code());
                            self.write(&mut stream, &channel.take_replies(), live)
                                .await?;
                            return Err(collision.into());
                        }
                        let request = PublishRequest {
                            stream: Some(&name),
                            key: key.as_deref(),
                            remote_addr: Some(remote),
                            ticket: None,
                        };
                        let ingest = self
                            .before_deadline(self.engine.start_ingest(
                                request,
                                IngestProtocol::Ftl,
                                tracks,
                            ))
                            .await?
                            .map_err(|e| ConnectionError::Refused(e.to_string()))?;
                        info!(stream = %ingest.stream(), "FTL stream live");
                        let _ = self.media.send(MediaCommand::Attach {
                            id: self.id,
                            ingest,
                        });
                        channel.media_port(self.media_port);
                        self.write(&mut stream, &channel.take_replies(), live)
                            .await?;
                        live = true;
                    }
                    ControlEvent::Ping => {}
                    ControlEvent::Disconnect => {
                        let _ = self.media.send(MediaCommand::Unregister {
                            id: self.id,
                            clean: true,
                        });
                        self.write(&mut stream, &channel.take_replies(), live)
                            .await?;
                        return Ok("client disconnected");
                    }
                }
            }
            let replies = channel.take_replies();
            if !replies.is_empty() {
                self.write(&mut stream, &replies, live).await?;
            }
        }
    }

    /// Writes `bytes`; before the connection is live, within the connect deadline.
    async fn write(
        &self,
        stream: &mut TcpStream,
        bytes: &[u8],
        live: bool,
    ) -> Result<(), ConnectionError> {
        if live {
            stream.write_all(bytes).await?;
        } else {
            self.before_deadline(stream.write_all(bytes)).await??;
        }
        Ok(())
    }
}

/// The stream name and key for `channel`, if the client's HMAC proves the key; `Err` with
/// the reason otherwise.
async fn authorize(
    engine: &Engine,
    channel: u32,
    challenge: &[u8],
    hmac: &[u8],
    remote: SocketAddr,
) -> Result<(String, Option<String>), String> {
    let found = engine
        .service()
        .ftl_channel(channel, Some(remote))
        .await
        .map_err(|e| e.to_string())?;
    let Some((name, key)) = found else {
        // Open Service: any client publishes, named by its channel.
        return Ok((channel.to_string(), None));
    };
    let mut mac = Hmac::<Sha512>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(challenge);
    // `verify_slice` compares in constant time.
    mac.verify_slice(hmac)
        .map_err(|_| format!("bad key for channel {channel}"))?;
    Ok((name, Some(key)))
}

fn declared_tracks(channel: &ControlChannel) -> (Declared, Vec<TrackInfo>) {
    let flag = |k: &str| {
        channel
            .attribute(k)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let num = |k: &str| channel.attribute(k).and_then(|v| v.parse::<u32>().ok());
    let mut tracks = Vec::new();
    let mut declared = Declared {
        video: None,
        audio: None,
    };
    if flag("Audio")
        && channel
            .attribute("AudioCodec")
            .is_some_and(|c| c.eq_ignore_ascii_case("OPUS"))
        && let Some(ssrc) = num("AudioIngestSSRC")
    {
        let pt = num("AudioPayloadType").unwrap_or(97) as u8;
        declared.audio = Some((ssrc, pt));
        tracks.push(TrackInfo {
            kind: TrackKind::Audio,
            codec: CodecParams {
                codec: Codec::Opus,
                fmtp: "minptime=10;useinbandfec=1".into(),
                channels: 2,
            },
        });
    }
    if flag("Video")
        && channel
            .attribute("VideoCodec")
            .is_some_and(|c| c.eq_ignore_ascii_case("H264"))
        && let Some(ssrc) = num("VideoIngestSSRC")
    {
        let pt = num("VideoPayloadType").unwrap_or(96) as u8;
        declared.video = Some((ssrc, pt));
        tracks.push(TrackInfo {
            kind: TrackKind::Video,
            codec: CodecParams {
                codec: Codec::H264,
                // FTL does not announce the profile; browsers decode any profile once the SPS
                // arrives, so offer the one every browser has.
                fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                    .into(),
                channels: 0,
            },
        });
    }
    (declared, tracks)
}
