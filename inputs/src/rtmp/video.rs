//! The video track of an RTMP publisher: FLV H.264 frames to RTP packets with parameter sets
//! before every keyframe, the marker on each frame's last packet, and 90 kHz timestamps from
//! the presentation time (decode time + composition offset).
//!
//! B-frames are dropped where that is safe. Browsers decode WebRTC H.264 without reordering: libwebrtc's decoder
//! wrapper expects one picture out for every frame in, and in Chromium 156 (measured) the
//! first B-frame after each keyframe makes the decoder return no picture (`avcodec_receive_frame`
//! EAGAIN), after which the receiver discards everything until the next keyframe. With RTP
//! timestamps from the decode time that was about 1 frame/s of a 30 frame/s stream; with
//! presentation times the same; without the B-frames every remaining frame decodes, at the
//! I/P rate (a third of the frame rate for `bframes=2`). Also measured and rejected: dropping
//! only non-reference B-frames (1.2 frames/s: the reference B-frames still arrive out of
//! order) and removing the SPS's reorder hint (1 frame/s: Chromium's decoder does not wait
//! for reordering however the SPS asks). Dropping is safe only while P-frames cannot predict
//! from a dropped B-frame: non-reference B-frames always go, reference B-frames (x264's
//! b-pyramid) only while every P slice uses a single reference (x264's fast presets, OBS's
//! default; with ffmpeg's default preset `medium`, dropping them was measured to corrupt the
//! P-frames). Otherwise B-frames are forwarded. Full frame rate in browsers over WebRTC needs
//! the encoder to send no B-frames (OBS: x264 option `bframes=0`), which the operator is told.
//!
//! A dropped B-frame is still packetized, for taps only ([`Audience::Taps`]): LL-HLS plays in
//! the browser's media stack, which reorders, so HLS viewers get every frame. Those packets are
//! numbered in a sequence of their own, and every packet carries its composition offset (the
//! FLV `cts`), so a muxer recovers the decode time from the presentation-time RTP timestamp.
//!
//! Owns no socket and no clock.

use super::error::MediaError;
use super::flv::VideoTag;
use super::h264::{self, AvcConfig};
use super::packetizer::{self, MAX_PAYLOAD};
use bytes::Bytes;
use rtc::rtp;
use waveguide_control::media::{Audience, Delivery};

/// RTP payload type on our side (rewritten per viewer).
pub const PAYLOAD_TYPE: u8 = 96;
/// The H.264 RTP clock.
const CLOCK_KHZ: u64 = 90;

/// What one video message produced.
#[derive(Debug, Default)]
pub struct VideoOutput {
    /// RTP packets of the frame, in order.
    pub packets: Vec<rtp::Packet>,
    /// Who gets them, and the frame's composition offset.
    pub delivery: Delivery,
    /// How B-frames are handled, when that was decided or changed by this message.
    pub b_frames: Option<BFrames>,
    /// A sequence header replaced an earlier, different one (resolution or profile change).
    pub config_changed: bool,
}

/// What happens to a publisher's B-frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BFrames {
    /// Dropped: viewers get the I/P frames, every one decodable.
    Dropped,
    /// Forwarded, because P-frames may predict from them (the encoder uses several
    /// references): correct pictures for decoders that reorder, a stalled picture in Chromium.
    Forwarded,
}

/// One publisher's H.264 track.
#[derive(Debug)]
pub struct VideoTrack {
    ssrc: u32,
    sequence: u16,
    /// The sequence of packets only taps get (dropped B-frames).
    tap_sequence: u16,
    config: Option<AvcConfig>,
    dropped_b_frames: u64,
    /// A B-frame used as a reference has been dropped.
    dropped_b_refs: bool,
    /// A P slice with more than one active reference has been seen.
    multi_ref_p: bool,
    /// B-frames are forwarded from now on.
    forward_b: bool,
    nals: Vec<Bytes>,
    payloads: Vec<Bytes>,
}

impl VideoTrack {
    /// A track sending with `ssrc`, starting at sequence number `first_sequence`.
    pub fn new(ssrc: u32, first_sequence: u16) -> Self {
        Self {
            ssrc,
            sequence: first_sequence,
            tap_sequence: first_sequence.wrapping_add(0x8000),
            config: None,
            dropped_b_frames: 0,
            dropped_b_refs: false,
            multi_ref_p: false,
            forward_b: false,
            nals: Vec::new(),
            payloads: Vec::new(),
        }
    }

    /// The decoder configuration, once a sequence header has arrived.
    pub fn config(&self) -> Option<&AvcConfig> {
        self.config.as_ref()
    }

