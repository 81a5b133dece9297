//! Round-trip time to a viewer from its RTCP receiver reports (RFC 3550 §6.4.1): the report
//! echoes the middle 32 bits of our last sender report's NTP time (LSR) and how long the
//! viewer held it (DLSR), so RTT = arrival − LSR − DLSR. `rtc` sends the sender reports (their
//! NTP time is the wall clock) but does not compute this.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Samples above this are a clock step or a stale report, not a path.
const MAX_RTT: Duration = Duration::from_secs(10);

/// The middle 32 bits of the NTP time of `at` (16.16 fixed-point seconds), as in LSR.
fn ntp_middle(at: SystemTime) -> u32 {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
    ((secs << 16) | frac) as u32
}

/// One RTT sample from a report block's LSR and DLSR received at `arrived`; `None` when the
/// viewer has not had a sender report yet (LSR 0) or the sample makes no sense.
pub(crate) fn sample(lsr: u32, dlsr: u32, arrived: SystemTime) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let units = ntp_middle(arrived).wrapping_sub(lsr).wrapping_sub(dlsr);
    // A report answered "before" it was sent wraps to a huge value: rejected below.
    let rtt = Duration::from_micros(u64::from(units) * 1_000_000 / 65_536);
    (rtt <= MAX_RTT).then_some(rtt)
}

/// Smoothed RTT (the TCP estimator's 1/8 gain): one noisy report moves it a little.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SmoothedRtt(Option<Duration>);

impl SmoothedRtt {
    pub(crate) fn update(&mut self, sample: Duration) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(s) => (s * 7 + sample) / 8,
        });
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_from_a_report() {
        let sent = SystemTime::now();
        let lsr = ntp_middle(sent);
        // Held 250 ms by the viewer, 40 ms on the wire both ways.
        let dlsr = 65_536 / 4;
        let arrived = sent + Duration::from_millis(290);
        let rtt = sample(lsr, dlsr, arrived).expect("a sample");
        assert!(
            rtt.abs_diff(Duration::from_millis(40)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        assert_eq!(sample(0, dlsr, arrived), None, "no sender report yet");
        // A report that claims more holding time than has passed is nonsense.
        assert_eq!(sample(lsr, 65_536, sent + Duration::from_millis(10)), None);
    }

    #[test]
    fn smoothing_moves_an_eighth() {
        let mut s = SmoothedRtt::default();
        s.update(Duration::from_millis(80));
        s.update(Duration::from_millis(160));
        assert_eq!(s.get(), Some(Duration::from_millis(90)));
    }
}
