//! One stream's LL-HLS rendition while someone plays it: the task that reads the stream's
//! packets from a registry tap, turns them into pictures and Opus frames on one timeline, and
//! feeds the [`Segmenter`]; and the state the HTTP handlers read.
//!
//! The task ends when no client has asked for anything for [`IDLE_AFTER`], or when the stream
//! ends; the tap closes with it, so the fan-out stops feeding it.

use super::fmp4::TrackConfig;
use super::h264::{self, Depacketizer};
use super::segmenter::{Progress, Segmenter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use waveguide_control::Engine;
use waveguide_control::media::{Codec, MediaPacket, TrackKind};
use waveguide_control::stream::{StreamRef, Streams, Tap};

/// A rendition nobody asked anything of for this long stops muxing.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);
/// Packets the tap holds unread (a few seconds of a high-bitrate stream).
pub const TAP_CAPACITY: usize = 8192;
/// A client counts as playing while its last request is this recent.
const CLIENT_WINDOW: Duration = Duration::from_secs(10);
/// Client addresses remembered per rendition.
const MAX_CLIENTS: usize = 10_000;

/// Why a stream has no HLS rendition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoRendition {
    /// The stream is not live on this node.
    #[error("stream not found on this node")]
    NotFound,
    /// Its video is not H.264 (VP8/VP9/AV1 publishers), or it has no video.
    #[error("stream has no HLS rendition: its video is {0}, HLS here carries H.264 only")]
    Codec(String),
}

/// A rendition's shared state.
#[derive(Debug)]
pub struct Rendition {
    /// Names this rendition's objects (part of their URLs, so a restarted rendition never
    /// reuses a URL a CDN may have cached).
    pub id: String,
    /// The stream's registry id.
    pub stream: u64,
    segmenter: Mutex<Option<Segmenter>>,
    progress: watch::Sender<Option<Progress>>,
    last_request_ms: AtomicU64,
    started: Instant,
    clients: Mutex<HashMap<IpAddr, Instant>>,
    stopped: AtomicBool,
}

impl Rendition {
    /// The segmenter, once the first keyframe made the init segment (`None` before).
    pub fn segmenter(&self) -> MutexGuard<'_, Option<Segmenter>> {
        self.segmenter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever a part completes; `None` until the init segment exists.
    pub fn progress(&self) -> watch::Receiver<Option<Progress>> {
        self.progress.subscribe()
    }

    /// A client asked for something: the rendition stays up.
    pub fn touch(&self, client: Option<IpAddr>) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_request_ms.store(ms, Ordering::Relaxed);
        if let Some(ip) = client {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if clients.len() < MAX_CLIENTS || clients.contains_key(&ip) {
                clients.insert(ip, Instant::now());
            }
        }
    }

    /// Whether the task stopped (the rendition is then replaced on the next request).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn idle(&self) -> bool {
        let last = Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) >= IDLE_AFTER
    }

    /// Clients seen within the last few seconds (forgets older ones).
    pub fn recent_clients(&self) -> usize {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|_, seen| seen.elapsed() < CLIENT_WINDOW);
        clients.len()
    }
}

/// Starts muxing `name`: taps the stream and spawns the task. `on_stop` runs when it ends.
pub fn start(
    engine: &Arc<Engine>,
    name: &str,
    on_stop: impl FnOnce() + Send + 'static,
) -> Result<Arc<Rendition>, NoRendition> {
    let streams = engine.streams();
    let stream = streams.get(name).ok_or(NoRendition::NotFound)?;
    let video = stream
        .tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .ok_or_else(|| NoRendition::Codec("missing".to_owned()))?;
    if video.codec.codec != Codec::H264 {
        return Err(NoRendition::Codec(video.codec.codec.name().to_owned()));
    }
    let (stream, tap) = streams
        .tap(name, TAP_CAPACITY)
        .ok_or(NoRendition::NotFound)?;
    let started = Instant::now();
    let id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let rendition = Arc::new(Rendition {
        id,
        stream: stream.id,
        segmenter: Mutex::new(None),
        progress: watch::Sender::new(None),
        last_request_ms: AtomicU64::new(0),
        started,
        clients: Mutex::default(),
        stopped: AtomicBool::new(false),
    });
    let task = Muxing::new(Arc::clone(&rendition), &stream);
    let engine = Arc::clone(engine);
    let name = name.to_owned();
    tokio::spawn(async move {
        task.run(tap, engine.streams(), &name).await;
        on_stop();
    });
    Ok(rendition)
}

/// Maps one track's RTP timestamps onto the rendition's timeline: the first packet (of each
/// publisher generation) is placed at its arrival time, later ones follow the RTP clock.
#[derive(Debug)]
struct Clock {
    hz: u64,
    epoch: Option<u32>,
    last_rtp: u32,
    ext: i64,
    base: i64,
    last: u64,
}

impl Clock {
    fn new(hz: u64) -> Self {
        Self {
            hz,
            epoch: None,
            last_rtp: 0,
            ext: 0,
            base: 0,
            last: 0,
        }
    }

