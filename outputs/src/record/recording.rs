//! One stream's recording: the task that reads the stream's packets from a registry tap,
//! turns them into frames on one timeline, muxes them (MP4 for H.264, WebM for VP8) and hands
//! the pieces to the disk writer's queue. Nothing here blocks: the disk is the writer
//! thread's.
//!
//! A new publisher on the same stream (a new epoch) ends the current file and starts a new
//! one at its first keyframe (its codec or picture size may differ).

use super::mp4::Mp4Muxer;
use super::piece::{Muxer, Piece};
use super::timeline::TrackClock;
use super::vp8;
use super::webm::{WebmMuxer, WebmTracks};
use super::writer::Writer;
use crate::hls::fmp4::TrackConfig;
use crate::hls::h264;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use waveguide_control::Engine;
use waveguide_control::media::{Codec, MediaPacket, TrackKind};
use waveguide_control::stream::{StreamRef, Tap};

/// How often a recording still waiting for its first keyframe asks the publisher again.
const KEYFRAME_RETRY: Duration = Duration::from_secs(2);

/// Which video depacketizer a publisher's codec needs.
enum VideoIn {
    H264(h264::Depacketizer),
    Vp8(vp8::Depacketizer),
}

/// Whether a codec can be recorded, and into what.
pub fn container_for(codec: Codec) -> Option<&'static str> {
    match codec {
        Codec::H264 => Some("mp4"),
        Codec::VP8 => Some("webm"),
        _ => None,
    }
}

/// The state of one publisher generation.
struct Generation {
    epoch: u32,
    video: VideoIn,
    video_clock: TrackClock,
    audio_clock: TrackClock,
    audio_channels: Option<u8>,
    muxer: Option<Box<dyn Muxer>>,
}

impl Generation {
    fn new(stream: &StreamRef, epoch: u32) -> Option<Self> {
        let video = stream.tracks.iter().find(|t| t.kind == TrackKind::Video)?;
        let video = match video.codec.codec {
            Codec::H264 => VideoIn::H264(h264::Depacketizer::default()),
            Codec::VP8 => VideoIn::Vp8(vp8::Depacketizer::default()),
            _ => return None,
        };
        let audio_channels = stream
            .tracks
            .iter()
            .find(|t| t.kind == TrackKind::Audio && t.codec.codec == Codec::Opus)
            .map(|t| u8::try_from(t.codec.channels.clamp(1, 2)).unwrap_or(2));
        Some(Self {
            epoch,
            video,
            video_clock: TrackClock::new(90_000),
            audio_clock: TrackClock::new(48_000),
            audio_channels,
            muxer: None,
        })
    }
}

/// The muxing task's state.
pub struct Recording {
    engine: Arc<Engine>,
    stream: StreamRef,
    segment: Duration,
    zero: Instant,
    generation: Option<Generation>,
    writer: Writer,
    out: Vec<Piece>,
    last_keyframe_request: Option<Instant>,
    /// When the file being written began.
    file_started: Option<Instant>,
}

impl Recording {
    /// A recording of `stream` into `writer`, with files of about `segment`; its timeline's
    /// zero is `zero`.
    pub fn new(
        engine: Arc<Engine>,
        stream: StreamRef,
        segment: Duration,
        zero: Instant,
        writer: Writer,
    ) -> Self {
        Self {
            engine,
            stream,
            segment,
            zero,
            generation: None,
            writer,
            out: Vec::new(),
            last_keyframe_request: None,
            file_started: None,
        }
    }

