//! The RTMP listener: accepts TCP connections and drives one [`Session`] and one [`Publisher`]
//! per connection, handing their RTP packets to the control's `Ingest`.
//!
//! The only part of RTMP that owns sockets and clocks. Each connection is its own task; a
//! connection that sends garbage, stalls, or breaks a limit ends with one log line and touches
//! nothing else. Stream keys are never logged.
//!
//! Before its key is accepted a connection is cheap to hold: it counts against
//! `max_connections` and `max_connections_per_ip` (refused at accept past them), it has
//! `publish_timeout_secs` from accept to an accepted `publish` however it trickles its bytes,
//! and the session keeps its messages to 64 KiB until then.

use super::config::RtmpConfig;
use super::error::{MediaError, RtmpError};
use super::handshake::RANDOM_LEN;
use super::publisher::{Notice, Publisher};
use super::session::{Event, Session, SessionConfig};
use super::video::BFrames;
use crate::admission::{Admission, LogThrottle};
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};
use waveguide_control::engine::Ingest;
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::IngestProtocol;
use waveguide_control::{Engine, Error as ControlError};

/// A connection that sends nothing for this long is closed (publishers send media and
/// acknowledgements continuously).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time from an accepted `publish` until the sequence headers must have arrived.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a write to the client may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer.
const READ_BUFFER: usize = 64 * 1024;

/// Why a connection ended, for its log line.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Protocol(#[from] RtmpError),
    #[error("{0}")]
    Media(#[from] MediaError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data for {0:?}")]
    Timeout(Duration),
    #[error("no accepted publish within {0:?} of connecting")]
    NotPublishing(Duration),
    #[error("publish refused: {0}")]
    Refused(ControlError),
    #[error("no sequence header within {0:?} of publish")]
    NoHeaders(Duration),
    #[error("a newer publisher took the stream over")]
    TakenOver,
}

/// Accepts RTMP publishers on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: RtmpConfig, engine: Arc<Engine>) {
    let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
    let publish_timeout = config.publish_timeout();
    let mut refusals = LogThrottle::new(Duration::from_secs(10));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!("RTMP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics::counter!(
                    "waveguide_ingest_refused_total",
                    "protocol" => "rtmp",
                    "cause" => refusal.cause()
                )
                .increment(1);
                if let Some(more) = refusals.allow(Instant::now()) {
                    warn!(%peer, "RTMP: {refusal}; refusing (and {more} more since the last line)");
                }
                continue;
            }
        };
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            let deadline = Instant::now() + publish_timeout;
            let mut connection = Connection::new(engine, peer, deadline, publish_timeout);
            let result = connection.run(socket).await;
            let stream = connection.stream.as_deref().unwrap_or("-");
            match result {
                Ok(()) => info!(%peer, %stream, "RTMP connection closed"),
                Err(e) => warn!(%peer, %stream, "RTMP connection closed: {e}"),
            }
        });
    }
}

struct Connection {
    engine: Arc<Engine>,
    peer: SocketAddr,
    /// Until a `publish` is accepted, every read, write and key check ends by then.
    deadline: Instant,
    publish_timeout: Duration,
    /// Whether a `publish` was accepted (the deadline no longer applies).
    authorized: bool,
    session: Session,
    publisher: Option<Publisher>,
    /// The key of the accepted `publish` (kept for `start_ingest`; never logged).
    key: Option<String>,
    /// The public stream name the key resolved to.
    stream: Option<String>,
    accepted_at: Option<Instant>,
    ingest: Option<Ingest>,
    packets: Vec<super::publisher::Outgoing>,
    /// Notices for the stream's REST status, held until the stream exists.
    notices: Vec<&'static str>,
}

impl Connection {
    fn new(
        engine: Arc<Engine>,
        peer: SocketAddr,
        deadline: Instant,
        publish_timeout: Duration,
    ) -> Self {
        let mut random = Box::new([0u8; RANDOM_LEN]);
        rand::rng().fill_bytes(&mut random[..]);
        Self {
            engine,
            peer,
            deadline,
            publish_timeout,
            authorized: false,
            session: Session::new(SessionConfig::default(), 0, random),
            publisher: None,
            key: None,
            stream: None,
            accepted_at: None,
            ingest: None,
            notices: Vec::new(),
            packets: Vec::new(),
        }
    }

