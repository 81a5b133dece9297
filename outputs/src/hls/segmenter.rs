//! The LL-HLS rendition as a state machine: timed samples in, parts and segments (~4 s, cut at
//! keyframes) out, and the media playlist that lists them.
//!
//! Sans-IO: the caller gives decode times on the rendition's timeline (video 90 kHz, audio in
//! its track's timescale: 48 kHz Opus, or the AAC sample rate) and the wall-clock time of the timeline's zero; nothing here reads a clock. A sample's
//! duration is known when the next sample of its track arrives, so each track holds one sample
//! back. Parts are cut on the video track; audio samples go with the part their decode time
//! falls in.

use super::fmp4::{self, Sample, TrackConfig};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// Target duration of a part. Players hold back three of them (`PART-HOLD-BACK`), so this sets
/// most of the latency (4.1 s behind the edge in Chromium with hls.js). Half a second was
/// measured too: on two shared cores hls.js then stalled every few seconds (22 fps of 30, the
/// latency no better), so parts stay at 1 s until that is understood.
pub const PART_TARGET: Duration = Duration::from_secs(1);
/// A segment is cut at the first keyframe at least this far into it.
pub const SEGMENT_TARGET: Duration = Duration::from_secs(4);
/// A segment without a keyframe is cut anyway at this length (a publisher with a long GOP).
const SEGMENT_MAX: Duration = Duration::from_secs(10);
/// Complete segments listed in the playlist (and kept in memory).
const SEGMENTS_KEPT: usize = 6;
/// Complete segments whose parts are still listed (the last ≥ 3 part target durations).
const SEGMENTS_WITH_PARTS: usize = 2;

const VIDEO_HZ: u64 = 90_000;

/// One part: a CMAF chunk (`moof` + `mdat`).
#[derive(Debug, Clone)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
    /// The bytes served.
    pub data: Bytes,
}

/// A segment: its parts, back to back.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Wall-clock time of its first sample.
    pub program_date_time: SystemTime,
    /// Its parts, in order.
    pub parts: Vec<Part>,
    /// Seconds (complete segments only).
    pub duration: f64,
}

impl Segment {
    /// The whole segment's bytes.
    pub fn bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.parts.iter().map(|p| p.data.len()).sum());
        for p in &self.parts {
            out.extend_from_slice(&p.data);
        }
        out.into()
    }
}

#[derive(Debug)]
struct Held {
    dts: u64,
    sample: Sample,
}

/// Where the rendition is, for blocking playlist reloads: the open segment and how many of its
/// parts are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Media sequence number of the segment being written.
    pub msn: u64,
    /// Its complete parts.
    pub parts: u64,
}

/// One rendition: a video track and, optionally, an audio track, muxed together.
#[derive(Debug)]
pub struct Segmenter {
    tracks: Vec<TrackConfig>,
    init: Bytes,
    /// The audio track's timescale, and the length of one of its frames in it.
    audio_hz: u64,
    audio_frame: u32,
    zero: SystemTime,
    held_video: Option<Held>,
    held_audio: Option<Held>,
    part_video: Vec<Sample>,
    part_video_start: Option<u64>,
    part_audio: VecDeque<Held>,
    segments: VecDeque<Segment>,
    open: Option<Segment>,
    open_start: u64,
    next_msn: u64,
    fragments: u32,
    longest_segment: f64,
}

impl Segmenter {
    /// A rendition of `tracks` (video first); decode time zero is wall-clock time `zero`.
    pub fn new(tracks: Vec<TrackConfig>, zero: SystemTime) -> Self {
        let init = fmp4::init_segment(&tracks).into();
        let audio = tracks.get(1);
        let audio_hz = audio.map_or(48_000, |t| u64::from(t.timescale().max(1)));
        let audio_frame = match audio {
            Some(TrackConfig::Aac { .. }) => 1024,
            _ => 960,
        };
        Self {
            tracks,
            init,
            audio_hz,
            audio_frame,
            zero,
            held_video: None,
            held_audio: None,
            part_video: Vec::new(),
            part_video_start: None,
            part_audio: VecDeque::new(),
            segments: VecDeque::new(),
            open: None,
            open_start: 0,
            next_msn: 0,
            fragments: 0,
            longest_segment: 0.0,
        }
    }

