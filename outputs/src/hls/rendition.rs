//! One stream's LL-HLS rendition while someone plays it: the task that reads the stream's
//! packets from a registry tap, turns them into pictures and audio frames on one timeline, and
//! feeds the [`Segmenter`]; and the state the HTTP handlers read.
//!
//! Video is H.264 as published, B-frames included (an RTMP publisher's B-frames reach taps
//! only, with their composition offsets). Audio is the publisher's AAC as sent when it has
//! one (RTMP: its frames reach taps beside the Opus transcode viewers get), else Opus.
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
use waveguide_control::media::{Audience, Codec, MediaPacket, TrackKind};
use waveguide_control::stream::{StreamRef, StreamStatus, Streams, Tap, TrackInfo};

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
#[non_exhaustive]
pub enum NoRendition {
    /// The stream is not live on this node.
    #[error("stream not found on this node")]
    NotFound,
    /// Its video is not H.264 (VP8/VP9/AV1 publishers): browsers' MSE takes no VP8 in fMP4.
    #[error("no HLS rendition: its video is {0}, and LL-HLS here carries H.264 only")]
    Codec(&'static str),
    /// It has no video (the segmenter cuts parts on pictures).
    #[error("no HLS rendition: the stream has no video")]
    NoVideo,
}

impl NoRendition {
    /// Why a stream with these tracks has no rendition, if it has none.
    pub fn of(tracks: &[TrackInfo]) -> Option<Self> {
        let video = tracks.iter().find(|t| t.kind == TrackKind::Video);
        Self::of_video(video.map(|t| t.codec.codec))
    }

