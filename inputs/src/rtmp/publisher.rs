//! From an accepted `publish` to RTP: decides the stream's tracks once the sequence headers
//! have arrived, holds the first frames until then, and turns every later video and audio
//! message into RTP packets for the control.
//!
//! Sans-IO like the session: owns no socket, no clock and no stream; `server` carries the
//! packets to the control's `Ingest` and turns [`Notice`]s into log lines.

use super::audio::AudioTranscoder;
use super::audio::passthrough::AacPassthrough;
use super::commands::Metadata;
use super::error::MediaError;
use super::flv::{self, AudioTag, VideoTag};
use super::video::VideoTrack;
use bytes::Bytes;
use rtc::rtp;
use std::collections::VecDeque;
use waveguide_control::media::{Audience, Codec, CodecParams, Delivery, TrackKind};
use waveguide_control::stream::TrackInfo;

/// Coded frames held before the tracks are known; past this the stream starts with the
/// tracks it has (about a second of video plus audio).
const MAX_PENDING_FRAMES: usize = 90;
/// Bytes held before the tracks are known.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// The Opus format viewers are offered (the answer takes the viewer's own parameters).
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1";

/// One packet for the control: its track, the packet, and who gets it.
pub type Outgoing = (TrackKind, rtp::Packet, Delivery);

/// Something the operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The stream has B-frames, and this is what happens to them.
    BFrames(super::video::BFrames),
    /// A new AVC sequence header differs from the first (resolution or profile change).
    VideoConfigChanged,
    /// A track's sequence header arrived after the stream started; its media is dropped.
    LateTrack(TrackKind),
}

/// One publisher's media state.
#[derive(Debug)]
pub struct Publisher {
    video: VideoTrack,
    audio: Option<AudioTranscoder>,
    /// The AAC frames as sent, for taps, with their `AudioSpecificConfig`.
    aac: Option<(AacPassthrough, Bytes)>,
    audio_ssrc: u32,
    audio_sequence: u16,
    expect_video: Option<bool>,
    expect_audio: Option<bool>,
    pending: VecDeque<(TrackKind, u32, Bytes)>,
    pending_bytes: usize,
    /// The tracks, once started.
    started: Option<Vec<TrackKind>>,
    notices: Vec<Notice>,
    /// Whether a WebRTC viewer watches; the AAC → Opus transcode (the only costly step) waits
    /// until one does (taps take the AAC as sent). The transcoder re-anchors its timestamps on the gap, so they stay true.
    audio_wanted: bool,
    late_reported: [bool; 2],
    rtp: Vec<rtp::Packet>,
}

impl Publisher {
    /// A publisher whose video and audio use these SSRCs and first sequence numbers.
    pub fn new(video_ssrc: u32, audio_ssrc: u32, first_sequences: (u16, u16)) -> Self {
        Self {
            video: VideoTrack::new(video_ssrc, first_sequences.0),
            audio: None,
            aac: None,
            audio_ssrc,
            audio_sequence: first_sequences.1,
            expect_video: None,
            expect_audio: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            started: None,
            notices: Vec::new(),
            audio_wanted: true,
            late_reported: [false; 2],
            rtp: Vec::new(),
        }
    }

    /// Notes which tracks `onMetaData` announces, so the start need not wait for a track that
    /// will never come.
    pub fn on_metadata(&mut self, meta: &Metadata) {
        self.expect_video = Some(meta.video_codec.is_some());
        self.expect_audio = Some(meta.audio_codec.is_some());
    }

    /// What the operator should hear about since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The AAC input being transcoded, for the log.
    pub fn audio_input(&self) -> Option<super::audio::aac::AacConfig> {
        self.audio.as_ref().map(AudioTranscoder::input)
    }

    /// The AAC `AudioSpecificConfig` of the audio track, once its sequence header arrived.
    pub fn aac_config(&self) -> Option<&Bytes> {
        self.aac.as_ref().map(|(_, asc)| asc)
    }

    /// The real `profile-level-id` of the video (the SPS's), for the log.
    pub fn video_profile(&self) -> Option<String> {
        self.video
            .config()
            .map(super::h264::AvcConfig::profile_level_id)
    }

    /// Whether the stream has started.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// Whether the tracks are known and the caller should start the stream.
    pub fn is_ready(&self) -> bool {
        if self.started.is_some() {
            return false;
        }
        let video = self.video.config().is_some();
        let audio = self.audio.is_some();
        if !video && !audio {
            return false;
        }
        let video_settled = video || self.expect_video == Some(false);
        let audio_settled = audio || self.expect_audio == Some(false);
        (video_settled && audio_settled)
            || self.pending.len() >= MAX_PENDING_FRAMES
            || self.pending_bytes >= MAX_PENDING_BYTES
    }

