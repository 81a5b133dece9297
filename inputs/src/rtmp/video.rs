//! The video track of an RTMP publisher: FLV H.264 frames to RTP packets with parameter sets
//! before every keyframe, the marker on each frame's last packet, and 90 kHz timestamps.
//!
//! Timestamps follow the decode time (the RTMP message timestamp), not the presentation time.
//! With B-frames, presentation times run backwards in decode order, and libwebrtc's frame
//! buffer then discards most frames (FIELD-NOTES: 4 of 300 decoded). With decode times the
//! frames reach the decoder in order, and H.264 itself carries the display order.
//!
//! Owns no socket and no clock.

use super::error::MediaError;
use super::flv::VideoTag;
use super::h264::{self, AvcConfig};
use super::packetizer::{self, MAX_PAYLOAD};
use bytes::Bytes;
use rtc::rtp;

/// RTP payload type on our side (rewritten per viewer).
pub const PAYLOAD_TYPE: u8 = 96;
/// The H.264 RTP clock.
const CLOCK_KHZ: u64 = 90;

/// What one video message produced.
#[derive(Debug, Default)]
pub struct VideoOutput {
    /// RTP packets of the frame, in order.
    pub packets: Vec<rtp::Packet>,
    /// The first frame with a non-zero composition offset: the stream has B-frames.
    pub b_frames_detected: bool,
    /// A sequence header replaced an earlier, different one (resolution or profile change).
    pub config_changed: bool,
}

/// One publisher's H.264 track.
#[derive(Debug)]
pub struct VideoTrack {
    ssrc: u32,
    sequence: u16,
    config: Option<AvcConfig>,
    b_frames: bool,
    nals: Vec<Bytes>,
    payloads: Vec<Bytes>,
}

impl VideoTrack {
    /// A track sending with `ssrc`, starting at sequence number `first_sequence`.
    pub fn new(ssrc: u32, first_sequence: u16) -> Self {
        Self {
            ssrc,
            sequence: first_sequence,
            config: None,
            b_frames: false,
            nals: Vec::new(),
            payloads: Vec::new(),
        }
    }

    /// The decoder configuration, once a sequence header has arrived.
    pub fn config(&self) -> Option<&AvcConfig> {
        self.config.as_ref()
    }

    /// Whether B-frames have been seen.
    pub fn has_b_frames(&self) -> bool {
        self.b_frames
    }

    /// Handles one parsed video message with RTMP timestamp `dts_ms`.
    pub fn push(&mut self, dts_ms: u32, tag: VideoTag) -> Result<VideoOutput, MediaError> {
        let mut out = VideoOutput::default();
        match tag {
            VideoTag::Skip => {}
            VideoTag::SequenceHeader(data) => {
                let config = AvcConfig::parse(&data)?;
                out.config_changed = self.config.as_ref().is_some_and(|c| *c != config);
                self.config = Some(config);
            }
            VideoTag::Frame {
                keyframe,
                cts,
                data,
            } => {
                if cts != 0 && !self.b_frames {
                    self.b_frames = true;
                    out.b_frames_detected = true;
                }
                self.frame(dts_ms, cts, keyframe, &data, &mut out.packets)?;
            }
        }
        Ok(out)
    }