    fn of_video(codec: Option<Codec>) -> Option<Self> {
        match codec {
            None => Some(Self::NoVideo),
            Some(Codec::H264) => None,
            Some(other) => Some(Self::Codec(other.name())),
        }
    }
}

/// Adds to a stream's REST status the notice that it has no HLS rendition, when it has none, so
/// the operator and the player (which then does not try) know.
pub fn annotate(status: &mut StreamStatus) {
    let video = status.tracks.iter().find(|t| t.kind == TrackKind::Video);
    if let Some(why) = NoRendition::of_video(video.map(|t| t.codec)) {
        status.notices.push(why.to_string());
    }
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
    if let Some(why) = NoRendition::of(&stream.tracks) {
        return Err(why);
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
    let aac = streams.source_audio(name);
    let task = Muxing::new(Arc::clone(&rendition), &stream, aac.as_deref());
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

/// Joins the video's two RTP sequences (packets for everyone, and B-frames only taps get) into
/// one for the depacketizer: gapless while both are, with a gap where either has one.
#[derive(Debug, Default)]
struct Sequences {
    epoch: Option<u32>,
    expected: [Option<u16>; 2],
    next: u16,
}

impl Sequences {
    fn map(&mut self, epoch: u32, audience: Audience, sequence: u16) -> u16 {
        if self.epoch != Some(epoch) {
            // A new publisher: its first packet follows a gap, as a lost one would.
            if self.epoch.is_some() {
                self.next = self.next.wrapping_add(1);
            }
            self.epoch = Some(epoch);
            self.expected = [None; 2];
        }
        let space = &mut self.expected[usize::from(audience == Audience::Taps)];
        if space.is_some_and(|e| e != sequence) {
            self.next = self.next.wrapping_add(1);
        }
        *space = Some(sequence.wrapping_add(1));
        let mapped = self.next;
        self.next = self.next.wrapping_add(1);
        mapped
    }
}

/// The task's own state.
struct Muxing {
    rendition: Arc<Rendition>,
    zero: Instant,
    zero_wall: SystemTime,
    video: Depacketizer,
    video_sequences: Sequences,
    /// The composition offset of the picture being reassembled.
    composition_offset: i32,
    video_clock: Clock,
    audio_clock: Clock,
    audio: Option<TrackConfig>,
}

/// The audio track a rendition carries: the publisher's AAC when the registry has its config,
/// else the stream's Opus track.
fn audio_track(stream: &StreamRef, aac: Option<&[u8]>) -> Option<TrackConfig> {
    let track = stream.tracks.iter().find(|t| t.kind == TrackKind::Audio)?;
    if let Some(config) = aac {
        let (sample_rate, channels) = aac_rate_and_channels(config)?;
        return Some(TrackConfig::Aac {
            config: config.to_vec(),
            sample_rate,
            channels,
        });
    }
    (track.codec.codec == Codec::Opus).then(|| TrackConfig::Opus {
        channels: u8::try_from(track.codec.channels.clamp(1, 2)).unwrap_or(2),
    })
}

/// The sample rate and channel count an `AudioSpecificConfig` declares (ISO 14496-3 §1.6.2.1).
fn aac_rate_and_channels(asc: &[u8]) -> Option<(u32, u8)> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    if asc.len() < 2 {
        return None;
    }
    let bits = asc
        .iter()
        .take(6)
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        << (8 * (8 - asc.len().min(6)));
    let field = |at: u32, len: u32| ((bits >> (64 - at - len)) & ((1 << len) - 1)) as u32;
    // Object types 31+ take six more bits before the rate.
    let at = if field(0, 5) == 31 { 11 } else { 5 };
    let index = field(at, 4);
    let (rate, channels_at) = if index == 15 {
        (field(at + 4, 24), at + 28)
    } else {
        (*RATES.get(index as usize)?, at + 4)
    };
    let channels = u8::try_from(field(channels_at, 4)).ok()?;
    (rate > 0 && (1..=7).contains(&channels)).then_some((rate, channels))
}

impl Muxing {
    fn new(rendition: Arc<Rendition>, stream: &StreamRef, aac: Option<&[u8]>) -> Self {
        let audio = audio_track(stream, aac);
        let audio_hz = audio.as_ref().map_or(48_000, |t| u64::from(t.timescale()));
        Self {
            rendition,
            zero: Instant::now(),
            zero_wall: SystemTime::now(),
            video: Depacketizer::default(),
            video_sequences: Sequences::default(),
            composition_offset: 0,
            video_clock: Clock::new(90_000),
            audio_clock: Clock::new(audio_hz),
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
                // The RTP timestamp is the presentation time; samples are laid out by decode time.
                let offset = p.delivery.composition_offset;
                let decode_ts = h.timestamp.wrapping_sub(offset as u32);
                let dts = self.video_clock.map(decode_ts, p.epoch, since_zero);
                let sequence =
                    self.video_sequences
                        .map(p.epoch, p.delivery.audience, h.sequence_number);
                let previous_offset = std::mem::replace(&mut self.composition_offset, offset);
                if let Some(au) = self
                    .video
                    .push(sequence, decode_ts, h.marker, &p.rtp.payload)
                {
                    // The picture's decode time is its first packet's; `dts` is this packet's.
                    let (at, offset) = if au.rtp_timestamp == decode_ts {
                        (dts, offset)
                    } else {
                        let back = u64::from(decode_ts.wrapping_sub(au.rtp_timestamp));
                        (dts.saturating_sub(back), previous_offset)
                    };
                    self.on_picture(at, offset, au);
                }
            }
            TrackKind::Audio => {
                // AAC frames come for taps only; the Opus transcode for everyone.
                let wanted = match self.audio {
                    Some(TrackConfig::Aac { .. }) => Audience::Taps,
                    Some(_) => Audience::Everyone,
                    None => return,
                };
                if p.delivery.audience != wanted || p.rtp.payload.is_empty() {
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

    fn on_picture(&mut self, dts: u64, composition_offset: i32, au: h264::AccessUnit) {
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
            tracks.extend(self.audio.clone());
            *guard = Some(Segmenter::new(tracks, self.zero_wall));
            self.rendition
                .progress
                .send_replace(Some(Progress::default()));
        }
        let Some(segmenter) = guard.as_mut() else {
            return;
        };
        if segmenter.push_video(dts, au.keyframe, composition_offset, au.data) {
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
    fn audio_specific_configs() {
        // AAC-LC 44.1 kHz mono; 48 kHz stereo; an explicit rate (index 15); garbage.
        assert_eq!(aac_rate_and_channels(&[0x12, 0x08]), Some((44_100, 1)));
        assert_eq!(aac_rate_and_channels(&[0x11, 0x90]), Some((48_000, 2)));
        assert_eq!(
            aac_rate_and_channels(&[0x17, 0x80, 0x5d, 0xc0, 0x10]),
            Some((48_000, 2))
        );
        assert_eq!(aac_rate_and_channels(&[0x12]), None);
        assert_eq!(aac_rate_and_channels(&[0x16, 0x80]), None);
        assert_eq!(aac_rate_and_channels(&[]), None);
    }

    #[test]
    fn two_sequences_join_into_one_with_gaps_kept() {
        let mut s = Sequences::default();
        let (all, taps) = (Audience::Everyone, Audience::Taps);
        let mapped: Vec<u16> = [(all, 10), (all, 11), (taps, 500), (all, 12), (taps, 501)]
            .into_iter()
            .map(|(a, seq)| s.map(0, a, seq))
            .collect();
        assert_eq!(mapped, [0, 1, 2, 3, 4]);
        // A B-frame packet lost: the joined sequence skips one.
        assert_eq!(s.map(0, taps, 503), 6);
        assert_eq!(s.map(0, all, 13), 7);
        // A new publisher starts after a gap.
        assert_eq!(s.map(1, all, 9000), 9);
        assert_eq!(s.map(1, taps, 7), 10);
    }

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
