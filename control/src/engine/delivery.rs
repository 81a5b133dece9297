//! Per-viewer delivery: an operator's pause and quality cap on one viewer (or relay pull),
//! what the viewer's shard does about them packet by packet, and the session's measured
//! delivery for those who ask.
//!
//! Video is never re-encoded: with one layer from the publisher, a cap the stream does not fit
//! holds the video back and keeps the audio going; video comes back at a keyframe.

use crate::media::TrackKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How media is delivered to one viewer session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Nothing is sent; the connection stays up (consent checks, RTCP).
    pub paused: bool,
    /// Video goes out only while the stream's measured bitrate fits under this.
    pub max_bitrate_bps: Option<u64>,
    /// Audio tracks only.
    pub audio_only: bool,
}

/// Below this share of the cap a held video track comes back, so a stream hovering at the cap
/// does not flap between audio-only and video (each return waits for a keyframe).
const RESUME_SHARE_PERCENT: u64 = 90;

/// What the shard does with one packet for one viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Send,
    /// Held back by a pause or a cap.
    Hold,
    /// Video resumes: restart numbering at the next keyframe (and ask for one), then send.
    ResumeVideo,
}

/// A viewer's delivery settings and the shard's state for them.
#[derive(Debug, Default)]
pub(crate) struct ViewerDelivery {
    pub settings: Delivery,
    /// Video is being held back (by a pause, audio-only or the cap).
    pub video_held: bool,
    /// Packets not sent because of the above.
    pub held_packets: u64,
}

impl ViewerDelivery {
    /// Decides for one packet, given the stream's current bitrate.
    pub(crate) fn admit(&mut self, kind: TrackKind, stream_bps: u64) -> Admit {
        let s = self.settings;
        if s.paused {
            self.held_packets += 1;
            self.video_held = true;
            return Admit::Hold;
        }
        if kind != TrackKind::Video {
            return Admit::Send;
        }
        let over_cap = s.max_bitrate_bps.is_some_and(|cap| {
            let limit = if self.video_held {
                cap.saturating_mul(RESUME_SHARE_PERCENT) / 100
            } else {
                cap
            };
            stream_bps > limit
        });
        let hold = s.audio_only || over_cap;
        match (hold, self.video_held) {
            (true, _) => {
                self.video_held = true;
                self.held_packets += 1;
                Admit::Hold
            }
            (false, true) => {
                self.video_held = false;
                Admit::ResumeVideo
            }
            (false, false) => Admit::Send,
        }
    }
}

/// A stream's bitrate as one shard sees it (every packet reaches every shard once).
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: u64,
}

/// Long enough to hold a keyframe burst and the frames after it.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    pub(crate) fn add(&mut self, bytes: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let window = self.bytes * 8 * 1000 / (elapsed.as_millis() as u64).max(1);
            // Half the old estimate, half the new window: smooth across GOPs, quick to follow.
            self.bps = if self.bps == 0 {
                window
            } else {
                (self.bps + window) / 2
            };
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += bytes as u64;
    }

    pub(crate) fn bps(&self) -> u64 {
        self.bps
    }
}

/// One session's delivery as the engine measured it.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// The address its media goes to (the last one its packets came from).
    pub remote_addr: Option<SocketAddr>,
    /// RTP sent to it (viewers), retransmissions included.
    pub packets_sent: u64,
    /// RTP bytes sent to it.
    pub bytes_sent: u64,
    /// RTP received from it (publishers).
    pub packets_received: u64,
    /// RTP bytes received from it.
    pub bytes_received: u64,
    /// Packets not sent: held back by a pause or cap, or refused by the connection.
    pub packets_dropped: u64,
    /// Loss the peer reported in its receiver reports (viewers).
    pub packets_lost: i64,
    /// NACKs and keyframe requests the peer sent (viewers).
    pub nacks: u64,
    /// Keyframe requests (PLI/FIR) the peer sent, or were sent to it (publishers).
    pub keyframe_requests: u64,
    /// Round-trip time from RTCP receiver reports, when the peer sent any.
    pub rtt: Option<Duration>,
    /// The operator's settings.
    pub delivery: Delivery,
    /// Whether video is held back now (by a pause, audio-only or the cap).
    pub video_held: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_holds_everything() {
        let mut d = ViewerDelivery::default();
        d.settings.paused = true;
        assert_eq!(d.admit(TrackKind::Audio, 0), Admit::Hold);
        assert_eq!(d.admit(TrackKind::Video, 0), Admit::Hold);
        assert_eq!(d.held_packets, 2);
        d.settings.paused = false;
        assert_eq!(d.admit(TrackKind::Audio, 0), Admit::Send);
        assert_eq!(d.admit(TrackKind::Video, 0), Admit::ResumeVideo);
        assert_eq!(d.admit(TrackKind::Video, 0), Admit::Send);
    }

    #[test]
    fn cap_holds_video_with_hysteresis() {
        let mut d = ViewerDelivery::default();
        d.settings.max_bitrate_bps = Some(1_000_000);
        assert_eq!(d.admit(TrackKind::Video, 900_000), Admit::Send);
        assert_eq!(d.admit(TrackKind::Video, 1_100_000), Admit::Hold);
        assert_eq!(d.admit(TrackKind::Audio, 1_100_000), Admit::Send);
        // Under the cap but not under 90 % of it: still held.
        assert_eq!(d.admit(TrackKind::Video, 950_000), Admit::Hold);
        assert_eq!(d.admit(TrackKind::Video, 850_000), Admit::ResumeVideo);
    }

    #[test]
    fn audio_only_holds_video() {
        let mut d = ViewerDelivery::default();
        d.settings.audio_only = true;
        assert_eq!(d.admit(TrackKind::Video, 0), Admit::Hold);
        assert_eq!(d.admit(TrackKind::Audio, 0), Admit::Send);
    }

    #[test]
    fn meter_measures_a_steady_rate() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        // 125 packets of 1000 bytes every 8 ms: 1 Mbps.
        for i in 0..=250u64 {
            m.add(1000, t0 + Duration::from_millis(i * 8));
        }
        let bps = m.bps();
        assert!((900_000..=1_100_000).contains(&bps), "{bps}");
    }
}