    /// The init segment.
    pub fn init(&self) -> &Bytes {
        &self.init
    }

    /// The tracks, as the init segment describes them.
    pub fn tracks(&self) -> &[TrackConfig] {
        &self.tracks
    }

    fn has_audio(&self) -> bool {
        self.tracks.len() > 1
    }

    /// Where the rendition is.
    pub fn progress(&self) -> Progress {
        match &self.open {
            Some(s) => Progress {
                msn: s.msn,
                parts: s.parts.len() as u64,
            },
            None => Progress {
                msn: self.next_msn,
                parts: 0,
            },
        }
    }

    /// Adds a video picture decoded at `dts` (90 kHz); returns whether a part was completed.
    /// Pictures before the first keyframe are dropped.
    pub fn push_video(
        &mut self,
        dts: u64,
        keyframe: bool,
        composition_offset: i32,
        data: Bytes,
    ) -> bool {
        if self.held_video.is_none() && self.open.is_none() && !keyframe {
            return false;
        }
        let mut frame_secs = 0.0;
        if let Some(mut held) = self.held_video.take() {
            let frame = dts.saturating_sub(held.dts);
            // A gap or a jump back (publisher change): assume one 30 fps frame.
            held.sample.duration = if frame == 0 || frame > VIDEO_HZ {
                3000
            } else {
                frame as u32
            };
            frame_secs = ticks_to_secs(u64::from(held.sample.duration), VIDEO_HZ);
            self.part_video_start.get_or_insert(held.dts);
            self.part_video.push(held.sample);
        }
        let mut cut = false;
        if let Some(part_start) = self.part_video_start {
            let segment_age = ticks_to_secs(dts.saturating_sub(self.open_start), VIDEO_HZ);
            let new_segment = (keyframe && segment_age >= SEGMENT_TARGET.as_secs_f64() - 0.001)
                || segment_age >= SEGMENT_MAX.as_secs_f64();
            // Cut when one more picture would take the part past its target: parts never
            // exceed `PART-TARGET` (beyond timestamp jitter), as the spec asks.
            let part_age = ticks_to_secs(dts.saturating_sub(part_start), VIDEO_HZ);
            let full = part_age + frame_secs > PART_TARGET.as_secs_f64() + 0.001;
            if new_segment || keyframe || full {
                self.cut_part(dts);
                cut = true;
            }
            if new_segment {
                self.close_segment();
            }
        }
        if self.open.is_none() {
            self.open = Some(Segment {
                msn: self.next_msn,
                program_date_time: self.zero
                    + Duration::from_secs_f64(ticks_to_secs(dts, VIDEO_HZ)),
                parts: Vec::new(),
                duration: 0.0,
            });
            self.next_msn += 1;
            self.open_start = dts;
        }
        self.held_video = Some(Held {
            dts,
            sample: Sample {
                duration: 0,
                composition_offset,
                sync: keyframe,
                data,
            },
        });
        cut
    }

    /// Adds an audio frame decoded at `dts` (in the audio track's timescale).
    pub fn push_audio(&mut self, dts: u64, data: Bytes) {
        if !self.has_audio() {
            return;
        }
        if let Some(mut held) = self.held_audio.take() {
            let frame = dts.saturating_sub(held.dts);
            held.sample.duration = if frame == 0 || frame > self.audio_hz {
                self.audio_frame
            } else {
                frame as u32
            };
            // Audio from before the first picture has no part to go in.
            if self.open.is_some() {
                self.part_audio.push_back(held);
            }
        }
        self.held_audio = Some(Held {
            dts,
            sample: Sample {
                duration: 0,
                composition_offset: 0,
                sync: true,
                data,
            },
        });
    }