    /// Runs until `stop` turns true, the stream ends, or the writer fails.
    pub async fn run(mut self, mut tap: Tap, mut stop: watch::Receiver<bool>) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let name = self.stream.name.clone();
        self.ask_keyframe();
        let why = loop {
            tokio::select! {
                packet = tap.packets.recv() => match packet {
                    Some(p) => {
                        if !self.on_packet(&p) {
                            break "write failed";
                        }
                    }
                    None => break "tap closed",
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break "stopped";
                    }
                }
                _ = check.tick() => {
                    let live = self.engine.streams().get(&name).is_some_and(|s| s.id == self.stream.id);
                    if !live {
                        break "stream ended";
                    }
                    // Waiting for the first keyframe, or the file is due to end: publishers
                    // such as browsers send keyframes only when asked.
                    let waiting = self.generation.as_ref().is_none_or(|g| g.muxer.is_none());
                    let file_due = self
                        .file_started
                        .is_some_and(|t| t.elapsed() >= self.segment);
                    if waiting || file_due {
                        self.ask_keyframe();
                    }
                }
            }
        };
        drop(tap);
        self.finish_generation();
        tracing::info!(stream = %name, why, "recording ended");
        // Dropping the writer's queue lets its thread write what is queued, close the file
        // and only then report the recording stopped.
    }

    fn ask_keyframe(&mut self) {
        let now = Instant::now();
        if self
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_RETRY)
        {
            return;
        }
        self.last_keyframe_request = Some(now);
        self.engine.request_keyframe(self.stream.id);
    }

    /// Flushes the current publisher's last fragment.
    fn finish_generation(&mut self) {
        if let Some(mut g) = self.generation.take()
            && let Some(muxer) = &mut g.muxer
        {
            muxer.finish(&mut self.out);
        }
        self.flush();
    }

    /// Hands what the muxer made to the writer; false once the writer has gone.
    fn flush(&mut self) -> bool {
        for piece in self.out.drain(..) {
            if matches!(piece, Piece::Start { .. }) {
                self.file_started = Some(Instant::now());
            }
            if self.writer.send(piece).is_err() {
                return false;
            }
        }
        true
    }

    /// One packet; false once the writer has gone (the recording failed).
    fn on_packet(&mut self, p: &MediaPacket) -> bool {
        if self.generation.as_ref().is_none_or(|g| g.epoch != p.epoch) {
            self.finish_generation();
            // The new publisher's tracks (its codec may differ from the last one's).
            if let Some(stream) = self.engine.streams().get(&self.stream.name)
                && stream.id == self.stream.id
            {
                self.stream = stream;
            }
            self.generation = Generation::new(&self.stream, p.epoch);
            self.last_keyframe_request = None;
            self.ask_keyframe();
        }
        let Some(g) = &mut self.generation else {
            return true;
        };
        let since_zero = p.received.saturating_duration_since(self.zero);
        let h = &p.rtp.header;
        match p.kind {
            TrackKind::Video => {
                let at = g.video_clock.map(h.timestamp, since_zero);
                let frame = match &mut g.video {
                    VideoIn::H264(d) => d
                        .push(h.sequence_number, h.timestamp, h.marker, &p.rtp.payload)
                        .map(|au| h264_frame(d, au)),
                    VideoIn::Vp8(d) => d
                        .push(h.sequence_number, h.timestamp, h.marker, &p.rtp.payload)
                        .map(|f| (f.rtp_timestamp, f.keyframe, f.data, None)),
                };
                let Some((rtp_ts, keyframe, data, tracks)) = frame else {
                    return true;
                };
                // The frame's time is its first packet's; `at` is this packet's.
                let at = at.saturating_sub(u64::from(h.timestamp.wrapping_sub(rtp_ts)));
                if g.muxer.is_none() && keyframe {
                    g.muxer = match (&g.video, tracks) {
                        (VideoIn::H264(_), Some((sps, pps, width, height))) => {
                            let mut t = vec![TrackConfig::H264 {
                                sps,
                                pps,
                                width,
                                height,
                            }];
                            if let Some(channels) = g.audio_channels {
                                t.push(TrackConfig::Opus { channels });
                            }
                            Some(Box::new(Mp4Muxer::new(&t, self.segment)))
                        }
                        (VideoIn::Vp8(_), _) => vp8::keyframe_size(&data).map(|(width, height)| {
                            let tracks = WebmTracks {
                                width,
                                height,
                                audio_channels: g.audio_channels,
                            };
                            Box::new(WebmMuxer::new(&tracks, self.segment)) as Box<dyn Muxer>
                        }),
                        _ => None,
                    };
                }
                if let Some(m) = &mut g.muxer {
                    m.push_video(at, keyframe, data, &mut self.out);
                }
            }
            TrackKind::Audio => {
                if g.audio_channels.is_none() || p.rtp.payload.is_empty() {
                    return true;
                }
                let at = g.audio_clock.map(h.timestamp, since_zero);
                if let Some(m) = &mut g.muxer {
                    m.push_audio(at, p.rtp.payload.clone(), &mut self.out);
                }
            }
        }
        self.flush()
    }
}

/// Parameter sets and picture size of an H.264 stream, for its MP4 sample entry.
type H264Config = (Vec<u8>, Vec<u8>, u16, u16);

/// An H.264 picture as MP4 stores it. A keyframe carries the current parameter sets in front
/// (the publisher may change its picture size mid-file; decoders follow in-band sets).
fn h264_frame(
    d: &h264::Depacketizer,
    au: h264::AccessUnit,
) -> (u32, bool, Bytes, Option<H264Config>) {
    if !au.keyframe {
        return (au.rtp_timestamp, false, au.data, None);
    }
    let Some((sps, pps)) = d.parameter_sets() else {
        return (au.rtp_timestamp, true, au.data, None);
    };
    let mut data = BytesMut::with_capacity(8 + sps.len() + pps.len() + au.data.len());
    for nal in [sps, pps] {
        data.put_u32(u32::try_from(nal.len()).unwrap_or(0));
        data.extend_from_slice(nal);
    }
    data.extend_from_slice(&au.data);
    let config = h264::sps_dimensions(sps)
        .map(|(width, height)| (sps.to_vec(), pps.to_vec(), width, height));
    (au.rtp_timestamp, true, data.freeze(), config)
}
