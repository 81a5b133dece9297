//! The FTL sockets: one task per control connection, one task that owns every stream's media
//! state and receives all media datagrams (streams are told apart by their declared SSRCs).

use super::control::{ControlChannel, ControlEvent};
use super::media::{Declared, MediaAction, MediaSession};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha512;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use waveguide_control::Engine;
use waveguide_control::engine::Ingest;
use waveguide_control::media::{Codec, CodecParams, TrackKind};
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::{IngestProtocol, TrackInfo};

/// A stream whose control channel or media is silent this long ends (the client pings every
/// 5 s and gives up after 30 s itself).
const SILENCE: Duration = Duration::from_secs(30);

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
}

impl Default for FtlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            media_port: 8085,
        }
    }
}

enum MediaCommand {
    Register {
        id: u64,
        declared: Declared,
        ingest: Ingest,
        ended: oneshot::Sender<&'static str>,
    },
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
        next_id += 1;
        let engine = Arc::clone(&engine);
        let cmd_tx = cmd_tx.clone();
        let id = next_id;
        let port = config.media_port;
        tokio::spawn(async move {
            match control_connection(stream, id, port, engine, cmd_tx.clone()).await {
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
    ingest: Ingest,
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
    let mut by_ssrc: HashMap<u32, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(cmd) = commands.recv() => match cmd {
                MediaCommand::Register { id, declared, ingest, ended } => {
                    for (ssrc, _) in [declared.video, declared.audio].into_iter().flatten() {
                        by_ssrc.insert(ssrc, id);
                    }
                    streams.insert(id, Registered {
                        media: MediaSession::new(declared),
                        ingest,
                        ended: Some(ended),
                        last_packet: Instant::now(),
                    });
                }
                MediaCommand::Unregister { id, clean } => {
                    if let Some(r) = streams.remove(&id) {
                        by_ssrc.retain(|_, v| *v != id);
                        if clean {
                            r.ingest.end();
                        }
                    }
                }
            },
            Some(d) = datagrams.recv() => {
                let Some(ssrc) = d.data.get(8..12).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { continue };
                let Some(r) = by_ssrc.get(&ssrc).and_then(|id| streams.get_mut(id)) else { continue };
                r.last_packet = Instant::now();
                for action in r.media.on_datagram(&d.data) {
                    match action {
                        MediaAction::Forward(kind, packet) => {
                            if r.ingest.send(kind, packet).is_err()
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
}

async fn control_connection(
    mut stream: TcpStream,
    id: u64,
    media_port: u16,
    engine: Arc<Engine>,
    media: mpsc::UnboundedSender<MediaCommand>,
) -> Result<&'static str, ConnectionError> {
    let remote = stream.peer_addr()?;
    let challenge: Vec<u8> = (0..128).map(|_| rand::random::<u8>()).collect();
    let mut channel = ControlChannel::new(challenge);
    let mut credentials: Option<(String, Option<String>)> = None;
    let (ended_tx, mut ended_rx) = oneshot::channel::<&'static str>();
    let mut ended_tx = Some(ended_tx);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::select! {
            r = tokio::time::timeout(SILENCE, stream.read(&mut buf)) => match r {
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
                    match authorize(&engine, ch, channel.challenge(), &hmac, remote).await {
                        Ok(c) => {
                            channel.accept();
                            credentials = Some(c);
                        }
                        Err(reason) => {
                            channel.reject();
                            stream.write_all(&channel.take_replies()).await?;
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
                    let request = PublishRequest {
                        stream: Some(&name),
                        key: key.as_deref(),
                        remote_addr: Some(remote),
                        ticket: None,
                    };
                    let ingest = engine
                        .start_ingest(request, IngestProtocol::Ftl, tracks)
                        .await
                        .map_err(|e| ConnectionError::Refused(e.to_string()))?;
                    info!(stream = %ingest.stream(), "FTL stream live");
                    if let Some(ended) = ended_tx.take() {
                        let _ = media.send(MediaCommand::Register {
                            id,
                            declared,
                            ingest,
                            ended,
                        });
                    }
                    channel.media_port(media_port);
                }
                ControlEvent::Ping => {}
                ControlEvent::Disconnect => {
                    let _ = media.send(MediaCommand::Unregister { id, clean: true });
                    stream.write_all(&channel.take_replies()).await?;
                    return Ok("client disconnected");
                }
            }
        }
        let replies = channel.take_replies();
        if !replies.is_empty() {
            stream.write_all(&replies).await?;
        }
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
