//! Recording to fragmented MP4: the init segment once per file, then one `moof` + `mdat` per
//! fragment, with decode times counted from the file's start (each file plays on its own).
//!
//! The boxes are the LL-HLS writer's ([`crate::hls::fmp4`]): one CMAF writer for both.

use super::fragmenter::{Batch, Fragmenter};
use super::piece::{AUDIO_HZ, Muxer, Piece, VIDEO_HZ, ticks};
use crate::hls::fmp4::{self, Run, Sample, TrackConfig};
use bytes::Bytes;
use std::time::Duration;

/// H.264 (+ Opus) to fragmented MP4.
#[derive(Debug)]
pub struct Mp4Muxer {
    init: Vec<u8>,
    has_audio: bool,
    fragmenter: Fragmenter,
    sequence: u32,
}

impl Mp4Muxer {
    /// Files of about `segment`, with `tracks` (video first, then optionally Opus).
    pub fn new(tracks: &[TrackConfig], segment: Duration) -> Self {
        Self {
            init: fmp4::init_segment(tracks),
            has_audio: tracks.len() > 1,
            fragmenter: Fragmenter::new(segment),
            sequence: 0,
        }
    }

    fn start_file(&mut self, out: &mut Vec<Piece>) {
        if let Some(start) = self.fragmenter.take_new_file() {
            self.sequence = 0;
            out.push(Piece::Start {
                header: self.init.clone(),
                extension: "mp4",
                start: ticks(start, VIDEO_HZ),
            });
        }
    }

    fn emit(&mut self, batch: Batch, out: &mut Vec<Piece>) {
        let samples = |frames: &[super::fragmenter::Timed]| -> Vec<Sample> {
            frames
                .iter()
                .map(|f| Sample {
                    duration: f.duration,
                    composition_offset: 0,
                    sync: f.keyframe,
                    data: f.data.clone(),
                })
                .collect()
        };
        let video = samples(&batch.video);
        let audio = samples(&batch.audio);
        let audio_file_start = batch.file_start * AUDIO_HZ / VIDEO_HZ;
        let mut runs = Vec::with_capacity(2);
        if let Some(first) = batch.video.first() {
            runs.push(Run {
                track_id: 1,
                base_decode_time: first.ticks.saturating_sub(batch.file_start),
                samples: &video,
                video: true,
            });
        }
        if let Some(first) = batch.audio.first().filter(|_| self.has_audio) {
            runs.push(Run {
                track_id: 2,
                base_decode_time: first.ticks.saturating_sub(audio_file_start),
                samples: &audio,
                video: false,
            });
        }
        if runs.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        out.push(Piece::Fragment {
            data: fmp4::fragment(self.sequence, &runs),
            end: ticks(batch.end(), VIDEO_HZ),
        });
    }
}

impl Muxer for Mp4Muxer {
    fn push_video(&mut self, at: u64, keyframe: bool, frame: Bytes, out: &mut Vec<Piece>) {
        if let Some(batch) = self.fragmenter.push_video(at, keyframe, frame) {
            self.emit(batch, out);
        }
        self.start_file(out);
    }

    fn push_audio(&mut self, at: u64, frame: Bytes, _out: &mut Vec<Piece>) {
        if self.has_audio {
            self.fragmenter.push_audio(at, frame);
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        if let Some(batch) = self.fragmenter.finish() {
            self.emit(batch, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_starts_with_its_init_segment_and_counts_from_zero() {
        let tracks = [
            TrackConfig::H264 {
                sps: vec![0x67, 0x42, 0xe0, 0x1f],
                pps: vec![0x68, 0xce],
                width: 320,
                height: 240,
            },
            TrackConfig::Opus { channels: 2 },
        ];
        let mut m = Mp4Muxer::new(&tracks, Duration::from_secs(600));
        let mut out = Vec::new();
        for i in 0..40u64 {
            m.push_audio(48_000 + i * 1600, Bytes::from_static(b"op"), &mut out);
            m.push_video(
                90_000 + i * 3000,
                i == 0,
                Bytes::from_static(b"pic"),
                &mut out,
            );
        }
        m.finish(&mut out);
        let Piece::Start { header, start, .. } = &out[0] else {
            panic!("no start: {out:?}");
        };
        assert_eq!(*header, fmp4::init_segment(&tracks));
        assert_eq!(*start, Duration::from_secs(1));
        assert_eq!(out.len(), 3, "init, a fragment at 1 s, the rest at the end");
        let Piece::Fragment { data, end } = &out[1] else {
            panic!("no fragment");
        };
        assert_eq!(*end, Duration::from_secs(2));
        // tfdt of the video run: 0 (the file's own start).
        let tfdt = data.windows(4).position(|w| w == b"tfdt").unwrap();
        assert_eq!(&data[tfdt + 8..tfdt + 16], &0u64.to_be_bytes());
    }
}
