//! The limit the benchmark compares the edge with: on one core, a bare loop that does only what
//! fan-out must do — SRTP-protect each packet of the stream once per viewer (AES-128-GCM, with
//! `rtc`'s own SRTP context and crypto provider, i.e. the code the edge runs) and send it to
//! that viewer's loopback socket — with no WebRTC, no queues and no runtime around it.
//!
//! The stream is the benchmark's: the clip's H.264 payloads at its frame rate plus 20 ms Opus
//! frames, each packet with its own RTP header per receiver (SSRC, sequence number), so the
//! sizes and the rate per viewer are those the edge sends. Two ways to send are measured:
//! [`SendMode::SendTo`] (one `sendto` per packet per viewer, what the edge does) and
//! [`SendMode::Sendmmsg`] (the same datagrams, up to [`LimitPlan::batch`] per `sendmmsg`).
//!
//! A probe plays one stretch of the stream in real time to `R` receivers (plain UDP sockets
//! drained by a thread on another core, waiting in epoll as viewers do). `R` is sustained when the last packet of the stretch
//! leaves less than one frame interval late and the receivers got all but < 0.1 % of the
//! datagrams. A run without pacing gives the first estimate; probes then bracket and bisect.

use super::clip::Clip;
use super::error::LoadError;
use super::peer::{AUDIO_PT, VIDEO_PT};
use super::schedule::{AUDIO_TS_STEP, MediaClock, Tick, video_ts_step};
use super::server::pin_current_thread;
use bytes::Bytes;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use rtc::rtp::header::Header;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most this many probes per mode (each is one stretch of the stream, in real time).
const MAX_PROBES: usize = 12;
/// Receivers of the unpaced first estimate.
const ESTIMATE_RECEIVERS: usize = 100;
/// A probe gives up once it is this late (it cannot catch up within the stretch).
const GIVE_UP_LAG: Duration = Duration::from_millis(500);
/// Time the drain thread gets after a probe to read what is still queued.
const DRAIN_SETTLE: Duration = Duration::from_millis(100);
/// Loss above this fails a probe (the benchmark's criterion for the edge too).
pub const MAX_LOSS_PCT: f64 = 0.1;
/// Buffer per socket (the edge asks 4 MiB for its shard sockets; the kernel caps it).
const SOCKET_BUFFER: usize = 4 << 20;

/// How the loop hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// One `sendto` per packet per viewer, as the edge sends today.
    SendTo,
    /// One `sendmmsg` per packet for up to `batch` viewers.
    Sendmmsg,
}

impl std::fmt::Display for SendMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendMode::SendTo => "sendto",
            SendMode::Sendmmsg => "sendmmsg",
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct LimitPlan {
    pub clip: Arc<Clip>,
    pub fps: u32,
    pub audio_kbps: u32,
    /// Core of the sending loop (the one the edge ran on).
    pub sender_core: Option<usize>,
    /// Core of the thread that drains the receivers.
    pub drain_core: Option<usize>,
    /// Media time one probe plays; a whole number of GOPs keeps keyframes in proportion.
    pub probe: Duration,
    /// Receivers never exceed this.
    pub max_receivers: usize,
    /// Datagrams per `sendmmsg`.
    pub batch: usize,
}

/// One probe at a receiver count.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub receivers: usize,
    pub sustained: bool,
    /// The probe stopped early, hopelessly late.
    pub gave_up: bool,
    /// How late the last packet of the stretch left.
    pub lag_ms: f64,
    pub loss_pct: f64,
    /// Time spent encrypting and sending, over the stretch's length.
    pub busy: f64,
    pub packets_per_s: f64,
}

/// The highest sustained receiver count of one send mode.
#[derive(Debug, Clone, Serialize)]
pub struct LimitResult {
    pub mode: SendMode,
    pub viewers: usize,
    pub packets_per_s: f64,
    pub mbps: f64,
    /// From the unpaced run: wall time per packet on the core (encrypt + send + the loopback
    /// delivery the kernel runs in the sender's context).
    pub us_per_packet: f64,
    pub probes: Vec<Probe>,
}

/// One packet of the stream, before its per-receiver header.
struct Packet {
    payload: Bytes,
    video: bool,
    marker: bool,
    timestamp: u32,
}

/// The stream for one probe: ticks at their offsets, each with its packets.
struct Stream {
    ticks: Vec<(Duration, Vec<Packet>)>,
    length: Duration,
    packets: usize,
    payload_bytes: usize,
}

