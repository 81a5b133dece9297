//! SDP offers made by the `rtc` crate (webrtc-rs 0.21 sans-IO core), for the protocol tests.
//!
//! The offers are real: ICE credentials, a DTLS fingerprint, a host candidate, sendonly
//! (WHIP) or recvonly (WHEP) transceivers with the requested codecs. Nothing is connected; the
//! [`RTCPeerConnection`] is returned so a test can keep it alive for the session's lifetime.

use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::time::Instant;

/// Video codec of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    H264,
    Vp8,
}

/// What an offer carries.
#[derive(Debug, Clone)]
pub struct OfferSpec {
    /// Video codecs, in preference order; empty for no video section.
    pub video: Vec<Video>,
    /// An Opus audio section.
    pub audio: bool,
    /// `true`: sendonly (WHIP publisher); `false`: recvonly (WHEP viewer).
    pub send: bool,
}

impl OfferSpec {
    /// A publisher offering H264 and VP8 video and Opus audio.
    pub fn publisher() -> Self {
        Self {
            video: vec![Video::H264, Video::Vp8],
            audio: true,
            send: true,
        }
    }

    /// A viewer accepting H264 and VP8 video and Opus audio.
    pub fn viewer() -> Self {
        Self {
            video: vec![Video::H264, Video::Vp8],
            audio: true,
            send: false,
        }
    }
}

fn codec(video: Video) -> RTCRtpCodecParameters {
    let (mime, fmtp, pt) = match video {
        Video::H264 => (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
        Video::Vp8 => (MIME_TYPE_VP8, "", 96),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

/// A transceiver init; a sending one gets one encoding per codec (no rid): for `rtc` these
/// are codec alternatives, all of which the offer lists.
fn init(send: bool, codecs: &[RTCRtpCodecParameters], first_ssrc: u32) -> RTCRtpTransceiverInit {
    if !send {
        return RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
    }
    RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        streams: vec![],
        send_encodings: codecs
            .iter()
            .zip(first_ssrc..)
            .map(|(codec, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            })
            .collect(),
    }
}

/// Builds a peer connection per `spec`, creates the offer, sets it as local description and
/// returns both. Panics on an `rtc` error (a bug in the test, not in the edge).
pub fn make_offer(spec: &OfferSpec) -> (RTCPeerConnection, String) {
    let mut media = MediaEngine::default();
    for v in &spec.video {
        media
            .register_codec(codec(*v), RtpCodecKind::Video)
            .expect("register video codec");
    }
    if spec.audio {
        media
            .register_codec(opus(), RtpCodecKind::Audio)
            .expect("register opus");
    }
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .build(Instant::now())
        .expect("build rtc peer connection");

    if !spec.video.is_empty() {
        let codecs: Vec<_> = spec.video.iter().map(|v| codec(*v)).collect();
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(init(spec.send, &codecs, 0x1111_0010)),
        )
        .expect("add video transceiver");
    }
    if spec.audio {
        pc.add_transceiver_from_kind(
            RtpCodecKind::Audio,
            Some(init(spec.send, &[opus()], 0x1111_0020)),
        )
        .expect("add audio transceiver");
    }

    // A host candidate on a port nobody listens on: the offer is complete without trickle,
    // and an ICE-lite edge never needs to reach it for the HTTP-level assertions.
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: "127.0.0.1".to_owned(),
            port: 9,
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    pc.add_local_candidate(
        RTCIceCandidate::from(&candidate)
            .to_json()
            .expect("candidate json"),
    )
    .expect("add local candidate");

    let offer = pc.create_offer(None).expect("create offer");
    pc.set_local_description(Instant::now(), offer.clone())
        .expect("set local description");
    let sdp = pc
        .local_description()
        .map(|d| d.sdp.clone())
        .unwrap_or(offer.sdp);
    (pc, sdp)
}

/// The value of the first `a=<attr>:` line of an SDP, e.g. `ice-ufrag`.
pub fn sdp_attr<'a>(sdp: &'a str, attr: &str) -> Option<&'a str> {
    let prefix = format!("a={attr}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_offer_is_sendonly_with_both_video_codecs_and_opus() {
        let (_pc, sdp) = make_offer(&OfferSpec::publisher());
        assert!(sdp.contains("m=video "), "{sdp}");
        assert!(sdp.contains("m=audio "), "{sdp}");
        assert!(sdp.contains("H264/90000"), "{sdp}");
        assert!(sdp.contains("VP8/90000"), "{sdp}");
        assert!(sdp.contains("opus/48000"), "{sdp}");
        assert!(sdp.contains("a=sendonly"), "{sdp}");
        assert!(!sdp.contains("a=recvonly"), "{sdp}");
        assert!(sdp_attr(&sdp, "ice-ufrag").is_some(), "{sdp}");
        assert!(sdp_attr(&sdp, "fingerprint").is_some(), "{sdp}");
        assert!(sdp.contains("a=candidate:"), "{sdp}");
    }

    #[test]
    fn viewer_offer_with_one_codec_is_recvonly() {
        let (_pc, sdp) = make_offer(&OfferSpec {
            video: vec![Video::Vp8],
            audio: false,
            send: false,
        });
        assert!(sdp.contains("a=recvonly"), "{sdp}");
        assert!(sdp.contains("VP8/90000"), "{sdp}");
        assert!(!sdp.contains("H264"), "{sdp}");
        assert!(!sdp.contains("m=audio"), "{sdp}");
    }
}