    /// B-frames dropped so far.
    pub fn dropped_b_frames(&self) -> u64 {
        self.dropped_b_frames
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
                out.delivery = self.frame(
                    dts_ms,
                    cts,
                    keyframe,
                    &data,
                    &mut out.packets,
                    &mut out.b_frames,
                )?;
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
        policy: &mut Option<BFrames>,
    ) -> Result<Delivery, MediaError> {
        let config = self
            .config
            .as_mut()
            .ok_or(MediaError::NoSequenceHeader("video"))?;
        self.nals.clear();
        h264::nal_units(data, config.length_size, &mut self.nals)?;
        // In-band parameter sets replace the stored ones; they are re-sent from there.
        let mut idr = false;
        let mut audience = Audience::Everyone;
        for nal in &self.nals {
            match h264::nal_type(nal) {
                h264::NAL_SPS if nal.len() >= 4 => config.sps = vec![nal.clone()],
                h264::NAL_PPS => config.pps = vec![nal.clone()],
                h264::NAL_IDR => idr = true,
                _ => {}
            }
        }
        if let Some(slice) = self
            .nals
            .iter()
            .find(|n| h264::nal_type(n) == h264::NAL_SLICE)
        {
            if h264::is_b_slice(slice) {
                let reference = slice[0] & 0x60 != 0;
                if !self.forward_b && reference && self.multi_ref_p {
                    // A P-frame may predict from this B-frame: dropping it would corrupt
                    // the picture until the next keyframe.
                    self.forward_b = true;
                    *policy = Some(BFrames::Forwarded);
                }
                if !self.forward_b {
                    self.dropped_b_refs |= reference;
                    self.dropped_b_frames += 1;
                    if self.dropped_b_frames == 1 {
                        *policy = Some(BFrames::Dropped);
                    }
                    audience = Audience::Taps;
                }
            } else if !self.multi_ref_p && config.p_slice_refs(slice).is_some_and(|n| n > 1) {
                self.multi_ref_p = true;
                if self.dropped_b_refs && !self.forward_b {
                    self.forward_b = true;
                    *policy = Some(BFrames::Forwarded);
                }
            }
        }
        // Presentation time: decode time plus composition offset.
        let pts_ms = dts_ms.wrapping_add(cts as u32);
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
        let timestamp = (u64::from(pts_ms) * CLOCK_KHZ) as u32;
        let last = self.payloads.len().saturating_sub(1);
        let sequence = match audience {
            Audience::Everyone => &mut self.sequence,
            Audience::Taps => &mut self.tap_sequence,
        };
        for (i, payload) in self.payloads.drain(..).enumerate() {
            packets.push(rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: PAYLOAD_TYPE,
                    sequence_number: *sequence,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload,
            });
            *sequence = sequence.wrapping_add(1);
        }
        Ok(Delivery {
            audience,
            // FLV's composition time is 24-bit milliseconds; in 90 kHz ticks it fits an i32.
            composition_offset: cts.saturating_mul(CLOCK_KHZ as i32),
        })
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
        assert_eq!(out.b_frames, None);
    }

    /// Slice NAL units whose headers say I (IDR), P and B.
    const IDR: &[u8] = &[0x65, 0x88, 0x80];
    const P: &[u8] = &[0x41, 0xc0];
    const B_REF: &[u8] = &[0x21, 0xa0];
    const B: &[u8] = &[0x01, 0xa0];

    #[test]
    fn b_frames_are_dropped_reported_once_and_timestamps_are_presentation_times() {
        let mut t = VideoTrack::new(1, 0);
        t.push(0, VideoTag::SequenceHeader(avcc())).unwrap();
        let mut reports = Vec::new();
        let mut sent = Vec::new();
        // x264 with two B-frames, decode order I P B B P B B; pts = dts + cts.
        let frames = [
            (0, 66, IDR),
            (33, 100, P),
            (66, 0, B_REF),
            (100, 0, B),
            (133, 100, P),
            (166, 0, B_REF),
            (200, 0, B),
        ];
        for (dts, cts, nal) in frames {
            let out = t
                .push(
                    dts,
                    VideoTag::Frame {
                        keyframe: nal == IDR,
                        cts,
                        data: frame(&[nal]),
                    },
                )
                .unwrap();
            reports.extend(out.b_frames);
            if let Some(last) = out.packets.last() {
                sent.push((
                    last.header.timestamp,
                    last.header.sequence_number,
                    out.delivery,
                ));
            }
        }
        assert_eq!(reports, vec![BFrames::Dropped]);
        assert_eq!(t.dropped_b_frames(), 4);
        let everyone = |cts: i32| Delivery {
            audience: Audience::Everyone,
            composition_offset: cts * 90,
        };
        let taps = |cts: i32| Delivery {
            audience: Audience::Taps,
            composition_offset: cts * 90,
        };
        // Viewers get the I/P frames with a gapless sequence; taps also get the B-frames, in a
        // sequence of their own; the RTP timestamp is the presentation time throughout.
        assert_eq!(
            sent,
            vec![
                // The keyframe's parameter sets took sequence number 0.
                (66 * 90, 1, everyone(66)),
                (133 * 90, 2, everyone(100)),
                (66 * 90, 0x8000, taps(0)),
                (100 * 90, 0x8001, taps(0)),
                (233 * 90, 3, everyone(100)),
                (166 * 90, 0x8002, taps(0)),
                (200 * 90, 0x8003, taps(0)),
            ]
        );
    }

    /// x264's SPS for 640x480 High, and its PPS with the `veryfast` preset (ref=1) and with
    /// ffmpeg's default `medium` (ref=3); the start of a P slice of each (after the first, which x264 limits to one reference).
    const X264_SPS: &str = "6764001eacd940a03db0110000030001000003003c0f162d96";
    const VERYFAST_PPS: &str = "68ef8fcb";
    const VERYFAST_P: &str = "419a22188affbdba117fa050";
    const MEDIUM_PPS: &str = "68ebe3cb22c0";
    const MEDIUM_P: &str = "419a433c219329857fe996a4";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn x264_avcc(pps: &str) -> Bytes {
        h264::tests::avcc_of(&hex(X264_SPS), &hex(pps))
    }

    #[test]
    fn p_slice_references_are_read_from_real_x264_headers() {
        let veryfast = AvcConfig::parse(&x264_avcc(VERYFAST_PPS)).unwrap();
        assert_eq!(veryfast.p_slice_refs(&hex(VERYFAST_P)), Some(1));
        let medium = AvcConfig::parse(&x264_avcc(MEDIUM_PPS)).unwrap();
        assert!(medium.p_slice_refs(&hex(MEDIUM_P)).is_some_and(|n| n > 1));
        assert_eq!(medium.p_slice_refs(&hex("6588")), None, "not a P slice");
    }

    #[test]
    fn b_frames_are_forwarded_when_p_frames_use_several_references() {
        let mut t = VideoTrack::new(1, 0);
        t.push(0, VideoTag::SequenceHeader(x264_avcc(MEDIUM_PPS)))
            .unwrap();
        t.push(
            0,
            VideoTag::Frame {
                keyframe: true,
                cts: 0,
                data: frame(&[IDR]),
            },
        )
        .unwrap();
        t.push(
            33,
            VideoTag::Frame {
                keyframe: false,
                cts: 0,
                data: frame(&[&hex(MEDIUM_P)]),
            },
        )
        .unwrap();
        // A non-reference B-frame is still dropped; a reference one switches to forwarding.
        let out = t
            .push(
                66,
                VideoTag::Frame {
                    keyframe: false,
                    cts: 0,
                    data: frame(&[B]),
                },
            )
            .unwrap();
        assert_eq!(out.delivery.audience, Audience::Taps);
        assert_eq!(out.packets.len(), 1);
        assert_eq!(out.b_frames, Some(BFrames::Dropped));
        let out = t
            .push(
                100,
                VideoTag::Frame {
                    keyframe: false,
                    cts: 0,
                    data: frame(&[B_REF]),
                },
            )
            .unwrap();
        assert_eq!(out.b_frames, Some(BFrames::Forwarded));
        assert_eq!(out.packets.len(), 1);
        assert_eq!(out.delivery.audience, Audience::Everyone);
        let out = t
            .push(
                133,
                VideoTag::Frame {
                    keyframe: false,
                    cts: 0,
                    data: frame(&[B]),
                },
            )
            .unwrap();
        assert_eq!(out.packets.len(), 1);
    }

    #[test]
    fn reference_b_frames_are_dropped_behind_single_reference_p_frames() {
        let mut t = VideoTrack::new(1, 0);
        t.push(0, VideoTag::SequenceHeader(x264_avcc(VERYFAST_PPS)))
            .unwrap();
        t.push(
            33,
            VideoTag::Frame {
                keyframe: false,
                cts: 0,
                data: frame(&[&hex(VERYFAST_P)]),
            },
        )
        .unwrap();
        let out = t
            .push(
                66,
                VideoTag::Frame {
                    keyframe: false,
                    cts: 0,
                    data: frame(&[B_REF]),
                },
            )
            .unwrap();
        assert_eq!(out.delivery.audience, Audience::Taps);
        assert_eq!(out.packets.len(), 1);
        assert_eq!(out.b_frames, Some(BFrames::Dropped));
    }

    #[test]
    fn slice_types_are_read_from_the_header() {
        assert!(!h264::is_b_slice(IDR));
        assert!(!h264::is_b_slice(P));
        assert!(h264::is_b_slice(B));
        assert!(h264::is_b_slice(B_REF));
        assert!(!h264::is_b_slice(&[0x01]));
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