impl Stream {
    fn new(clip: &Clip, fps: u32, audio_kbps: u32, length: Duration) -> Self {
        let audio = Bytes::from(vec![0x5a; (audio_kbps as usize * 1000 / 8 / 50).max(10)]);
        let mut clock = MediaClock::new(fps);
        let mut ticks = Vec::new();
        let (mut packets, mut payload_bytes) = (0, 0);
        let frames = clip.frames.len().max(1);
        loop {
            let (tick, at) = clock.peek();
            if at >= length {
                break;
            }
            clock.advance();
            let list: Vec<Packet> = match tick {
                Tick::Video(n) => {
                    let Some(frame) = clip.frames.get(n as usize % frames) else {
                        continue;
                    };
                    let last = frame.payloads.len().saturating_sub(1);
                    frame
                        .payloads
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Packet {
                            payload: p.clone(),
                            video: true,
                            marker: i == last,
                            timestamp: (n as u32).wrapping_mul(video_ts_step(fps)),
                        })
                        .collect()
                }
                Tick::Audio(n) => vec![Packet {
                    payload: audio.clone(),
                    video: false,
                    marker: false,
                    timestamp: (n as u32).wrapping_mul(AUDIO_TS_STEP),
                }],
            };
            packets += list.len();
            payload_bytes += list.iter().map(|p| p.payload.len()).sum::<usize>();
            ticks.push((at, list));
        }
        Stream {
            ticks,
            length,
            packets,
            payload_bytes,
        }
    }

    fn packets_per_s(&self) -> f64 {
        self.packets as f64 / self.length.as_secs_f64()
    }
}

/// One receiver as the sender sees it: its SRTP context and RTP state.
struct Receiver {
    srtp: Context,
    addr: SocketAddr,
    sockaddr: SockaddrIn,
    ssrc: u32,
    video_seq: u16,
    audio_seq: u16,
}

fn udp_socket() -> Result<UdpSocket, LoadError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(socket.into())
}

/// The sender's state for the receivers of a pool.
struct Sender {
    socket: UdpSocket,
    receivers: Vec<Receiver>,
    plain: Vec<u8>,
    batch: Vec<bytes::BytesMut>,
    headers: MultiHeaders<SockaddrIn>,
    addrs: Vec<Option<SockaddrIn>>,
    sent: u64,
    dropped: u64,
}

impl Sender {
    fn new(addrs: &[SocketAddr], batch: usize) -> Result<Self, LoadError> {
        let provider = rtc::crypto::default_provider()
            .map_err(|e| LoadError::Edge(format!("no crypto provider: {e}")))?;
        let mut receivers = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            // A distinct key and salt per receiver, as every DTLS session derives its own.
            let mut key = [0u8; 16];
            let mut salt = [0u8; 12];
            key[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            salt[..8].copy_from_slice(&(i as u64 ^ 0x5741_5645).to_be_bytes());
            let srtp = Context::new(
                &key,
                &salt,
                ProtectionProfile::AeadAes128Gcm,
                None,
                None,
                provider.crypto(),
            )?;
            let SocketAddr::V4(v4) = addr else {
                return Err(LoadError::Edge("receivers are IPv4".into()));
            };
            receivers.push(Receiver {
                srtp,
                addr,
                sockaddr: SockaddrIn::from(v4),
                ssrc: 0x4c49_0000 + i as u32,
                video_seq: (i as u16).wrapping_mul(7919),
                audio_seq: (i as u16).wrapping_mul(104_729_u32 as u16),
            });
        }
        Ok(Sender {
            socket: udp_socket()?,
            receivers,
            plain: Vec::with_capacity(2048),
            batch: Vec::with_capacity(batch.max(1)),
            headers: MultiHeaders::preallocate(batch.max(1), None),
            addrs: Vec::with_capacity(batch.max(1)),
            sent: 0,
            dropped: 0,
        })
    }

    /// Protects `packet` for receiver `r`: its header, the payload, AES-128-GCM.
    fn protect(
        plain: &mut Vec<u8>,
        r: &mut Receiver,
        packet: &Packet,
    ) -> Result<bytes::BytesMut, LoadError> {
        let seq = if packet.video {
            &mut r.video_seq
        } else {
            &mut r.audio_seq
        };
        *seq = seq.wrapping_add(1);
        let header = Header {
            version: 2,
            marker: packet.marker,
            payload_type: if packet.video { VIDEO_PT } else { AUDIO_PT },
            sequence_number: *seq,
            timestamp: packet.timestamp,
            ssrc: r.ssrc + u32::from(!packet.video) * 0x100,
            ..Default::default()
        };
        let head = header.marshal_size();
        plain.clear();
        plain.resize(head + packet.payload.len(), 0);
        header.marshal_to(&mut plain[..head])?;
        plain[head..].copy_from_slice(&packet.payload);
        Ok(r.srtp.encrypt_rtp_with_header(plain, &header)?)
    }

