//! The AAC frames of an RTMP publisher as it sent them, for taps: LL-HLS carries AAC, so it
//! takes the original audio instead of a second transcode of the Opus viewers get. One RTP
//! packet per raw AAC frame (for taps only: no WebRTC viewer is offered AAC), stamped in the
//! AAC sample rate.
//!
//! Timestamps count 1024 samples a frame from an anchor at the publisher's first audio
//! timestamp, so they do not jitter with RTMP's millisecond timestamps; when the publisher's
//! clock and the count drift apart by more than [`MAX_DRIFT_MS`] (a gap in its audio) they
//! re-anchor, keeping the gap. Owns no socket and no clock.

use bytes::Bytes;
use rtc::rtp;

/// Samples per channel in one AAC-LC frame.
pub const FRAME_SAMPLES: u32 = 1024;
/// Publisher time and sample count further apart than this re-anchor the timestamps.
const MAX_DRIFT_MS: i64 = 200;
/// RTP payload type of the packets (taps read the kind, not this).
const PAYLOAD_TYPE: u8 = 97;

/// One publisher's AAC frames as taps get them.
#[derive(Debug)]
pub struct AacPassthrough {
    rate: u32,
    ssrc: u32,
    sequence: u16,
    /// The next frame's RTP timestamp, and the publisher time (ms) it is expected at.
    next: Option<(u32, f64)>,
}

impl AacPassthrough {
    /// Frames at `rate` Hz (the `AudioSpecificConfig`'s), sent with `ssrc`.
    pub fn new(rate: u32, ssrc: u32, first_sequence: u16) -> Self {
        Self {
            rate: rate.max(1),
            ssrc,
            sequence: first_sequence,
            next: None,
        }
    }

    /// The packet for one raw AAC frame with RTMP timestamp `ts_ms`.
    pub fn push(&mut self, ts_ms: u32, frame: Bytes) -> rtp::Packet {
        let rate = i64::from(self.rate);
        let (timestamp, expected_ms) = match self.next {
            None => ((i64::from(ts_ms) * rate / 1000) as u32, f64::from(ts_ms)),
            Some((next, expected)) => {
                // RTMP timestamps wrap at 32 bits; the difference is small either way.
                let drift = i64::from(ts_ms.wrapping_sub(expected.round() as u32) as i32);
                if drift.abs() > MAX_DRIFT_MS {
                    let shifted = next.wrapping_add((drift * rate / 1000) as u32);
                    (shifted, expected + drift as f64)
                } else {
                    (next, expected)
                }
            }
        };
        let frame_ms = f64::from(FRAME_SAMPLES) * 1000.0 / f64::from(self.rate);
        self.next = Some((
            timestamp.wrapping_add(FRAME_SAMPLES),
            (expected_ms + frame_ms) % 4_294_967_296.0,
        ));
        let sequence_number = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: true,
                payload_type: PAYLOAD_TYPE,
                sequence_number,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: frame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_samples_and_keep_gaps() {
        let mut a = AacPassthrough::new(44_100, 5, 65_535);
        let frame = Bytes::from_static(&[0x21, 0x10]);
        // 44.1 kHz frames are 23.2 ms; RTMP rounds them to 23 or 24.
        let stamps: Vec<(u32, u16)> = [1000, 1023, 1046, 1070, 1093]
            .into_iter()
            .map(|ms| {
                let p = a.push(ms, frame.clone());
                (p.header.timestamp, p.header.sequence_number)
            })
            .collect();
        let first = 44_100;
        assert_eq!(
            stamps,
            [
                (first, 65_535),
                (first + 1024, 0),
                (first + 2048, 1),
                (first + 3072, 2),
                (first + 4096, 3)
            ]
        );
        // Half a second without audio: the timestamps jump by as much.
        let p = a.push(1616, frame.clone());
        let expected = first + 5 * 1024 + 22_050;
        assert!(
            p.header.timestamp.abs_diff(expected) < 50,
            "{} vs {expected}",
            p.header.timestamp
        );
        let q = a.push(1639, frame);
        assert_eq!(q.header.timestamp, p.header.timestamp + 1024);
        assert_eq!(q.payload.as_ref(), &[0x21, 0x10]);
    }
}