    /// Ends the part at video decode time `end`: the video samples so far, and the audio that
    /// starts before `end`.
    fn cut_part(&mut self, end: u64) {
        let Some(start) = self.part_video_start.take() else {
            return;
        };
        let video = std::mem::take(&mut self.part_video);
        let audio_end = end * self.audio_hz / VIDEO_HZ;
        let mut audio = Vec::new();
        let mut audio_start = None;
        while let Some(h) = self.part_audio.front() {
            if h.dts >= audio_end {
                break;
            }
            let Some(h) = self.part_audio.pop_front() else {
                break;
            };
            audio_start.get_or_insert(h.dts);
            audio.push(h.sample);
        }
        let mut runs = vec![fmp4::Run {
            track_id: 1,
            base_decode_time: start,
            samples: &video,
            video: true,
        }];
        if let Some(audio_start) = audio_start {
            runs.push(fmp4::Run {
                track_id: 2,
                base_decode_time: audio_start,
                samples: &audio,
                video: false,
            });
        }
        self.fragments = self.fragments.wrapping_add(1);
        let data = fmp4::fragment(self.fragments, &runs);
        let duration = ticks_to_secs(end.saturating_sub(start), VIDEO_HZ);
        if let Some(open) = &mut self.open {
            open.parts.push(Part {
                duration,
                independent: video.first().is_some_and(|s| s.sync),
                data: data.into(),
            });
        }
    }

    fn close_segment(&mut self) {
        let Some(mut segment) = self.open.take() else {
            return;
        };
        segment.duration = segment.parts.iter().map(|p| p.duration).sum();
        self.longest_segment = self.longest_segment.max(segment.duration);
        self.segments.push_back(segment);
        while self.segments.len() > SEGMENTS_KEPT {
            self.segments.pop_front();
        }
    }

    /// A complete segment still held.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// A part still held (of a complete or the open segment).
    pub fn part(&self, msn: u64, index: usize) -> Option<&Part> {
        self.segments
            .iter()
            .chain(self.open.as_ref())
            .find(|s| s.msn == msn)?
            .parts
            .get(index)
    }

    /// `EXT-X-TARGETDURATION`: segment target, or the longest segment when a GOP is longer.
    fn target_duration(&self) -> u64 {
        (self.longest_segment.round() as u64).max(SEGMENT_TARGET.as_secs())
    }

    /// The media playlist. URIs are relative: `init.mp4`, `seg{msn}.m4s`, `part{msn}.{i}.m4s`.
    pub fn media_playlist(&self) -> String {
        let mut out = String::with_capacity(2048);
        let part_target = PART_TARGET.as_secs_f64();
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n",
            self.target_duration(),
            part_target * 3.0,
            part_target,
            self.segments.front().map_or(self.progress().msn, |s| s.msn),
        );
        let with_parts = self.segments.len().saturating_sub(SEGMENTS_WITH_PARTS);
        for (i, s) in self.segments.iter().enumerate() {
            write_program_date_time(&mut out, s.program_date_time);
            if i >= with_parts {
                write_parts(&mut out, s);
            }
            let _ = write!(out, "#EXTINF:{:.3},\nseg{}.m4s\n", s.duration, s.msn);
        }
        if let Some(open) = &self.open {
            if self.segments.is_empty() {
                write_program_date_time(&mut out, open.program_date_time);
            }
            write_parts(&mut out, open);
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{}.{}.m4s\"",
                open.msn,
                open.parts.len()
            );
        }
        out
    }
}

fn write_parts(out: &mut String, s: &Segment) {
    for (i, p) in s.parts.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.3},URI=\"part{}.{}.m4s\"{}",
            p.duration,
            s.msn,
            i,
            if p.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    }
}

fn write_program_date_time(out: &mut String, t: SystemTime) {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(ms));
}

