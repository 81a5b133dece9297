//! A Rust client of the edge's gRPC `WebRtcSignaling` (tonic, from `waveguide-proto`), and
//! real `rtc` peers that publish and watch through it.
//!
//! - [`SignalClient`]: one `Signal` stream; sends requests with fresh request ids, matches
//!   replies to them and keeps the node's other messages (notifications) for later.
//! - [`unary_client`]: the same service for `GetPeers` and `HealthCheck`.
//! - [`publish`] / [`watch`]: an `rtc` peer connection (the load tool's [`Peer`]) negotiated
//!   over a Signal stream; [`RtcPublisher`] then sends the load tool's synthetic H.264 clip
//!   and 20 ms Opus-sized frames, [`receive`] counts what a viewer gets (every packet goes
//!   through `rtc`, so it is DTLS-keyed, SRTP-decrypted and authenticated).
//!
//! Like the rest of the harness it panics with context: every caller is a test.

use crate::load::clip::{Clip, ensure_clip};
use crate::load::peer::{AUDIO_PT, AUDIO_SSRC, Peer, Role, VIDEO_PT, VIDEO_SSRC};
use crate::load::publisher::rtp_packet;
use crate::load::receive::{KeyframeTracker, SeqTracker, carries_idr};
use crate::load::schedule::{AUDIO_TS_STEP, MediaClock, Tick, video_ts_step};
use crate::load::{SrtpChoice, VideoSpec};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use waveguide_proto::v1::signaling_request::Message as In;
use waveguide_proto::v1::signaling_response::Message as Out;
use waveguide_proto::v1::web_rtc_signaling_client::WebRtcSignalingClient;
use waveguide_proto::v1::{
    Announce, Announced, ErrorResponse, Notification, NotificationKind, PeerRole,
    SessionDescription, SignalingRequest, SignalingResponse,
};

/// How long a reply to one request may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP buffer of the test peers.
const SOCKET_BUFFER: usize = 1 << 20;

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The tonic client with the bearer interceptor.
pub type Client = WebRtcSignalingClient<InterceptedService<Channel, Bearer>>;

/// A client of the edge's `WebRtcSignaling` on `127.0.0.1:port`.
pub async fn unary_client(port: u16, token: Option<&str>) -> Client {
    WebRtcSignalingClient::with_interceptor(channel(port).await, Bearer::new(token))
}

/// A gRPC channel to `127.0.0.1:port`, for any of the edge's services.
pub async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to the edge's gRPC port {port}: {e}"))
}

impl Bearer {
    /// `Bearer <token>`, or nothing.
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.map(|t| {
            format!("Bearer {t}")
                .parse()
                .expect("an ASCII bearer token")
        }))
    }
}

/// One open `Signal` stream.
pub struct SignalClient {
    tx: mpsc::Sender<SignalingRequest>,
    rx: Streaming<SignalingResponse>,
    /// Messages read while looking for something else.
    stash: VecDeque<SignalingResponse>,
    next_id: u64,
}

impl SignalClient {
    /// Opens a Signal stream; the call's status when the node refuses it (no token).
    pub async fn open(port: u16, token: Option<&str>) -> Result<SignalClient, Status> {
        let mut client = unary_client(port, token).await;
        let (tx, rx) = mpsc::channel(64);
        let response = client.signal(ReceiverStream::new(rx)).await?;
        Ok(SignalClient {
            tx,
            rx: response.into_inner(),
            stash: VecDeque::new(),
            next_id: 1,
        })
    }

    /// Sends a request as given (its request id too).
    pub async fn send_raw(&mut self, request: SignalingRequest) {
        self.tx
            .send(request)
            .await
            .expect("the Signal stream's request side is open");
    }

    /// Sends `message` with a new request id, which it returns.
    pub async fn send(&mut self, message: In) -> String {
        let request_id = format!("req-{}", self.next_id);
        self.next_id += 1;
        self.send_raw(SignalingRequest {
            request_id: request_id.clone(),
            message: Some(message),
        })
        .await;
        request_id
    }