    /// The tracks the stream will have: H.264 with the SPS's profile, Opus stereo.
    pub fn tracks(&self) -> Vec<TrackInfo> {
        let mut tracks = Vec::new();
        if self.audio.is_some() {
            tracks.push(TrackInfo {
                kind: TrackKind::Audio,
                codec: CodecParams {
                    codec: Codec::Opus,
                    fmtp: OPUS_FMTP.to_owned(),
                    channels: 2,
                },
            });
        }
        if let Some(config) = self.video.config() {
            tracks.push(TrackInfo {
                kind: TrackKind::Video,
                codec: CodecParams {
                    codec: Codec::H264,
                    fmtp: config.fmtp(),
                    channels: 0,
                },
            });
        }
        tracks
    }

    /// Starts the stream with [`Publisher::tracks`]: the held frames come out as packets.
    pub fn start(&mut self, out: &mut Vec<Outgoing>) -> Result<(), MediaError> {
        self.started = Some(self.tracks().iter().map(|t| t.kind).collect());
        self.pending_bytes = 0;
        while let Some((kind, ts, payload)) = self.pending.pop_front() {
            match kind {
                TrackKind::Video => self.on_video(ts, payload, out)?,
                TrackKind::Audio => self.on_audio(ts, payload, out)?,
            }
        }
        Ok(())
    }

    fn has_track(&mut self, kind: TrackKind) -> bool {
        match &self.started {
            None => true,
            Some(kinds) if kinds.contains(&kind) => true,
            Some(_) => {
                if !self.late_reported[kind.index()] {
                    self.late_reported[kind.index()] = true;
                    self.notices.push(Notice::LateTrack(kind));
                }
                false
            }
        }
    }

    fn hold(&mut self, kind: TrackKind, ts: u32, payload: Bytes) {
        self.pending_bytes += payload.len();
        self.pending.push_back((kind, ts, payload));
    }

    /// Whether audio must be transcoded now (someone watches, or the stream is starting).
    pub fn set_audio_wanted(&mut self, wanted: bool) {
        self.audio_wanted = wanted;
    }

    /// A video message body with RTMP timestamp `ts`.
    pub fn on_video(
        &mut self,
        ts: u32,
        payload: Bytes,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), MediaError> {
        let tag = flv::parse_video(&payload)?;
        if let VideoTag::Frame { .. } = tag {
            if self.video.config().is_none() || !self.has_track(TrackKind::Video) {
                // No decoder could use a frame without its parameter sets.
                return Ok(());
            }
            if self.started.is_none() {
                self.hold(TrackKind::Video, ts, payload);
                return Ok(());
            }
        }
        let result = self.video.push(ts, tag)?;
        if let Some(policy) = result.b_frames {
            self.notices.push(Notice::BFrames(policy));
        }
        if result.config_changed {
            self.notices.push(Notice::VideoConfigChanged);
        }
        let delivery = result.delivery;
        out.extend(
            result
                .packets
                .into_iter()
                .map(|p| (TrackKind::Video, p, delivery)),
        );
        Ok(())
    }

    /// An audio message body with RTMP timestamp `ts`.
    pub fn on_audio(
        &mut self,
        ts: u32,
        payload: Bytes,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), MediaError> {
        match flv::parse_audio(&payload)? {
            AudioTag::SequenceHeader(asc) => {
                let same = self.audio.as_ref().is_some_and(|a| {
                    super::audio::aac::AacConfig::parse(&asc).ok() == Some(a.input())
                });
                if !same {
                    let (ssrc, seq) = (self.audio_ssrc, self.audio_sequence);
                    let transcoder = AudioTranscoder::new(&asc, ssrc, seq)?;
                    let rate = transcoder.input().sample_rate;
                    // Its own sequence: viewers never see these packets.
                    let aac = AacPassthrough::new(rate, ssrc, seq.wrapping_add(0x8000));
                    self.aac = Some((aac, asc));
                    self.audio = Some(transcoder);
                }
            }
            AudioTag::Frame(frame) => {
                if self.audio.is_none() || !self.has_track(TrackKind::Audio) {
                    return Ok(());
                }
                if self.started.is_none() {
                    self.hold(TrackKind::Audio, ts, payload);
                    return Ok(());
                }
                if let Some((aac, _)) = &mut self.aac {
                    let taps = Delivery {
                        audience: Audience::Taps,
                        composition_offset: 0,
                    };
                    out.push((TrackKind::Audio, aac.push(ts, frame.clone()), taps));
                }
                if !self.audio_wanted {
                    return Ok(());
                }
                if let Some(audio) = &mut self.audio {
                    self.rtp.clear();
                    audio.push(ts, &frame, &mut self.rtp)?;
                    if let Some(last) = self.rtp.last() {
                        self.audio_sequence = last.header.sequence_number.wrapping_add(1);
                    }
                    out.extend(
                        self.rtp
                            .drain(..)
                            .map(|p| (TrackKind::Audio, p, Delivery::default())),
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