    /// Sends one packet to the first `count` receivers.
    fn fan_out(
        &mut self,
        packet: &Packet,
        count: usize,
        mode: SendMode,
        batch: usize,
    ) -> Result<(), LoadError> {
        match mode {
            SendMode::SendTo => {
                for r in &mut self.receivers[..count] {
                    let out = Self::protect(&mut self.plain, r, packet)?;
                    match self.socket.send_to(&out, r.addr) {
                        Ok(_) => self.sent += 1,
                        Err(_) => self.dropped += 1,
                    }
                }
            }
            SendMode::Sendmmsg => {
                for chunk in self.receivers[..count].chunks_mut(batch.max(1)) {
                    self.batch.clear();
                    self.addrs.clear();
                    for r in chunk.iter_mut() {
                        self.batch.push(Self::protect(&mut self.plain, r, packet)?);
                        self.addrs.push(Some(r.sockaddr));
                    }
                    let iovs: Vec<[IoSlice<'_>; 1]> =
                        self.batch.iter().map(|b| [IoSlice::new(b)]).collect();
                    let none: [ControlMessage<'_>; 0] = [];
                    let sent = match sendmmsg(
                        self.socket.as_raw_fd(),
                        &mut self.headers,
                        &iovs,
                        &self.addrs,
                        none,
                        MsgFlags::MSG_DONTWAIT,
                    ) {
                        Ok(results) => results.count(),
                        Err(_) => 0,
                    };
                    self.sent += sent as u64;
                    self.dropped += (chunk.len() - sent) as u64;
                }
            }
        }
        Ok(())
    }
}

/// Drains every receiver socket until told to stop; counts datagrams. The sockets wait in
/// one edge-triggered epoll, as a viewer's socket waits in its runtime's: a datagram that
/// reaches an idle socket wakes this thread, and the sender's kernel pays for that wake-up
/// just as the edge's does for a viewer (a loop that polled without sleeping would spare the
/// sender that cost and flatter the limit).
fn drain(
    sockets: Arc<Vec<UdpSocket>>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    core: Option<usize>,
    deadline: Instant,
) {
    if let Some(core) = core {
        let _ = pin_current_thread(core);
    }
    let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
        return;
    };
    for (i, s) in sockets.iter().enumerate() {
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, i as u64);
        if epoll.add(s, event).is_err() {
            return;
        }
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok(n) = epoll.wait(&mut events, EpollTimeout::from(20u8)) else {
            continue;
        };
        let mut got = 0u64;
        for e in &events[..n] {
            let Some(s) = sockets.get(e.data() as usize) else {
                continue;
            };
            // Edge-triggered: read until the queue is empty.
            while s.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        received.fetch_add(got, Ordering::Relaxed);
    }
}

/// The search for one mode, on the calling thread (pinned by the caller).
struct Search<'a> {
    plan: &'a LimitPlan,
    stream: &'a Stream,
    sender: Sender,
    received: Arc<AtomicU64>,
    probes: Vec<Probe>,
}