    /// The next message from the node, stashed ones first; `None` when the node ended the
    /// stream. Panics on a timeout or a broken stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<SignalingResponse> {
        if let Some(m) = self.stash.pop_front() {
            return Some(m);
        }
        self.read(timeout).await
    }

    async fn read(&mut self, timeout: Duration) -> Option<SignalingResponse> {
        match tokio::time::timeout(timeout, self.rx.message()).await {
            Ok(Ok(m)) => m,
            Ok(Err(status)) => panic!("the Signal stream broke: {status}"),
            Err(_) => panic!("no message from the node within {timeout:?}"),
        }
    }

    /// Waits for the reply to `request_id`; other messages are kept for [`Self::next`].
    pub async fn reply_to(&mut self, request_id: &str) -> SignalingResponse {
        if let Some(i) = self.stash.iter().position(|m| m.request_id == request_id) {
            return self.stash.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.read(left).await else {
                panic!("the node ended the Signal stream before replying to {request_id}");
            };
            if m.request_id == request_id {
                return m;
            }
            self.stash.push_back(m);
        }
    }

    /// Sends `message` and waits for its reply.
    pub async fn request(&mut self, message: In) -> SignalingResponse {
        let id = self.send(message).await;
        self.reply_to(&id).await
    }

    /// Waits for a notification of `kind` about `session` (`""` for the whole stream); other
    /// messages are kept.
    pub async fn notification(
        &mut self,
        session: &str,
        kind: NotificationKind,
        timeout: Duration,
    ) -> Notification {
        let matches = |m: &SignalingResponse| {
            matches!(&m.message, Some(Out::Notification(n))
                if n.session_id == session && n.kind == kind as i32)
        };
        if let Some(i) = self.stash.iter().position(matches) {
            return notification_of(self.stash.remove(i).expect("index from position"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.rx.message()).await;
            let m = match m {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => panic!("the node ended the Signal stream; waited for {kind:?}"),
                Ok(Err(status)) => panic!("the Signal stream broke: {status}"),
                Err(_) => panic!(
                    "no {kind:?} for session `{session}` within {timeout:?}; also got {:?}",
                    self.stash
                ),
            };
            if matches(&m) {
                return notification_of(m);
            }
            self.stash.push_back(m);
        }
    }

    /// Announces a session; `Announced` or the node's error.
    pub async fn announce(
        &mut self,
        role: PeerRole,
        stream: &str,
        token: &str,
        peer_name: &str,
    ) -> Result<Announced, ErrorResponse> {
        let reply = self
            .request(In::Announce(Announce {
                role: role as i32,
                stream: stream.to_owned(),
                token: token.to_owned(),
                peer_name: peer_name.to_owned(),
            }))
            .await;
        match reply.message {
            Some(Out::Announced(a)) => Ok(a),
            Some(Out::Error(e)) => Err(e),
            other => panic!("unexpected reply to Announce: {other:?}"),
        }
    }

    /// Sends an offer; the answer SDP or the node's error.
    pub async fn offer(&mut self, session: &str, sdp: String) -> Result<String, ErrorResponse> {
        let reply = self
            .request(In::Offer(SessionDescription {
                session_id: session.to_owned(),
                sdp,
            }))
            .await;
        match reply.message {
            Some(Out::Answer(d)) => {
                assert_eq!(d.session_id, session, "the answer names the session");
                Ok(d.sdp)
            }
            Some(Out::Error(e)) => Err(e),
            other => panic!("unexpected reply to an offer: {other:?}"),
        }
    }

    /// Messages read while waiting for something else and not yet taken.
    pub fn stashed(&self) -> &VecDeque<SignalingResponse> {
        &self.stash
    }

    /// Sends BYE for `session`; the node's reply.
    pub async fn bye(&mut self, session: &str) -> SignalingResponse {
        self.request(In::Notification(Notification {
            session_id: session.to_owned(),
            kind: NotificationKind::Bye as i32,
            message: String::new(),
        }))
        .await
    }
}