    /// When an I/O step allowed `limit` must end: `limit` from now, and never past the
    /// publish deadline while the key is not accepted.
    fn step_deadline(&self, limit: Duration) -> (tokio::time::Instant, ConnectionError) {
        let step = Instant::now() + limit;
        if !self.authorized && self.deadline < step {
            (
                self.deadline.into(),
                ConnectionError::NotPublishing(self.publish_timeout),
            )
        } else {
            (step.into(), ConnectionError::Timeout(limit))
        }
    }

    async fn run(&mut self, mut socket: TcpStream) -> Result<(), ConnectionError> {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let (until, late) = self.step_deadline(IDLE_TIMEOUT);
            let n = match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
                Err(_) => return Err(late),
                Ok(result) => result?,
            };
            if n == 0 {
                return Ok(());
            }
            let received = self.session.receive(&buf[..n]);
            let handled = self.handle_events().await;
            // Flush first: a refusal or farewell goes out before the connection closes.
            self.flush(&mut socket).await?;
            received?;
            handled?;
            if self.session.should_close() {
                return Ok(());
            }
            if let Some(at) = self.accepted_at
                && self.ingest.is_none()
                && at.elapsed() > START_TIMEOUT
            {
                return Err(ConnectionError::NoHeaders(START_TIMEOUT));
            }
        }
    }

    async fn flush(&mut self, socket: &mut TcpStream) -> Result<(), ConnectionError> {
        while let Some(bytes) = self.session.take_output() {
            let (until, late) = self.step_deadline(WRITE_TIMEOUT);
            match tokio::time::timeout_at(until, socket.write_all(&bytes)).await {
                Err(_) => return Err(late),
                Ok(result) => result?,
            }
        }
        Ok(())
    }

    async fn handle_events(&mut self) -> Result<(), ConnectionError> {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Connected => debug!(peer = %self.peer, "RTMP connect"),
                Event::Publish { key } => self.on_publish(key).await?,
                Event::Metadata(meta) => {
                    info!(
                        peer = %self.peer,
                        stream = self.stream.as_deref().unwrap_or("-"),
                        encoder = meta.encoder.as_deref().unwrap_or("?"),
                        size = ?meta.size,
                        fps = ?meta.framerate,
                        video = meta.video_codec.as_deref().unwrap_or("none"),
                        audio = meta.audio_codec.as_deref().unwrap_or("none"),
                        "RTMP metadata"
                    );
                    if let Some(p) = &mut self.publisher {
                        p.on_metadata(&meta);
                    }
                }
                Event::Video { timestamp, payload } => {
                    if let Some(p) = &mut self.publisher {
                        p.on_video(timestamp, payload, &mut self.packets)?;
                    }
                    self.after_media().await?;
                }
                Event::Audio { timestamp, payload } => {
                    if let Some(p) = &mut self.publisher {
                        // Nothing to transcode for while no WebRTC viewer watches.
                        p.set_audio_wanted(
                            self.ingest.as_ref().is_none_or(Ingest::has_webrtc_viewers),
                        );
                        p.on_audio(timestamp, payload, &mut self.packets)?;
                    }
                    self.after_media().await?;
                }
                Event::Unpublish => {
                    info!(peer = %self.peer, stream = self.stream.as_deref().unwrap_or("-"), "RTMP unpublish");
                    // The publisher said goodbye: the stream ends now, no reconnect grace.
                    if let Some(ingest) = self.ingest.take() {
                        ingest.end();
                    }
                    self.publisher = None;
                    self.accepted_at = None;
                }
            }
        }
        Ok(())
    }

    async fn on_publish(&mut self, key: String) -> Result<(), ConnectionError> {
        let request = PublishRequest {
            stream: None,
            key: Some(&key),
            remote_addr: Some(self.peer),
            ticket: None,
        };
        let check = self
            .engine
            .service()
            .authorize_publish(IngestProtocol::Rtmp, request);
        let authorized = match tokio::time::timeout_at(self.deadline.into(), check).await {
            Ok(answer) => answer,
            Err(_) => {
                self.session.reject_publish(
                    "NetStream.Publish.BadName",
                    "the stream key check took too long",
                );
                return Err(ConnectionError::NotPublishing(self.publish_timeout));
            }
        };
        match authorized {
            Ok(stream) => {
                info!(peer = %self.peer, %stream, "RTMP publish accepted");
                self.authorized = true;
                self.session.accept_publish();
                let mut rng = rand::rng();
                self.publisher = Some(Publisher::new(
                    rng.next_u32(),
                    rng.next_u32(),
                    (rng.next_u32() as u16, rng.next_u32() as u16),
                ));
                self.stream = Some(stream);
                self.key = Some(key);
                self.accepted_at = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                self.session
                    .reject_publish("NetStream.Publish.BadName", &refusal_text(&e));
                Err(ConnectionError::Refused(e))
            }
        }
    }

    /// Starts the stream once the tracks are known, then sends what the media produced.
    async fn after_media(&mut self) -> Result<(), ConnectionError> {
        let Some(publisher) = &mut self.publisher else {
            return Ok(());
        };
        for notice in publisher.take_notices() {
            let stream = self.stream.as_deref().unwrap_or("-");
            self.notices.push(match &notice {
                Notice::BFrames(BFrames::Dropped) => {
                    "publisher sends B-frames: dropped for WebRTC viewers (lower frame rate), kept in LL-HLS; set bframes=0"
                }
                Notice::BFrames(BFrames::Forwarded) => {
                    "publisher sends B-frames with multiple references: browsers stall; set bframes=0 or ref=1"
                }
                Notice::VideoConfigChanged => "publisher changed H.264 parameters mid-stream",
                Notice::LateTrack(_) => "a track started after the stream; it is dropped",
            });
            match notice {
                Notice::BFrames(BFrames::Dropped) => warn!(
                    peer = %self.peer, %stream,
                    "RTMP publisher sends B-frames, which browsers cannot decode over WebRTC: \
                     dropping them, so viewers get the I/P frames only (a third of the frame \
                     rate for bframes=2). Set the encoder to bframes=0 for full frame rate"
                ),
                Notice::BFrames(BFrames::Forwarded) => warn!(
                    peer = %self.peer, %stream,
                    "RTMP publisher sends B-frames that its P-frames predict from (several \
                     reference frames), so they cannot be dropped: Chromium viewers will see \
                     about one picture per keyframe interval. Set the encoder to bframes=0 \
                     (or ref=1) for browsers"
                ),
                Notice::VideoConfigChanged => warn!(
                    peer = %self.peer, %stream,
                    "RTMP publisher changed its H.264 parameters mid-stream; viewers may need to rejoin"
                ),
                Notice::LateTrack(kind) => warn!(
                    peer = %self.peer, %stream, ?kind,
                    "RTMP track started after the stream; its media is dropped until the publisher reconnects"
                ),
            }
        }
        if publisher.is_ready() {
            let tracks = publisher.tracks();
            let request = PublishRequest {
                stream: None,
                key: self.key.as_deref(),
                remote_addr: Some(self.peer),
                ticket: None,
            };
            match self
                .engine
                .start_ingest(request, IngestProtocol::Rtmp, tracks.clone())
                .await
            {
                Ok(ingest) => {
                    let video = publisher.video_profile().map_or_else(
                        || "none".to_owned(),
                        |p| format!("H264 profile-level-id {p} (offered to viewers as 42e0..)"),
                    );
                    let audio = publisher.audio_input().map_or_else(
                        || "none".to_owned(),
                        |a| {
                            format!(
                                "AAC-LC {} Hz {} ch -> Opus 48000 Hz stereo",
                                a.sample_rate, a.channels
                            )
                        },
                    );
                    info!(peer = %self.peer, stream = ingest.stream(), %video, %audio, "RTMP stream live");
                    if let Some(asc) = publisher.aac_config() {
                        ingest.set_source_audio(asc.clone());
                    }
                    self.ingest = Some(ingest);
                    publisher.start(&mut self.packets)?;
                }
                Err(e) => {
                    self.session.end_publish(&refusal_text(&e));
                    return Err(ConnectionError::Refused(e));
                }
            }
        }
        let Some(ingest) = &self.ingest else {
            self.packets.clear();
            return Ok(());
        };
        for notice in self.notices.drain(..) {
            ingest.notice(notice);
        }
        for (kind, packet, delivery) in self.packets.drain(..) {
            if ingest.send_with(kind, packet, delivery).is_err() {
                self.session
                    .end_publish("another publisher took this stream over");
                return Err(ConnectionError::TakenOver);
            }
        }
        Ok(())
    }
}

/// What the client is told when its publish is refused (never the key itself).
fn refusal_text(e: &ControlError) -> String {
    match e {
        ControlError::MissingKey => {
            "missing stream key: publish to rtmp://HOST/live/<stream key>".into()
        }
        ControlError::InvalidKey => "invalid stream key".into(),
        ControlError::StreamBusy(_) => "already publishing".into(),
        ControlError::InvalidStreamName(_) => "invalid stream name".into(),
        ControlError::Unavailable => "server is at capacity or draining".into(),
        _ => "publish refused".into(),
    }
}
