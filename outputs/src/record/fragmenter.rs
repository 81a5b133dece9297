//! Where a recording is cut: into fragments of about a second (and at every keyframe), and
//! into files of about `segment_secs`, always at a keyframe. Shared by both containers.
//!
//! Sans-IO: frames with their times in, [`Batch`]es (one fragment's frames, with their
//! durations) out. A frame's duration is known when the next frame of its track arrives, so
//! each track holds one frame back. Nothing before the first keyframe is kept: a file starts
//! with a picture a decoder can start from.

use super::piece::{AUDIO_HZ, VIDEO_HZ};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Target length of a fragment (what a crash may lose at most).
pub const FRAGMENT_TARGET: Duration = Duration::from_secs(1);
/// Video frames assumed 30 fps where no later frame tells (the last one, or a jump).
const DEFAULT_VIDEO_FRAME: u32 = 3000;
/// Opus frames are 20 ms unless the stream says otherwise.
const DEFAULT_AUDIO_FRAME: u32 = 960;

/// One frame with its time and duration, in its track's ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// Time since the recording's zero (90 kHz video, 48 kHz audio).
    pub ticks: u64,
    /// Until the next frame of the track.
    pub duration: u32,
    /// A picture a decoder can start at (every audio frame).
    pub keyframe: bool,
    /// The frame.
    pub data: Bytes,
}

/// One fragment's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// This fragment begins a new file.
    pub first_of_file: bool,
    /// Video time (90 kHz) the file begins at.
    pub file_start: u64,
    /// Video frames in decode order; the first one is a keyframe when `first_of_file`.
    pub video: Vec<Timed>,
    /// Audio frames that begin before the fragment's end.
    pub audio: Vec<Timed>,
}

impl Batch {
    /// Video time (90 kHz) the fragment ends at.
    pub fn end(&self) -> u64 {
        let video = self.video.last().map(|f| f.ticks + u64::from(f.duration));
        let audio = self
            .audio
            .last()
            .map(|f| (f.ticks + u64::from(f.duration)) * VIDEO_HZ / AUDIO_HZ);
        video.max(audio).unwrap_or(self.file_start)
    }
}

/// The cutting state of one recording.
#[derive(Debug)]
pub struct Fragmenter {
    segment_ticks: u64,
    held_video: Option<Timed>,
    held_audio: Option<Timed>,
    video: Vec<Timed>,
    audio: VecDeque<Timed>,
    file_start: Option<u64>,
    /// Where the first file began: audio from before it is dropped.
    first_start: Option<u64>,
    fragment_start: u64,
    next_starts_file: bool,
    /// A file begins at this video time: not yet told to the muxer.
    new_file: Option<u64>,
    last_video_frame: u32,
    last_audio_frame: u32,
}

impl Fragmenter {
    /// Files of about `segment` each.
    pub fn new(segment: Duration) -> Self {
        Self {
            segment_ticks: (segment.as_secs_f64() * VIDEO_HZ as f64) as u64,
            held_video: None,
            held_audio: None,
            video: Vec::new(),
            audio: VecDeque::new(),
            file_start: None,
            first_start: None,
            fragment_start: 0,
            next_starts_file: false,
            new_file: None,
            last_video_frame: DEFAULT_VIDEO_FRAME,
            last_audio_frame: DEFAULT_AUDIO_FRAME,
        }
    }

    /// A video frame at `ticks` (90 kHz); returns the fragment it completed, if any.
    pub fn push_video(&mut self, ticks: u64, keyframe: bool, data: Bytes) -> Option<Batch> {
        let frame = Timed {
            ticks,
            duration: 0,
            keyframe,
            data,
        };
        let Some(file_start) = self.file_start else {
            if keyframe {
                self.file_start = Some(ticks);
                self.first_start = Some(ticks);
                self.fragment_start = ticks;
                self.next_starts_file = true;
                self.new_file = Some(ticks);
                self.held_video = Some(frame);
            }
            return None;
        };
        let mut batch = None;
        if let Some(mut held) = self.held_video.take() {
            let gap = ticks.saturating_sub(held.ticks);
            // Nothing or a jump of over a second (a stall, a reordered picture): keep the pace.
            if gap > 0 && gap <= VIDEO_HZ {
                self.last_video_frame = gap as u32;
            }
            held.duration = self.last_video_frame;
            self.video.push(held);
        }
        let fragment_age = ticks.saturating_sub(self.fragment_start);
        let target = (FRAGMENT_TARGET.as_secs_f64() * VIDEO_HZ as f64) as u64;
        if !self.video.is_empty() && (keyframe || fragment_age >= target) {
            batch = Some(self.cut(ticks, file_start));
            if keyframe && ticks.saturating_sub(file_start) >= self.segment_ticks {
                self.file_start = Some(ticks);
                self.next_starts_file = true;
                self.new_file = Some(ticks);
            }
        }
        self.held_video = Some(frame);
        batch
    }