fn notification_of(m: SignalingResponse) -> Notification {
    match m.message {
        Some(Out::Notification(n)) => n,
        other => unreachable!("matched a notification, got {other:?}"),
    }
}

/// The error in a reply, or a panic naming what came instead.
pub fn expect_error(reply: SignalingResponse) -> ErrorResponse {
    match reply.message {
        Some(Out::Error(e)) => e,
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

/// An answered `rtc` session negotiated over Signal.
pub struct Negotiated {
    pub peer: Peer,
    pub session_id: String,
    /// The stream the node named in `Announced`.
    pub stream: String,
    /// Announce → answer applied.
    pub signaled: Duration,
}

async fn negotiate(
    signal: &mut SignalClient,
    role: Role,
    announce: (PeerRole, &str, &str, &str),
) -> Result<Negotiated, ErrorResponse> {
    let started = Instant::now();
    let (peer_role, stream, token, name) = announce;
    let announced = signal.announce(peer_role, stream, token, name).await?;
    let (mut peer, offer) = Peer::offer(role, SrtpChoice::Default, SOCKET_BUFFER, Instant::now())
        .unwrap_or_else(|e| panic!("rtc offer: {e}"));
    let answer = signal.offer(&announced.session_id, offer).await?;
    peer.answer(answer, Instant::now())
        .unwrap_or_else(|e| panic!("rtc could not apply the node's answer: {e}"));
    Ok(Negotiated {
        peer,
        session_id: announced.session_id,
        stream: announced.stream,
        signaled: started.elapsed(),
    })
}

/// Announces a publisher with `key` (and `stream`, may be empty) and negotiates an `rtc`
/// peer that sends H.264 and Opus.
pub async fn publish(
    signal: &mut SignalClient,
    stream: &str,
    key: &str,
    peer_name: &str,
) -> Result<Negotiated, ErrorResponse> {
    negotiate(
        signal,
        Role::Publish,
        (PeerRole::Publisher, stream, key, peer_name),
    )
    .await
}

/// Announces a viewer of `stream` and negotiates a receiving `rtc` peer.
pub async fn watch(
    signal: &mut SignalClient,
    stream: &str,
    peer_name: &str,
) -> Result<Negotiated, ErrorResponse> {
    negotiate(
        signal,
        Role::View,
        (PeerRole::Viewer, stream, "", peer_name),
    )
    .await
}

/// A Signal publisher sending the test clip.
pub struct ClipPublisher {
    /// Its Signal stream (notifications about the session arrive here).
    pub signal: SignalClient,
    /// The Signal session id.
    pub session_id: String,
    /// The stream the node named in `Announced`.
    pub stream: String,
    /// Announce → answer applied.
    pub signaled: Duration,
    /// The media sender; `stop` it for its counts.
    pub media: RtcPublisher,
}

/// Opens a Signal stream to the edge's gRPC `port`, publishes `stream` (may be empty: the key
/// names it) with `key`, and starts sending the test clip at 30 fps for at most `limit`.
/// Panics when the node refuses. Call from outside the runtime; the sender runs on it.
pub fn publish_clip(
    rt: &tokio::runtime::Runtime,
    port: u16,
    token: &str,
    (stream, key, peer_name): (&str, &str, &str),
    limit: Duration,
) -> ClipPublisher {
    let mut signal = rt
        .block_on(SignalClient::open(port, Some(token)))
        .expect("open Signal");
    let published = rt
        .block_on(publish(&mut signal, stream, key, peer_name))
        .unwrap_or_else(|e| panic!("publish over Signal refused: {e:?}"));
    let media = {
        let _guard = rt.enter();
        RtcPublisher::spawn(published.peer, test_clip(), 30, limit)
    };
    ClipPublisher {
        signal,
        session_id: published.session_id,
        stream: published.stream,
        signaled: published.signaled,
        media,
    }
}

/// A plain `rtc` offer of the given role, for requests that are meant to fail.
pub fn offer_sdp(role: Role) -> String {
    Peer::offer(role, SrtpChoice::Default, 1 << 16, Instant::now())
        .unwrap_or_else(|e| panic!("rtc offer: {e}"))
        .1
}

/// The synthetic clip the Signal publisher loops: 640×360, 30 fps, one keyframe a second,
/// 800 kbps (made by ffmpeg once, cached with the load tool's clips).
pub fn test_clip() -> Arc<Clip> {
    let spec = VideoSpec {
        width: 640,
        height: 360,
        fps: 30,
        gop: 30,
        bitrate_kbps: 800,
        pacing: None,
    };
    let path = ensure_clip(&spec, &crate::target_dir().join("waveguide-load"))
        .unwrap_or_else(|e| panic!("test clip: {e}"));
    Arc::new(Clip::load(&path).unwrap_or_else(|e| panic!("test clip: {e}")))
}

/// What a publisher sent.
#[derive(Debug, Clone, Default)]
pub struct PublisherStats {
    /// Answer applied → connection `connected`.
    pub connected_after: Option<Duration>,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub write_errors: u64,
    pub keyframe_requests: u64,
}

/// A publisher sending media on a task until stopped.
pub struct RtcPublisher {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<PublisherStats>,
}

impl RtcPublisher {
    /// Sends the clip at `fps` on `peer` (answered, not yet connected) on a task of the
    /// current runtime, for at most `limit`.
    pub fn spawn(peer: Peer, clip: Arc<Clip>, fps: u32, limit: Duration) -> RtcPublisher {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(send_media(peer, clip, fps, Instant::now() + limit, stopped));
        RtcPublisher {
            stop: Some(stop),
            task,
        }
    }

    /// Stops sending (closing the peer connection) and returns what was sent.
    pub async fn stop(mut self) -> PublisherStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("the publisher task panicked")
    }
}

/// The payload type the answer settled on for a sender.
fn negotiated_pt(peer: &mut Peer, id: RTCRtpSenderId, ours: u8) -> u8 {
    peer.pc
        .rtp_sender(id)
        .and_then(|mut s| {
            s.get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
        })
        .unwrap_or(ours)
}

async fn send_media(
    mut peer: Peer,
    clip: Arc<Clip>,
    fps: u32,
    until: Instant,
    mut stop: oneshot::Receiver<()>,
) -> PublisherStats {
    let started = Instant::now();
    let (video, audio) = peer.senders.expect("a publishing peer has two senders");
    let video_pt = negotiated_pt(&mut peer, video, VIDEO_PT);
    let audio_pt = negotiated_pt(&mut peer, audio, AUDIO_PT);
    let (mut video_seq, mut audio_seq) = (1000u16, 2000u16);
    let mut stats = PublisherStats::default();
    let mut clock = MediaClock::new(fps);
    let mut media_start: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    let step = video_ts_step(fps);
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if peer.pc.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if media_start.is_none() => {
                        stats.connected_after = Some(now.duration_since(started));
                        media_start = Some(now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        eprintln!("signal publisher: connection {state}");
                        return stats;
                    }
                    _ => {}
                }
            }
        }
        while let Some(msg) = peer.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = msg.message {
                stats.keyframe_requests += packets
                    .iter()
                    .filter(|p| {
                        p.as_any()
                            .is::<rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>()
                    })
                    .count() as u64;
            }
        }
        let mut wake = peer.pc.poll_timeout().unwrap_or(until).min(until);
        if let Some(start) = media_start {
            let (tick, at) = clock.peek();
            if start + at <= now {
                let mut write = |id, packet: rtp::Packet| {
                    let ok = peer
                        .pc
                        .rtp_sender(id)
                        .is_some_and(|mut s| s.write_rtp(now, packet).is_ok());
                    if !ok {
                        stats.write_errors += 1;
                    }
                };
                match tick {
                    Tick::Video(n) => {
                        let frame = &clip.frames[(n % clip.frames.len() as u64) as usize];
                        let ts = (n as u32).wrapping_mul(step);
                        let last = frame.payloads.len().saturating_sub(1);
                        for (i, payload) in frame.payloads.iter().enumerate() {
                            video_seq = video_seq.wrapping_add(1);
                            let p = rtp_packet(
                                video_pt,
                                video_seq,
                                ts,
                                VIDEO_SSRC,
                                i == last,
                                payload.clone(),
                            );
                            write(video, p);
                            stats.video_packets += 1;
                        }
                    }
                    Tick::Audio(n) => {
                        // An Opus TOC byte (CELT fullband 20 ms, stereo) and silence.
                        let mut payload = vec![0u8; 80];
                        payload[0] = 0xfc;
                        audio_seq = audio_seq.wrapping_add(1);
                        let ts = (n as u32).wrapping_mul(AUDIO_TS_STEP);
                        let p =
                            rtp_packet(audio_pt, audio_seq, ts, AUDIO_SSRC, n == 0, payload.into());
                        write(audio, p);
                        stats.audio_packets += 1;
                    }
                }
                clock.advance();
                peer.flush();
                continue;
            }
            wake = wake.min(start + at);
        }
        peer.flush();
        let wake = wake.max(now + Duration::from_micros(200));
        tokio::select! {
            biased;
            _ = &mut stop => break,
            received = peer.socket().recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    peer.handle_datagram(&buf[..n], from, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    let _ = peer.pc.close();
    peer.flush();
    stats
}

/// What a viewer received.
#[derive(Debug, Clone, Default)]
pub struct ViewerStats {
    /// Answer applied → connection `connected`.
    pub connected_after: Option<Duration>,
    /// Answer applied → first complete H.264 keyframe.
    pub keyframe_after: Option<Duration>,
    /// RTP packets `rtc` delivered (decrypted and authenticated), by track.
    pub video: SeqTracker,
    pub audio: SeqTracker,
    /// Delivered RTP packets of neither payload type.
    pub unknown: u64,
    /// Datagrams `rtc` rejected (e.g. failed SRTP authentication).
    pub read_errors: u64,
    /// The connection failed or closed while receiving.
    pub ended: bool,
}

/// What a viewer has received so far, readable while [`receive_counting`] runs.
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub video: AtomicU64,
    pub audio: AtomicU64,
    /// H.264 keyframes (access units with an IDR slice), whole or not.
    pub keyframes: AtomicU64,
    /// Set to end the receiving early.
    pub stop: AtomicBool,
    /// Set to have the viewer send one PLI (a keyframe request) for its video; cleared when
    /// sent.
    pub send_pli: AtomicBool,
    /// When not 0, the viewer loses every this-many-th video datagram before reading it (as a
    /// lossy network would) and sends a NACK for it, as a browser does.
    pub drop_video_every: AtomicU64,
    /// Video datagrams lost that way (and NACKed).
    pub nacked: AtomicU64,
}