    fn frame(
        &mut self,
        dts_ms: u32,
        cts: i32,
        flv_keyframe: bool,
        data: &Bytes,
        packets: &mut Vec<rtp::Packet>,
    ) -> Result<(), MediaError> {
        let config = self
            .config
            .as_mut()
            .ok_or(MediaError::NoSequenceHeader("video"))?;
        self.nals.clear();
        h264::nal_units(data, config.length_size, &mut self.nals)?;
        // In-band parameter sets replace the stored ones; they are re-sent from there.
        let mut idr = false;
        for nal in &self.nals {
            match h264::nal_type(nal) {
                h264::NAL_SPS if nal.len() >= 4 => config.sps = vec![nal.clone()],
                h264::NAL_PPS => config.pps = vec![nal.clone()],
                h264::NAL_IDR => idr = true,
                _ => {}
            }
        }
        // EXPERIMENT (temporary): strategies for B-frames, chosen by WG_RTMP_BMODE.
        let mode = std::env::var("WG_RTMP_BMODE").unwrap_or_default();
        let is_b = self
            .nals
            .iter()
            .any(|n| matches!(h264::nal_type(n), 1) && h264::is_b_slice(n));
        let nonref = self
            .nals
            .iter()
            .any(|n| matches!(h264::nal_type(n), 1) && n[0] & 0x60 == 0);
        if (mode == "dropb" && is_b) || (mode == "dropnonref" && nonref) {
            return Ok(());
        }
        let dts_ms = if mode == "pts" {
            dts_ms.wrapping_add(cts as u32)
        } else {
            dts_ms
        };
        self.payloads.clear();
        if idr || flv_keyframe {
            let sets: Vec<&Bytes> = config.sps.iter().chain(&config.pps).collect();
            packetizer::parameter_set_payloads(&sets, MAX_PAYLOAD, &mut self.payloads);
        }
        for nal in &self.nals {
            match h264::nal_type(nal) {
                h264::NAL_SPS | h264::NAL_PPS | h264::NAL_AUD | h264::NAL_FILLER => {}
                _ => packetizer::nal_payloads(nal, MAX_PAYLOAD, &mut self.payloads),
            }
        }
        // Milliseconds to the 90 kHz clock; RTP timestamps wrap at 32 bits by definition.
        let timestamp = (u64::from(dts_ms) * CLOCK_KHZ) as u32;
        let last = self.payloads.len().saturating_sub(1);
        for (i, payload) in self.payloads.drain(..).enumerate() {
            packets.push(rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: PAYLOAD_TYPE,
                    sequence_number: self.sequence,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            });
            self.sequence = self.sequence.wrapping_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::h264::tests::avcc;

    fn frame(nals: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    #[test]
    fn keyframe_gets_parameter_sets_and_marker_on_last_packet() {
        let mut t = VideoTrack::new(1234, 65_534);
        assert!(matches!(
            t.push(
                0,
                VideoTag::Frame {
                    keyframe: true,
                    cts: 0,
                    data: frame(&[&[0x65, 1]])
                }
            ),
            Err(MediaError::NoSequenceHeader(_))
        ));
        t.push(0, VideoTag::SequenceHeader(avcc())).unwrap();
        let mut idr = vec![0x65];
        idr.extend(std::iter::repeat_n(7u8, 3000));
        let data = frame(&[&[0x09, 0xf0], &[0x06, 5, 1, 0], &idr]);
        let out = t
            .push(
                1000,
                VideoTag::Frame {
                    keyframe: true,
                    cts: 0,
                    data,
                },
            )
            .unwrap();
        let p = &out.packets;
        // STAP-A(SPS, PPS), SEI, 3 FU-A fragments; the AUD is dropped.
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].payload[0] & 0x1f, 24);
        assert_eq!(p[1].payload[0], 0x06);
        assert!(p[2..].iter().all(|x| x.payload[0] & 0x1f == 28));
        assert!(p.iter().all(|x| x.header.timestamp == 90_000));
        assert_eq!(p.iter().filter(|x| x.header.marker).count(), 1);
        assert!(p[4].header.marker);
        let seqs: Vec<u16> = p.iter().map(|x| x.header.sequence_number).collect();
        assert_eq!(seqs, vec![65_534, 65_535, 0, 1, 2]);
        assert!(
            waveguide_control::media::is_keyframe_start(
                waveguide_control::media::Codec::H264,
                &p[0].payload
            ),
            "the control must see the keyframe start"
        );

        // A P-frame: no parameter sets, one packet with the marker.
        let out = t
            .push(
                1033,
                VideoTag::Frame {
                    keyframe: false,
                    cts: 0,
                    data: frame(&[&[0x41, 9]]),
                },
            )
            .unwrap();
        assert_eq!(out.packets.len(), 1);
        assert!(out.packets[0].header.marker);
        assert_eq!(out.packets[0].header.timestamp, 1033 * 90);
        assert!(!out.b_frames_detected);
    }

    #[test]
    fn b_frames_are_reported_once_and_timestamps_follow_decode_order() {
        let mut t = VideoTrack::new(1, 0);
        t.push(0, VideoTag::SequenceHeader(avcc())).unwrap();
        let mut reports = 0;
        let mut last_ts = None;
        // I P B B with x264's offsets: pts = dts + cts.
        for (dts, cts, nal) in [
            (0, 67, 0x65u8),
            (33, 100, 0x41),
            (67, 33, 0x01),
            (100, 0, 0x01),
        ] {
            let out = t
                .push(
                    dts,
                    VideoTag::Frame {
                        keyframe: nal == 0x65,
                        cts,
                        data: frame(&[&[nal, 1]]),
                    },
                )
                .unwrap();
            reports += usize::from(out.b_frames_detected);
            let ts = out.packets.last().unwrap().header.timestamp;
            assert!(last_ts.is_none_or(|l| ts > l), "monotonic RTP timestamps");
            last_ts = Some(ts);
        }
        assert_eq!(reports, 1);
        assert!(t.has_b_frames());
    }

    #[test]
    fn in_band_parameter_sets_replace_the_stored_ones() {
        let mut t = VideoTrack::new(1, 0);
        t.push(0, VideoTag::SequenceHeader(avcc())).unwrap();
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0x01];
        let pps = [0x68, 0xce];
        let out = t
            .push(
                0,
                VideoTag::Frame {
                    keyframe: true,
                    cts: 0,
                    data: frame(&[&sps, &pps, &[0x65, 1]]),
                },
            )
            .unwrap();
        let stap = &out.packets[0].payload;
        assert_eq!(&stap[3..8], &sps);
        assert_eq!(out.packets.len(), 2);
        assert_eq!(t.config().unwrap().profile_level_id(), "42c01e");
    }
}