    /// A new file begins at this video time (90 kHz), told once: at the keyframe that starts
    /// it, after the fragment that ends the file before (so the file exists from its first
    /// picture on, not a fragment later).
    pub fn take_new_file(&mut self) -> Option<u64> {
        self.new_file.take()
    }

    /// An audio frame at `ticks` (48 kHz). Audio from before the first file's start is dropped.
    pub fn push_audio(&mut self, ticks: u64, data: Bytes) {
        if let Some(mut held) = self.held_audio.take() {
            let gap = ticks.saturating_sub(held.ticks);
            if gap > 0 && gap <= AUDIO_HZ {
                self.last_audio_frame = gap as u32;
            }
            held.duration = self.last_audio_frame;
            if self
                .first_start
                .is_some_and(|start| held.ticks * VIDEO_HZ >= start * AUDIO_HZ)
            {
                self.audio.push_back(held);
            }
        }
        self.held_audio = Some(Timed {
            ticks,
            duration: 0,
            keyframe: true,
            data,
        });
    }

    /// The recording ends: the last fragment, with everything held.
    pub fn finish(&mut self) -> Option<Batch> {
        let file_start = self.file_start?;
        if let Some(mut held) = self.held_video.take() {
            held.duration = self.last_video_frame;
            self.video.push(held);
        }
        if let Some(mut held) = self.held_audio.take() {
            held.duration = self.last_audio_frame;
            if self
                .first_start
                .is_some_and(|start| held.ticks * VIDEO_HZ >= start * AUDIO_HZ)
            {
                self.audio.push_back(held);
            }
        }
        if self.video.is_empty() && self.audio.is_empty() {
            return None;
        }
        Some(self.cut(u64::MAX / AUDIO_HZ, file_start))
    }

    /// The fragment of everything before video time `end`.
    fn cut(&mut self, end: u64, file_start: u64) -> Batch {
        let audio_end = end.saturating_mul(AUDIO_HZ) / VIDEO_HZ;
        let split = self
            .audio
            .iter()
            .position(|f| f.ticks >= audio_end)
            .unwrap_or(self.audio.len());
        let audio = self.audio.drain(..split).collect();
        let first_of_file = std::mem::take(&mut self.next_starts_file);
        self.fragment_start = end;
        Batch {
            first_of_file,
            file_start,
            video: std::mem::take(&mut self.video),
            audio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn starts_at_a_keyframe_and_cuts_fragments_and_files() {
        let mut f = Fragmenter::new(Duration::from_secs(2));
        // Before the first keyframe: dropped, audio too.
        f.push_audio(0, b(0));
        assert!(f.push_video(0, false, b(1)).is_none());
        assert!(f.push_video(3000, true, b(2)).is_none());
        f.push_audio(960, b(3));
        let mut batches = Vec::new();
        let mut audio_at = 1920;
        for i in 2..=75u64 {
            while audio_at * VIDEO_HZ < i * 3000 * AUDIO_HZ {
                f.push_audio(audio_at, b(4));
                audio_at += 960;
            }
            // A keyframe every second (30 frames).
            let key = i % 30 == 1;
            if let Some(batch) = f.push_video(i * 3000, key, b(5)) {
                batches.push(batch);
            }
        }
        batches.extend(f.finish());
        assert!(batches[0].first_of_file && batches[0].file_start == 3000);
        assert!(batches[0].video[0].keyframe);
        // Cut at each keyframe (frames 31, 61): fragments of 30 frames after the first.
        assert_eq!(batches[0].video.len(), 30);
        assert_eq!(batches[1].video.len(), 30);
        assert!(!batches[1].first_of_file);
        // The file is 2 s old at frame 61: the fragment after that begins a new file.
        assert!(batches[2].first_of_file && batches[2].file_start == 61 * 3000);
        assert!(
            batches
                .iter()
                .all(|b| b.video.iter().all(|f| f.duration == 3000))
        );
        // Audio: nothing from before the first keyframe, each frame in the fragment its time
        // falls in, every frame once.
        assert_eq!(batches[0].audio[0].ticks, 1920);
        for b in &batches[..batches.len() - 1] {
            let end = b
                .video
                .last()
                .map(|f| f.ticks + u64::from(f.duration))
                .unwrap();
            assert!(b.audio.iter().all(|a| a.ticks * VIDEO_HZ < end * AUDIO_HZ));
        }
        let audio: usize = batches.iter().map(|b| b.audio.len()).sum();
        assert_eq!(audio as u64, (audio_at - 1920) / 960);
    }

    #[test]
    fn a_long_gop_still_cuts_fragments_of_a_second() {
        let mut f = Fragmenter::new(Duration::from_secs(600));
        let mut batches = Vec::new();
        for i in 0..100u64 {
            batches.extend(f.push_video(i * 3000, i == 0, b(0)));
        }
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.video.len() == 30));
        assert!(batches[0].first_of_file && !batches[1].first_of_file);
    }
}