impl Search<'_> {
    /// Plays the stream to `count` receivers, paced or as fast as the core goes.
    fn play(&mut self, count: usize, mode: SendMode, paced: bool) -> Result<Probe, LoadError> {
        let (sent0, dropped0) = (self.sender.sent, self.sender.dropped);
        let received0 = self.received.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut busy = Duration::ZERO;
        let mut gave_up = false;
        for (at, packets) in &self.stream.ticks {
            let due = start + *at;
            if paced {
                let now = Instant::now();
                if now < due {
                    std::thread::sleep(due - now);
                } else if now - due > GIVE_UP_LAG {
                    gave_up = true;
                    break;
                }
            }
            let began = Instant::now();
            for p in packets {
                self.sender.fan_out(p, count, mode, self.plan.batch)?;
            }
            busy += began.elapsed();
        }
        let done = Instant::now();
        std::thread::sleep(DRAIN_SETTLE);
        let sent = self.sender.sent - sent0;
        let dropped = self.sender.dropped - dropped0;
        let received = self.received.load(Ordering::Relaxed) - received0;
        let attempted = sent + dropped;
        let loss_pct = if attempted == 0 {
            0.0
        } else {
            attempted.saturating_sub(received) as f64 * 100.0 / attempted as f64
        };
        let end = start + self.stream.length;
        let lag = done.saturating_duration_since(end);
        let frame = Duration::from_secs_f64(1.0 / f64::from(self.plan.fps.max(1)));
        let elapsed = done.duration_since(start).as_secs_f64().max(1e-6);
        let probe = Probe {
            receivers: count,
            sustained: paced && !gave_up && lag <= frame && loss_pct < MAX_LOSS_PCT,
            gave_up,
            lag_ms: round1(lag.as_secs_f64() * 1e3),
            loss_pct: round3(loss_pct),
            busy: round3(busy.as_secs_f64() / self.stream.length.as_secs_f64()),
            packets_per_s: (attempted as f64 / elapsed).round(),
        };
        Ok(probe)
    }

    fn probe(&mut self, count: usize, mode: SendMode) -> Result<bool, LoadError> {
        let probe = self.play(count, mode, true)?;
        eprintln!(
            "waveguide-load: limit {mode}: {count} receivers → {} (lag {} ms, loss {} %, busy {})",
            if probe.sustained {
                "sustained"
            } else if probe.gave_up {
                "not (gave up, > 0.5 s late)"
            } else {
                "not"
            },
            probe.lag_ms,
            probe.loss_pct,
            probe.busy
        );
        let ok = probe.sustained;
        self.probes.push(probe);
        Ok(ok)
    }

    /// Brackets and bisects the highest sustained count, starting from `estimate`.
    fn search(&mut self, estimate: usize, mode: SendMode) -> Result<usize, LoadError> {
        let cap = self.sender.receivers.len();
        let mut lo = 0usize; // highest sustained so far
        let mut hi = cap + 1; // lowest failed so far
        let mut next = (estimate * 9 / 10).clamp(1, cap);
        while self.probes.len() < MAX_PROBES {
            if self.probe(next, mode)? {
                lo = next;
            } else {
                hi = next;
            }
            if lo == cap {
                break;
            }
            next = if hi > cap {
                (lo + lo / 4).clamp(lo + 1, cap)
            } else if lo == 0 {
                (hi * 2 / 3).max(1)
            } else {
                (lo + hi) / 2
            };
            let resolution = (lo / 50).max(5);
            if hi <= cap && lo > 0 && hi - lo <= resolution {
                break;
            }
            if next == lo || next == hi || (lo == 0 && hi == 1) {
                break;
            }
        }
        Ok(lo)
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Measures the limit for each mode, in order. Runs on threads pinned to the plan's cores.
pub fn measure(plan: &LimitPlan, modes: &[SendMode]) -> Result<Vec<LimitResult>, LoadError> {
    let plan = plan.clone();
    let modes = modes.to_vec();
    let thread = std::thread::Builder::new()
        .name("limit".into())
        .spawn(move || {
            if let Some(core) = plan.sender_core {
                pin_current_thread(core)?;
            }
            modes
                .iter()
                .map(|&mode| measure_mode(&plan, mode))
                .collect::<Result<Vec<_>, _>>()
        })?;
    thread
        .join()
        .map_err(|_| LoadError::Edge("the limit thread panicked".into()))?
}

fn measure_mode(plan: &LimitPlan, mode: SendMode) -> Result<LimitResult, LoadError> {
    let stream = Stream::new(&plan.clip, plan.fps, plan.audio_kbps, plan.probe);
    let per_viewer_pps = stream.packets_per_s();
    // First estimate: the stretch to a few receivers as fast as the core goes.
    let estimate_count = ESTIMATE_RECEIVERS.min(plan.max_receivers).max(1);
    let (us_per_packet, estimate) = {
        let mut search = start_search(plan, &stream, estimate_count)?;
        let run = search.play(estimate_count, mode, false);
        let run = search.finish(run)?;
        let us = 1e6 / run.packets_per_s.max(1.0);
        (us, (run.packets_per_s / per_viewer_pps) as usize)
    };
    eprintln!(
        "waveguide-load: limit {mode}: {us_per_packet:.2} µs per packet unpaced → about {estimate} \
         receivers at {per_viewer_pps:.0} packets/s each"
    );
    // Receivers for the search: twice the estimate; twice more (a few times at most) when
    // the search sustains them all.
    let mut pool = (estimate * 2 + 50).min(plan.max_receivers).max(1);
    let mut start = estimate.max(1);
    let mut probes = Vec::new();
    let mut viewers = 0;
    for _ in 0..3 {
        let mut search = start_search(plan, &stream, pool)?;
        let found = search.search(start, mode);
        probes.append(&mut search.probes);
        viewers = search.finish(found)?;
        if viewers < pool || pool >= plan.max_receivers {
            break;
        }
        start = viewers + viewers / 4;
        pool = (pool * 2).min(plan.max_receivers);
    }
    let packets_per_s = viewers as f64 * per_viewer_pps;
    let bytes_per_packet = stream.payload_bytes as f64 / stream.packets.max(1) as f64 + 12.0 + 16.0;
    Ok(LimitResult {
        mode,
        viewers,
        packets_per_s: packets_per_s.round(),
        mbps: round1(packets_per_s * bytes_per_packet * 8.0 / 1e6),
        us_per_packet: (us_per_packet * 100.0).round() / 100.0,
        probes,
    })
}

/// A search with `count` receivers and their drain thread running.
struct Running<'a> {
    search: Search<'a>,
    stop: Arc<AtomicBool>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl<'a> std::ops::Deref for Running<'a> {
    type Target = Search<'a>;
    fn deref(&self) -> &Search<'a> {
        &self.search
    }
}

