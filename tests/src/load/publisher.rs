//! The WHIP publisher: one peer connection on its own thread (so viewer load cannot delay
//! its pacing), sending the looped clip at its frame rate and a 20 ms Opus-sized frame
//! stream, and logging when each payload left (see `sendlog`).

use super::clip::Clip;
use super::config::SrtpChoice;
use super::error::LoadError;
use super::peer::{AUDIO_PT, AUDIO_SSRC, Peer, Role, VIDEO_PT, VIDEO_SSRC};
use super::schedule::{AUDIO_TS_STEP, MediaClock, Tick, video_ts_step};
use super::sendlog::{SendLog, fingerprint};
use super::signal;
use bytes::Bytes;
use reqwest::Url;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp;
use rtc::sansio::Protocol;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long ICE and DTLS may take before the publisher gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Opus TOC byte: config 31 (CELT fullband, 20 ms), stereo, one frame.
const OPUS_TOC: u8 = 0xfc;

/// What the publisher needs.
pub struct PublisherPlan {
    pub url: Url,
    pub token: Option<String>,
    pub clip: Arc<Clip>,
    pub fps: u32,
    pub audio_kbps: u32,
    pub srtp: SrtpChoice,
    pub socket_buffer: usize,
    pub log: Arc<SendLog>,
    /// The publisher stops by itself at this instant if never told to.
    pub hard_stop: Instant,
    /// Video sent at this rate, packet by packet, rather than a frame at once.
    pub pacing_bps: Option<f64>,
}

/// A frame's packets spread over time, as a WebRTC sender's pacer spreads them.
struct Pacer {
    bps: f64,
    /// When the link is free again.
    next: Instant,
    queue: VecDeque<(Instant, rtp::Packet)>,
}

impl Pacer {
    fn push(&mut self, packet: rtp::Packet, now: Instant) {
        let start = self.next.max(now);
        let bits = (packet.payload.len() + RTP_OVERHEAD) as f64 * 8.0;
        self.next = start + Duration::from_secs_f64(bits / self.bps);
        self.queue.push_back((start, packet));
    }

    /// The next packet due by `now`.
    fn due(&mut self, now: Instant) -> Option<rtp::Packet> {
        if self.queue.front().is_some_and(|(at, _)| *at <= now) {
            return self.queue.pop_front().map(|(_, p)| p);
        }
        None
    }
}

/// RTP header, SRTP tag, UDP and IP headers.
const RTP_OVERHEAD: usize = 12 + 16 + 8 + 20;

/// What the publisher sent and heard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherStats {
    pub connect_ms: f64,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub payload_bytes: u64,
    pub seconds: f64,
    pub keyframe_requests: u64,
    pub nacks: u64,
    pub write_errors: u64,
    pub send_failures: u64,
    pub delete_status: Option<u16>,
}

/// A running publisher: `ready` yields once it is connected and has sent its first frame.
pub struct PublisherHandle {
    pub ready: mpsc::Receiver<Result<(), String>>,
    stop: Option<oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<Result<PublisherStats, LoadError>>,
}

impl PublisherHandle {
    /// Stops sending, deletes the session and returns the statistics.
    pub fn stop(mut self) -> Result<PublisherStats, LoadError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .join()
            .unwrap_or(Err(LoadError::Publisher("publisher thread panicked")))
    }
}

/// Starts the publisher on its own thread.
pub fn spawn(plan: PublisherPlan) -> Result<PublisherHandle, LoadError> {
    let (ready_tx, ready) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run(plan, ready_tx, stop_rx))
        })?;
    Ok(PublisherHandle {
        ready,
        stop: Some(stop_tx),
        thread,
    })
}

struct Sender {
    video: rtc::rtp_transceiver::RTCRtpSenderId,
    audio: rtc::rtp_transceiver::RTCRtpSenderId,
    video_pt: u8,
    audio_pt: u8,
    video_seq: u16,
    audio_seq: u16,
}