/// `2026-12-04T16:23:35.123Z` for Unix milliseconds.
fn iso8601_ms(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn ticks_to_secs(ticks: u64, hz: u64) -> f64 {
    ticks as f64 / hz as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segmenter(audio: bool) -> Segmenter {
        let mut tracks = vec![TrackConfig::H264 {
            sps: vec![0x67, 0x42, 0xc0, 0x1f],
            pps: vec![0x68, 0xce],
            width: 640,
            height: 480,
        }];
        if audio {
            tracks.push(TrackConfig::Opus { channels: 2 });
        }
        Segmenter::new(
            tracks,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_865_415),
        )
    }

    /// Feeds `seconds` of 30 fps video with a keyframe every `gop` frames, and 20 ms audio.
    fn feed(s: &mut Segmenter, seconds: u64, gop: u64) {
        let frames = seconds * 30;
        for f in 0..frames {
            // Audio frames up to this picture's time, as they interleave on the wire.
            let t = f * 3000;
            let mut a = s.held_audio.as_ref().map_or(0, |h| h.dts + 960);
            while a * 90_000 / 48_000 <= t {
                s.push_audio(a, Bytes::from_static(b"aud"));
                a += 960;
            }
            s.push_video(t, f % gop == 0, 0, Bytes::from_static(b"pic"));
        }
    }

    #[test]
    fn parts_of_one_second_and_segments_at_keyframes() {
        let mut s = segmenter(true);
        feed(&mut s, 13, 60); // keyframe every 2 s
        // Segments start at 0, 4, 8, 12 s; 12 s is open with no complete part yet.
        let msns: Vec<u64> = s.segments.iter().map(|x| x.msn).collect();
        assert_eq!(msns, [0, 1, 2]);
        for seg in &s.segments {
            assert!((seg.duration - 4.0).abs() < 1e-9, "{}", seg.duration);
            assert_eq!(seg.parts.len(), 4);
            assert!(seg.parts.iter().all(|p| (p.duration - 1.0).abs() < 1e-9));
            assert!(seg.parts[0].independent);
            assert!(!seg.parts[1].independent);
            assert!(seg.parts[2].independent, "keyframe at 2 s starts a part");
        }
        assert_eq!(s.progress(), Progress { msn: 3, parts: 0 });
        let p = s.media_playlist();
        assert!(p.contains("#EXT-X-TARGETDURATION:4\n"), "{p}");
        assert!(p.contains("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000"));
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=1.000"));
        assert!(p.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        assert!(
            p.contains("#EXT-X-PROGRAM-DATE-TIME:2025-12-04T16:23:35.000Z\n"),
            "{p}"
        );
        assert!(p.contains("#EXTINF:4.000,\nseg0.m4s\n"));
        // Parts only for the last two complete segments.
        assert!(!p.contains("part0.0.m4s"));
        assert!(p.contains("#EXT-X-PART:DURATION=1.000,URI=\"part1.0.m4s\",INDEPENDENT=YES\n"));
        assert!(p.contains("#EXT-X-PART:DURATION=1.000,URI=\"part2.3.m4s\"\n"));
        assert!(
            p.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part3.0.m4s\"\n"),
            "{p}"
        );
        // Every part of a segment carries audio too: two trafs.
        let part = s.part(1, 1).unwrap();
        assert_eq!(part.data.windows(4).filter(|w| w == b"traf").count(), 2);
        assert_eq!(
            s.segment(1).unwrap().bytes().len(),
            s.segment(1)
                .unwrap()
                .parts
                .iter()
                .map(|p| p.data.len())
                .sum::<usize>()
        );
    }

    #[test]
    fn waits_for_a_keyframe_and_keeps_a_bounded_window() {
        let mut s = segmenter(false);
        assert!(!s.push_video(0, false, 0, Bytes::from_static(b"p")));
        assert!(s.open.is_none(), "no segment before a keyframe");
        feed(&mut s, 60, 120);
        assert_eq!(s.segments.len(), SEGMENTS_KEPT);
        assert!(s.segment(0).is_none() && s.part(0, 0).is_none());
        let p = s.media_playlist();
        let first = s.segments.front().unwrap().msn;
        assert!(p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
        assert_eq!(p.matches("#EXT-X-PROGRAM-DATE-TIME").count(), SEGMENTS_KEPT);
    }

    #[test]
    fn a_long_gop_stretches_the_target_duration() {
        let mut s = segmenter(false);
        feed(&mut s, 40, 30 * 12); // keyframe every 12 s: cut at 10 s anyway
        assert!(s.segments.iter().all(|x| x.duration <= 10.0 + 1e-9));
        assert!(s.media_playlist().contains("#EXT-X-TARGETDURATION:10\n"));
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