impl std::ops::DerefMut for Running<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.search
    }
}

impl Running<'_> {
    /// Stops the drain thread and passes `value` through.
    fn finish<T>(mut self, value: Result<T, LoadError>) -> Result<T, LoadError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
        value
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
    }
}

fn start_search<'a>(
    plan: &'a LimitPlan,
    stream: &'a Stream,
    count: usize,
) -> Result<Running<'a>, LoadError> {
    let sockets = (0..count)
        .map(|_| udp_socket())
        .collect::<Result<Vec<_>, _>>()?;
    let addrs = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let sender = Sender::new(&addrs, plan.batch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    // Bounded: every probe of the search fits many times over.
    let deadline = Instant::now() + (plan.probe + Duration::from_secs(2)) * (MAX_PROBES as u32 + 2);
    let drain = {
        let (sockets, stop, received) =
            (Arc::new(sockets), Arc::clone(&stop), Arc::clone(&received));
        let core = plan.drain_core;
        std::thread::Builder::new()
            .name("limit-drain".into())
            .spawn(move || drain(sockets, stop, received, core, deadline))?
    };
    Ok(Running {
        search: Search {
            plan,
            stream,
            sender,
            received,
            probes: Vec::new(),
        },
        stop,
        drain: Some(drain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::clip::Frame;

    fn clip() -> Clip {
        let frame = |n: usize, keyframe| Frame {
            payloads: (0..n).map(|_| Bytes::from(vec![1u8; 1000])).collect(),
            keyframe,
        };
        let mut frames = vec![frame(10, true)];
        frames.extend((0..59).map(|_| frame(3, false)));
        Clip {
            path: "synthetic".into(),
            frames,
        }
    }

    #[test]
    fn stream_has_the_clip_rate_plus_audio() {
        let s = Stream::new(&clip(), 30, 64, Duration::from_secs(2));
        // 60 frames: 10 + 59 × 3 = 187 video packets, plus 100 audio packets.
        assert_eq!(s.packets, 187 + 100);
        assert!((s.packets_per_s() - 143.5).abs() < 1e-9);
        assert!(s.ticks.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(s.ticks[0].1.len(), 10);
        assert!(s.ticks[0].1.last().is_some_and(|p| p.marker));
    }

    #[test]
    fn protected_packets_decrypt_with_the_same_keys() {
        let sockets: Vec<UdpSocket> = (0..2).map(|_| udp_socket().unwrap()).collect();
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let mut sender = Sender::new(&addrs, 4).unwrap();
        let packet = Packet {
            payload: Bytes::from_static(&[9u8; 300]),
            video: true,
            marker: true,
            timestamp: 3000,
        };
        sender.fan_out(&packet, 2, SendMode::Sendmmsg, 4).unwrap();
        sender.fan_out(&packet, 2, SendMode::SendTo, 4).unwrap();
        assert_eq!((sender.sent, sender.dropped), (4, 0));
        let provider = rtc::crypto::default_provider().unwrap();
        let mut key = [0u8; 16];
        let mut salt = [0u8; 12];
        key[..8].copy_from_slice(&2u64.to_be_bytes());
        salt[..8].copy_from_slice(&(1u64 ^ 0x5741_5645).to_be_bytes());
        let mut open = Context::new(
            &key,
            &salt,
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            provider.crypto(),
        )
        .unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let n = sockets[1].recv(&mut buf).unwrap();
            assert_eq!(n, 12 + 300 + 16);
            let clear = open.decrypt_rtp(&buf[..n]).unwrap();
            assert_eq!(&clear[12..], &[9u8; 300][..]);
        }
    }
}