    /// The decode time of RTP timestamp `ts`, in this track's ticks.
    fn map(&mut self, ts: u32, epoch: u32, since_zero: Duration) -> u64 {
        if self.epoch != Some(epoch) {
            let now = (since_zero.as_secs_f64() * self.hz as f64) as i64;
            // A new publisher continues the timeline; it never goes back.
            let floor = if self.epoch.is_some() {
                self.last as i64 + 1
            } else {
                0
            };
            self.epoch = Some(epoch);
            self.base = now.max(floor);
            self.ext = 0;
            self.last_rtp = ts;
        }
        self.ext += i64::from(ts.wrapping_sub(self.last_rtp) as i32);
        self.last_rtp = ts;
        let t = (self.base + self.ext).max(0) as u64;
        self.last = t;
        t
    }
}

/// The task's own state.
struct Muxing {
    rendition: Arc<Rendition>,
    zero: Instant,
    zero_wall: SystemTime,
    video: Depacketizer,
    video_clock: Clock,
    audio_clock: Clock,
    audio: Option<u8>,
}

impl Muxing {
    fn new(rendition: Arc<Rendition>, stream: &StreamRef) -> Self {
        let audio = stream
            .tracks
            .iter()
            .find(|t| t.kind == TrackKind::Audio && t.codec.codec == Codec::Opus)
            .map(|t| u8::try_from(t.codec.channels.clamp(1, 2)).unwrap_or(2));
        Self {
            rendition,
            zero: Instant::now(),
            zero_wall: SystemTime::now(),
            video: Depacketizer::default(),
            video_clock: Clock::new(90_000),
            audio_clock: Clock::new(48_000),
            audio,
        }
    }

    async fn run(mut self, mut tap: Tap, streams: &Streams, name: &str) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                packet = tap.packets.recv() => match packet {
                    Some(p) => self.on_packet(&p),
                    None => break,
                },
                _ = check.tick() => {
                    let live = streams.get(name).is_some_and(|s| s.id == self.rendition.stream);
                    if !live || self.rendition.idle() {
                        tracing::info!(stream = %name, live, "HLS muxing stopped");
                        break;
                    }
                }
            }
        }
        self.rendition.stopped.store(true, Ordering::Relaxed);
    }

    fn on_packet(&mut self, p: &MediaPacket) {
        let since_zero = self.zero.elapsed();
        match p.kind {
            TrackKind::Video => {
                let h = &p.rtp.header;
                let dts = self.video_clock.map(h.timestamp, p.epoch, since_zero);
                if let Some(au) =
                    self.video
                        .push(h.sequence_number, h.timestamp, h.marker, &p.rtp.payload)
                {
                    // The picture's decode time is its first packet's; `dts` is this packet's.
                    let at = if au.rtp_timestamp == h.timestamp {
                        dts
                    } else {
                        dts.saturating_sub(u64::from(h.timestamp.wrapping_sub(au.rtp_timestamp)))
                    };
                    self.on_picture(at, au);
                }
            }
            TrackKind::Audio => {
                if self.audio.is_none() || p.rtp.payload.is_empty() {
                    return;
                }
                let dts = self
                    .audio_clock
                    .map(p.rtp.header.timestamp, p.epoch, since_zero);
                if let Some(s) = self.rendition.segmenter().as_mut() {
                    s.push_audio(dts, p.rtp.payload.clone());
                }
            }
        }
    }

    fn on_picture(&mut self, dts: u64, au: h264::AccessUnit) {
        let mut guard = self.rendition.segmenter();
        if guard.is_none() {
            if !au.keyframe {
                return;
            }
            let Some((sps, pps)) = self.video.parameter_sets() else {
                return;
            };
            let Some((width, height)) = h264::sps_dimensions(sps) else {
                return;
            };
            let mut tracks = vec![TrackConfig::H264 {
                sps: sps.to_vec(),
                pps: pps.to_vec(),
                width,
                height,
            }];
            if let Some(channels) = self.audio {
                tracks.push(TrackConfig::Opus { channels });
            }
            *guard = Some(Segmenter::new(tracks, self.zero_wall));
            self.rendition
                .progress
                .send_replace(Some(Progress::default()));
        }
        let Some(segmenter) = guard.as_mut() else {
            return;
        };
        if segmenter.push_video(dts, au.keyframe, 0, au.data) {
            let progress = segmenter.progress();
            drop(guard);
            self.rendition.progress.send_replace(Some(progress));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_follows_rtp_and_continues_across_publishers() {
        let mut c = Clock::new(90_000);
        assert_eq!(c.map(4_294_967_000, 0, Duration::from_secs(1)), 90_000);
        // Wraps around.
        assert_eq!(c.map(704, 0, Duration::from_secs(1)), 91_000);
        // Jitter in arrival does not matter, only the RTP clock.
        assert_eq!(c.map(3704, 0, Duration::from_secs(9)), 94_000);
        // A new publisher with a new random timestamp base resumes at its arrival time...
        assert_eq!(c.map(55, 1, Duration::from_secs(2)), 180_000);
        // ...but never before what was already given out.
        let mut c = Clock::new(48_000);
        c.map(0, 0, Duration::from_secs(5));
        c.map(480_000, 0, Duration::from_secs(5));
        assert_eq!(c.map(7, 1, Duration::from_secs(6)), 720_001);
    }
}
