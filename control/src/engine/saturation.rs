//! Whether a shard keeps up with its viewers.
//!
//! A shard measures itself in half-second windows: how much of the window it spent working,
//! how old the oldest publisher packet was when it reached the shard (its lag), how many
//! packets it had to drop as too old, and how many it sent. A window is *over* when the shard
//! was busy for at least 95 % of it, lagged by half the delay bound or more, dropped a stale
//! packet, or sent more than a configured packet rate. Two over windows in a row make the shard
//! saturated: it refuses new viewers (the engine answers `503`, and the orchestrator's load
//! score sees it) until two windows in a row are not over. One window alone is a burst (a
//! keyframe, a few joins), not a state.
//!
//! [`LoadMeter`] is the sans-IO part (time passed in); [`ShardLoad`] is what the shard
//! publishes for the signaling side, written once per window.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The length of one measurement window.
pub(crate) const WINDOW: Duration = Duration::from_millis(500);
/// Busy this share of a window (or more) makes it over.
const BUSY_OVER: f64 = 0.95;
/// Windows in a row that set (or clear) saturation.
const WINDOWS_TO_FLIP: u32 = 2;

/// What a shard publishes about its load; read by admission and metrics, written by the shard
/// once per window.
#[derive(Debug, Default)]
pub(crate) struct ShardLoad {
    saturated: AtomicBool,
    busy_permille: AtomicU32,
    lag_ms: AtomicU32,
}

impl ShardLoad {
    pub(crate) fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Share of the last window the shard spent working, 0.0–1.0.
    pub(crate) fn busy(&self) -> f64 {
        f64::from(self.busy_permille.load(Ordering::Relaxed)) / 1000.0
    }

    /// The largest packet age the shard saw in the last window.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed).into())
    }

    fn publish(&self, verdict: &Verdict) {
        self.busy_permille
            .store((verdict.busy * 1000.0).round() as u32, Ordering::Relaxed);
        self.lag_ms.store(
            verdict.lag.as_millis().min(u128::from(u32::MAX)) as u32,
            Ordering::Relaxed,
        );
        self.saturated.store(verdict.saturated, Ordering::Relaxed);
    }
}

/// One window's figures and what they mean.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub busy: f64,
    pub lag: Duration,
    pub stale: u64,
    pub packets_per_sec: f64,
    pub saturated: bool,
}

/// A shard's measurements in the current window.
#[derive(Debug)]
pub(crate) struct LoadMeter {
    /// Packets older than this are dropped; lagging by half of it is over.
    max_delay: Duration,
    /// Packets a second the shard may send before a window is over (0: no cap).
    max_pps: u64,
    started: Instant,
    busy: Duration,
    lag: Duration,
    stale: u64,
    packets: u64,
    over_streak: u32,
    under_streak: u32,
    saturated: bool,
}

impl LoadMeter {
    pub(crate) fn new(max_delay: Duration, max_pps: u64, now: Instant) -> Self {
        Self {
            max_delay,
            max_pps,
            started: now,
            busy: Duration::ZERO,
            lag: Duration::ZERO,
            stale: 0,
            packets: 0,
            over_streak: 0,
            under_streak: 0,
            saturated: false,
        }
    }

    pub(crate) fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The shard worked for `spent`.
    pub(crate) fn worked(&mut self, spent: Duration) {
        self.busy += spent;
    }

    /// A publisher packet reached the shard `age` after the node received it.
    pub(crate) fn packet_age(&mut self, age: Duration) {
        self.lag = self.lag.max(age);
    }

    /// A packet was too old to send to `viewers` viewers.
    pub(crate) fn stale(&mut self, viewers: u64) {
        self.stale += viewers.max(1);
    }

    /// `n` datagrams left for viewers.
    pub(crate) fn sent(&mut self, n: u64) {
        self.packets += n;
    }