/// The payload type the answer settled on for a sender (ours, unless the server renumbered).
fn negotiated_pt(peer: &mut Peer, id: rtc::rtp_transceiver::RTCRtpSenderId, ours: u8) -> u8 {
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

async fn run(
    plan: PublisherPlan,
    ready: mpsc::Sender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) -> Result<PublisherStats, LoadError> {
    let result = publish(&plan, &ready, stop).await;
    if let Err(e) = &result {
        // The receiver may be gone (the run ended); nothing else to tell then.
        let _ = ready.send(Err(e.to_string()));
    }
    result
}

async fn publish(
    plan: &PublisherPlan,
    ready: &mpsc::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<PublisherStats, LoadError> {
    let client = signal::client()?;
    let started = Instant::now();
    let (mut peer, offer) = Peer::offer(Role::Publish, plan.srtp, plan.socket_buffer, started)?;
    let session = signal::post_offer(&client, &plan.url, plan.token.as_deref(), offer).await?;
    peer.answer(session.answer, Instant::now())?;
    let Some((video, audio)) = peer.senders else {
        return Err(LoadError::Publisher("no senders after negotiation"));
    };
    let mut sender = Sender {
        video,
        audio,
        video_pt: negotiated_pt(&mut peer, video, VIDEO_PT),
        audio_pt: negotiated_pt(&mut peer, audio, AUDIO_PT),
        video_seq: rand_u16(),
        audio_seq: rand_u16(),
    };
    let mut stats = PublisherStats::default();
    let mut buf = vec![0u8; 2048];
    let connect_deadline = started + CONNECT_TIMEOUT;
    let mut connected = false;
    let mut clock = MediaClock::new(plan.fps);
    let mut media_start = None;
    let mut announced = false;
    let video_step = video_ts_step(plan.fps);
    let mut pacer = plan.pacing_bps.map(|bps| Pacer {
        bps,
        next: started,
        queue: VecDeque::new(),
    });
    let audio_bytes = (plan.audio_kbps as usize * 1000 / 8 / 50).max(10);

    loop {
        let now = Instant::now();
        if now >= plan.hard_stop {
            break;
        }
        if !connected && now >= connect_deadline {
            return Err(LoadError::Publisher("not connected within 10 s"));
        }
        if peer.pc.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if !connected => {
                        connected = true;
                        stats.connect_ms = now.duration_since(started).as_secs_f64() * 1e3;
                        media_start = Some(now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return Err(LoadError::Publisher("connection failed"));
                    }
                    _ => {}
                }
            }
        }
        while let Some(msg) = peer.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = msg.message {
                for p in &packets {
                    let any = p.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        stats.keyframe_requests += 1;
                    } else if any.is::<TransportLayerNack>() {
                        stats.nacks += 1;
                    }
                }
            }
        }
        let mut wake = peer
            .pc
            .poll_timeout()
            .unwrap_or(plan.hard_stop)
            .min(plan.hard_stop);
        if let Some(pacer) = pacer.as_mut() {
            while let Some(packet) = pacer.due(now) {
                write(plan, &mut peer, sender.video, packet, &mut stats, now);
            }
            if let Some((at, _)) = pacer.queue.front() {
                wake = wake.min(*at);
            }
        }
        if let Some(start) = media_start {
            let (tick, at) = clock.peek();
            let due = start + at;
            if due <= now {
                send_tick(
                    plan,
                    &mut peer,
                    &mut sender,
                    &mut stats,
                    pacer.as_mut(),
                    tick,
                    now,
                    video_step,
                    audio_bytes,
                );
                clock.advance();
                peer.flush();
                if !announced {
                    announced = true;
                    // The run waits on this; if it is gone, the run is over anyway.
                    let _ = ready.send(Ok(()));
                }
                continue;
            }
            wake = wake.min(due);
        }
        peer.flush();
        // A timer rtc left in the past must not spin the loop.
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
    stats.seconds = media_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    stats.send_failures = peer.send_failures;
    if let Some(location) = &session.location {
        stats.delete_status = signal::delete(&client, location, plan.token.as_deref()).await;
    }
    let _ = peer.pc.close();
    peer.flush();
    Ok(stats)
}

/// A starting sequence number; any will do, as long as runs differ.
fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos as u16) ^ (std::process::id() as u16)
}

#[allow(clippy::too_many_arguments)] // Plain plumbing of the loop's state; a struct would only rename it.
fn send_tick(
    plan: &PublisherPlan,
    peer: &mut Peer,
    sender: &mut Sender,
    stats: &mut PublisherStats,
    mut pacer: Option<&mut Pacer>,
    tick: Tick,
    now: Instant,
    video_step: u32,
    audio_bytes: usize,
) {
    match tick {
        Tick::Video(n) => {
            let frame = &plan.clip.frames[(n % plan.clip.frames.len() as u64) as usize];
            let ts = (n as u32).wrapping_mul(video_step);
            let last = frame.payloads.len().saturating_sub(1);
            for (i, payload) in frame.payloads.iter().enumerate() {
                sender.video_seq = sender.video_seq.wrapping_add(1);
                let packet = rtp_packet(
                    sender.video_pt,
                    sender.video_seq,
                    ts,
                    VIDEO_SSRC,
                    i == last,
                    payload.clone(),
                );
                match pacer.as_deref_mut() {
                    Some(pacer) => pacer.push(packet, now),
                    None => write(plan, peer, sender.video, packet, stats, now),
                }
                stats.video_packets += 1;
            }
        }
        Tick::Audio(n) => {
            let mut payload = vec![0u8; audio_bytes];
            payload[0] = OPUS_TOC;
            // A counter makes every audio payload unique, so its send time is unambiguous.
            payload[1..9].copy_from_slice(&n.to_be_bytes());
            sender.audio_seq = sender.audio_seq.wrapping_add(1);
            let packet = rtp_packet(
                sender.audio_pt,
                sender.audio_seq,
                (n as u32).wrapping_mul(AUDIO_TS_STEP),
                AUDIO_SSRC,
                n == 0,
                Bytes::from(payload),
            );
            write(plan, peer, sender.audio, packet, stats, now);
            stats.audio_packets += 1;
        }
    }
}

/// Writes one packet, logging when it left for the viewers' delay.
fn write(
    plan: &PublisherPlan,
    peer: &mut Peer,
    id: rtc::rtp_transceiver::RTCRtpSenderId,
    packet: rtp::Packet,
    stats: &mut PublisherStats,
    now: Instant,
) {
    plan.log
        .record(fingerprint(&packet.payload), Instant::now());
    stats.payload_bytes += packet.payload.len() as u64;
    let written = peer
        .pc
        .rtp_sender(id)
        .is_some_and(|mut s| s.write_rtp(now, packet).is_ok());
    if !written {
        stats.write_errors += 1;
    }
}

/// One RTP packet as the synthetic publishers send it (no extensions, no padding).
pub(crate) fn rtp_packet(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    payload: Bytes,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}
