//! One track's RTP timestamps on the recording's timeline.
//!
//! The first packet of a track is placed at its arrival time after the recording's zero (so
//! audio and video start in step), later ones follow the RTP clock (arrival jitter does not
//! matter). Sans-IO: the time since zero is passed in.

use std::time::Duration;

/// Maps one track's RTP timestamps (one publisher generation) to ticks since the zero.
#[derive(Debug)]
pub struct TrackClock {
    hz: u64,
    started: bool,
    last_rtp: u32,
    ext: i64,
    base: i64,
}

impl TrackClock {
    /// A clock of `hz` ticks per second (the codec's RTP clock rate).
    pub fn new(hz: u32) -> Self {
        Self {
            hz: u64::from(hz),
            started: false,
            last_rtp: 0,
            ext: 0,
            base: 0,
        }
    }

    /// The time of RTP timestamp `ts`, in this track's ticks since the recording's zero;
    /// `since_zero` is the packet's arrival after it.
    pub fn map(&mut self, ts: u32, since_zero: Duration) -> u64 {
        if !self.started {
            self.started = true;
            self.base = (since_zero.as_secs_f64() * self.hz as f64) as i64;
            self.last_rtp = ts;
        }
        // Signed difference: reordered packets step back a little, wrap-around goes on.
        self.ext += i64::from(ts.wrapping_sub(self.last_rtp) as i32);
        self.last_rtp = ts;
        (self.base + self.ext).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rtp_from_the_first_arrival_and_wraps() {
        let mut c = TrackClock::new(90_000);
        assert_eq!(c.map(4_294_967_000, Duration::from_secs(1)), 90_000);
        assert_eq!(c.map(704, Duration::from_secs(1)), 91_000);
        // Late arrival does not move it: only the RTP clock does.
        assert_eq!(c.map(3704, Duration::from_secs(9)), 94_000);
        // A reordered packet steps back.
        assert_eq!(c.map(3604, Duration::from_secs(9)), 93_900);
    }
}