    /// Closes the window if it has run its length: the verdict, published to `load`.
    pub(crate) fn tick(&mut self, now: Instant, load: &ShardLoad) -> Option<Verdict> {
        let length = now.saturating_duration_since(self.started);
        if length < WINDOW {
            return None;
        }
        let secs = length.as_secs_f64();
        let busy = (self.busy.as_secs_f64() / secs).min(1.0);
        let packets_per_sec = self.packets as f64 / secs;
        let over = busy >= BUSY_OVER
            || self.lag >= self.max_delay / 2
            || self.stale > 0
            || (self.max_pps > 0 && packets_per_sec >= self.max_pps as f64);
        if over {
            self.over_streak += 1;
            self.under_streak = 0;
        } else {
            self.under_streak += 1;
            self.over_streak = 0;
        }
        if self.over_streak >= WINDOWS_TO_FLIP {
            self.saturated = true;
        } else if self.under_streak >= WINDOWS_TO_FLIP {
            self.saturated = false;
        }
        let verdict = Verdict {
            busy,
            lag: self.lag,
            stale: self.stale,
            packets_per_sec,
            saturated: self.saturated,
        };
        load.publish(&verdict);
        self.started = now;
        self.busy = Duration::ZERO;
        self.lag = Duration::ZERO;
        self.stale = 0;
        self.packets = 0;
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(300);

    /// Runs one full window with `busy` work, `lag` and `packets`, and returns its verdict.
    fn window(
        meter: &mut LoadMeter,
        t: &mut Instant,
        busy_ms: u64,
        lag_ms: u64,
        packets: u64,
    ) -> Verdict {
        meter.worked(Duration::from_millis(busy_ms));
        meter.packet_age(Duration::from_millis(lag_ms));
        meter.sent(packets);
        *t += WINDOW;
        meter
            .tick(*t, &ShardLoad::default())
            .expect("a window closed")
    }

    #[test]
    fn a_window_closes_only_after_its_length() {
        let t0 = Instant::now();
        let mut meter = LoadMeter::new(DELAY, 0, t0);
        let load = ShardLoad::default();
        assert!(meter.tick(t0 + WINDOW / 2, &load).is_none());
        meter.worked(Duration::from_millis(250));
        let v = meter.tick(t0 + WINDOW, &load).unwrap();
        assert!((v.busy - 0.5).abs() < 1e-9, "{v:?}");
        assert!((load.busy() - 0.5).abs() < 1e-9);
        assert!(!v.saturated);
    }

    #[test]
    fn two_busy_windows_saturate_and_two_calm_ones_clear() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(DELAY, 0, t);
        assert!(
            !window(&mut meter, &mut t, 490, 5, 0).saturated,
            "one burst is no state"
        );
        assert!(window(&mut meter, &mut t, 490, 5, 0).saturated);
        assert!(
            window(&mut meter, &mut t, 100, 5, 0).saturated,
            "one calm window keeps it"
        );
        assert!(!window(&mut meter, &mut t, 100, 5, 0).saturated);
    }

    #[test]
    fn lag_of_half_the_bound_or_a_stale_drop_is_over() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(DELAY, 0, t);
        window(&mut meter, &mut t, 10, 150, 0);
        assert!(window(&mut meter, &mut t, 10, 160, 0).saturated);

        let mut meter = LoadMeter::new(DELAY, 0, t);
        for _ in 0..2 {
            meter.stale(3);
            window(&mut meter, &mut t, 10, 0, 0);
        }
        assert!(meter.saturated);
        let mut meter = LoadMeter::new(DELAY, 0, t);
        for _ in 0..4 {
            assert!(!window(&mut meter, &mut t, 10, 149, 0).saturated);
        }
    }

    #[test]
    fn a_packet_rate_cap_counts_packets_per_second() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(DELAY, 1_000, t);
        // 499 packets in half a second: 998 a second, under the cap.
        for _ in 0..3 {
            assert!(!window(&mut meter, &mut t, 10, 0, 499).saturated);
        }
        window(&mut meter, &mut t, 10, 0, 500);
        let v = window(&mut meter, &mut t, 10, 0, 500);
        assert!(v.saturated, "{v:?}");
        assert!((v.packets_per_sec - 1_000.0).abs() < 1e-6);
    }

    #[test]
    fn the_published_load_follows_the_verdict() {
        let mut t = Instant::now();
        let mut meter = LoadMeter::new(DELAY, 0, t);
        let load = ShardLoad::default();
        for _ in 0..2 {
            meter.worked(WINDOW);
            meter.packet_age(Duration::from_millis(42));
            t += WINDOW;
            meter.tick(t, &load);
        }
        assert!(load.saturated());
        assert_eq!(load.lag(), Duration::from_millis(42));
        assert!((load.busy() - 1.0).abs() < 1e-9);
    }
}