impl LiveCounts {
    /// `(video, audio, keyframes)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.video.load(Ordering::Relaxed),
            self.audio.load(Ordering::Relaxed),
            self.keyframes.load(Ordering::Relaxed),
        )
    }
}

/// Receives on `peer` (answered) for `duration`, or until the connection ends.
pub async fn receive(peer: Peer, duration: Duration) -> ViewerStats {
    receive_counting(peer, duration, Arc::default()).await
}

/// [`receive`], publishing its counts in `live` as it goes.
pub async fn receive_counting(
    mut peer: Peer,
    duration: Duration,
    live: Arc<LiveCounts>,
) -> ViewerStats {
    let started = Instant::now();
    let until = started + duration;
    let mut stats = ViewerStats::default();
    let mut keyframe = KeyframeTracker::default();
    let mut last_idr_ts = None;
    let mut video_ssrc = None;
    let mut video_datagrams = 0u64;
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= until || live.stop.load(Ordering::Relaxed) {
            break;
        }
        if peer.pc.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        // Events first: rtc installs the SRTP keys while delivering DTLS completion.
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if stats.connected_after.is_none() => {
                        stats.connected_after = Some(now.duration_since(started));
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        stats.ended = true;
                    }
                    _ => {}
                }
            }
        }
        if stats.ended {
            break;
        }
        while let Some(msg) = peer.pc.poll_read() {
            let RTCMessage::RtpPacket(_, packet) = msg.message else {
                continue;
            };
            let h = &packet.header;
            match h.payload_type {
                VIDEO_PT => {
                    video_ssrc = Some(h.ssrc);
                    stats.video.on_packet(h.sequence_number);
                    live.video.fetch_add(1, Ordering::Relaxed);
                    if carries_idr(&packet.payload) && last_idr_ts != Some(h.timestamp) {
                        last_idr_ts = Some(h.timestamp);
                        live.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    if keyframe.on_packet(h.sequence_number, h.timestamp, h.marker, &packet.payload)
                    {
                        stats.keyframe_after = Some(now.duration_since(started));
                    }
                }
                AUDIO_PT => {
                    stats.audio.on_packet(h.sequence_number);
                    live.audio.fetch_add(1, Ordering::Relaxed);
                }
                _ => stats.unknown += 1,
            }
        }
        if let Some(media_ssrc) = video_ssrc
            && live.send_pli.swap(false, Ordering::Relaxed)
        {
            send_pli(&mut peer, media_ssrc, now);
        }
        peer.flush();
        let wake = peer
            .pc
            .poll_timeout()
            .unwrap_or(until)
            .min(until)
            .max(now + Duration::from_micros(200));
        tokio::select! {
            received = peer.socket().recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    let every = live.drop_video_every.load(Ordering::Relaxed);
                    if every > 0 && let Some((ssrc, seq)) = video_header(&buf[..n]) {
                        video_datagrams += 1;
                        if video_datagrams.is_multiple_of(every) {
                            send_nack(&mut peer, ssrc, seq, Instant::now());
                            live.nacked.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    peer.handle_datagram(&buf[..n], from, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    stats.read_errors = peer.read_errors;
    let _ = peer.pc.close();
    peer.flush();
    stats
}

/// SSRC and sequence number of an SRTP video datagram (the RTP header travels in the clear).
fn video_header(datagram: &[u8]) -> Option<(u32, u16)> {
    let rtp = datagram.len() >= 12 && (128..=191).contains(&datagram[0]);
    if !rtp || datagram[1] & 0x7f != VIDEO_PT {
        return None;
    }
    let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, seq))
}

/// Writes one NACK for `seq` of `media_ssrc` on the peer's video receiver.
fn send_nack(peer: &mut Peer, media_ssrc: u32, seq: u16, now: Instant) {
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
        TransportLayerNack, nack_pairs_from_sequence_numbers,
    };
    let nack = TransportLayerNack {
        sender_ssrc: 0,
        media_ssrc,
        nacks: nack_pairs_from_sequence_numbers(&[seq]),
    };
    write_video_feedback(peer, Box::new(nack), now);
}

/// Writes one PLI for `media_ssrc` on the peer's video receiver (what a browser sends when it
/// cannot decode).
fn send_pli(peer: &mut Peer, media_ssrc: u32, now: Instant) {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    write_video_feedback(peer, Box::new(pli), now);
}

/// Writes RTCP feedback on the peer's video receiver; panics when there is none.
fn write_video_feedback(peer: &mut Peer, packet: Box<dyn rtc::rtcp::Packet>, now: Instant) {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    let receivers: Vec<_> = peer.pc.get_receivers().collect();
    let video = receivers
        .into_iter()
        .find(|r| {
            peer.pc
                .rtp_receiver(*r)
                .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
        })
        .expect("a video receiver");
    if let Some(mut r) = peer.pc.rtp_receiver(video) {
        r.write_rtcp(now, vec![packet])
            .unwrap_or_else(|e| panic!("write RTCP feedback: {e}"));
    }
}
