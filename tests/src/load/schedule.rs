//! When things happen, as offsets from a start instant: the viewer ramp and the publisher's
//! media clock. Pure arithmetic; the tasks turn offsets into sleeps.

use std::time::Duration;

/// Opus frame duration: 20 ms, what browsers send.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// When viewer `index` (0-based) starts, ramping at `per_second` viewers a second: the first
/// at once, then one every `1 / per_second`.
pub fn viewer_offset(index: usize, per_second: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / per_second)
}

/// How long starting `viewers` takes at `per_second`: the offset of the last one.
pub fn ramp_length(viewers: usize, per_second: f64) -> Duration {
    viewer_offset(viewers.saturating_sub(1), per_second)
}

/// One unit of media the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Video frame `n` (counting from 0 across clip loops).
    Video(u64),
    /// Audio frame `n`.
    Audio(u64),
}

/// The publisher's media clock: video frames at `fps`, audio frames every 20 ms, merged in
/// time order (video first on a tie). Frame `n` is due at `n / fps` exactly, so sleeping for
/// each tick in turn accumulates no drift.
#[derive(Debug, Clone)]
pub struct MediaClock {
    fps: u32,
    video: u64,
    audio: u64,
}

impl MediaClock {
    pub fn new(fps: u32) -> Self {
        Self {
            fps: fps.max(1),
            video: 0,
            audio: 0,
        }
    }

    fn video_at(&self) -> Duration {
        Duration::from_nanos(self.video * 1_000_000_000 / u64::from(self.fps))
    }

    fn audio_at(&self) -> Duration {
        AUDIO_FRAME * self.audio as u32
    }

    /// The next tick and its offset from the start, without consuming it.
    pub fn peek(&self) -> (Tick, Duration) {
        let (v, a) = (self.video_at(), self.audio_at());
        if v <= a {
            (Tick::Video(self.video), v)
        } else {
            (Tick::Audio(self.audio), a)
        }
    }

    /// Consumes the tick [`Self::peek`] returns.
    pub fn advance(&mut self) {
        match self.peek().0 {
            Tick::Video(_) => self.video += 1,
            Tick::Audio(_) => self.audio += 1,
        }
    }
}

/// RTP timestamp increment per video frame (90 kHz clock).
pub fn video_ts_step(fps: u32) -> u32 {
    90_000 / fps.max(1)
}

/// RTP timestamp increment per 20 ms Opus frame (48 kHz clock).
pub const AUDIO_TS_STEP: u32 = 960;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_spaces_viewers_evenly() {
        assert_eq!(viewer_offset(0, 50.0), Duration::ZERO);
        assert_eq!(viewer_offset(1, 50.0), Duration::from_millis(20));
        assert_eq!(viewer_offset(100, 50.0), Duration::from_secs(2));
        assert_eq!(viewer_offset(3, 2.0), Duration::from_millis(1500));
        assert_eq!(ramp_length(101, 50.0), Duration::from_secs(2));
        assert_eq!(ramp_length(1, 50.0), Duration::ZERO);
        assert_eq!(ramp_length(0, 50.0), Duration::ZERO);
    }

    #[test]
    fn media_clock_gives_30_frames_and_50_audio_packets_a_second_in_order() {
        let mut clock = MediaClock::new(30);
        let (mut video, mut audio) = (0, 0);
        let mut last = Duration::ZERO;
        loop {
            let (tick, at) = clock.peek();
            if at >= Duration::from_secs(1) {
                break;
            }
            assert!(at >= last, "ticks out of order: {at:?} after {last:?}");
            last = at;
            match tick {
                Tick::Video(n) => {
                    assert_eq!(n, video);
                    video += 1;
                }
                Tick::Audio(n) => {
                    assert_eq!(n, audio);
                    audio += 1;
                }
            }
            clock.advance();
        }
        assert_eq!((video, audio), (30, 50));
    }

    #[test]
    fn media_clock_does_not_drift() {
        let mut clock = MediaClock::new(30);
        let mut frames = 0;
        while frames < 30 * 3600 {
            if let (Tick::Video(_), at) = clock.peek() {
                if frames == 30 * 3600 - 1 {
                    // Frame 107,999 is due 1/30 s before the hour, to the nanosecond.
                    assert_eq!(
                        at,
                        Duration::from_secs(3600) - Duration::from_nanos(33_333_334)
                    );
                }
                frames += 1;
            }
            clock.advance();
        }
    }

    #[test]
    fn timestamp_steps() {
        assert_eq!(video_ts_step(30), 3000);
        assert_eq!(video_ts_step(25), 3600);
        assert_eq!(AUDIO_TS_STEP * 50, 48_000);
    }
}
