//! What the relay offers its upstream and what it learns from the answer.
//!
//! The offer carries every codec the node forwards (H.264 packetization-mode 1 in the three
//! common profiles, VP8, VP9, AV1; Opus), each with its own payload type, so the upstream
//! edge answers with the format that carries its stream unchanged. The answer's first format
//! per active section is the track's codec; its fmtp becomes the pulled stream's, so this
//! node's viewers negotiate against it exactly as the origin's do.

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::sdp::description::session::SessionDescription;
use std::io::Cursor;
use waveguide_control::media::{Codec, CodecParams, TrackKind};
use waveguide_control::stream::TrackInfo;

/// One offered format.
struct Format {
    payload_type: u8,
    mime_type: &'static str,
    fmtp: &'static str,
}

/// Video formats in preference order. H.264 is offered in constrained baseline, main and high
/// profile: the upstream matches a track's profile exactly before it falls back to any
/// profile, so the pulled stream keeps the publisher's profile.
const VIDEO: [Format; 7] = [
    Format {
        payload_type: 102,
        mime_type: MIME_TYPE_H264,
        fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    },
    Format {
        payload_type: 104,
        mime_type: MIME_TYPE_H264,
        fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    },
    Format {
        payload_type: 106,
        mime_type: MIME_TYPE_H264,
        fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
    },
    Format {
        payload_type: 96,
        mime_type: MIME_TYPE_VP8,
        fmtp: "",
    },
    Format {
        payload_type: 98,
        mime_type: MIME_TYPE_VP9,
        fmtp: "profile-id=0",
    },
    Format {
        payload_type: 100,
        mime_type: MIME_TYPE_VP9,
        fmtp: "profile-id=2",
    },
    Format {
        payload_type: 45,
        mime_type: MIME_TYPE_AV1,
        fmtp: "",
    },
];

const AUDIO: [Format; 1] = [Format {
    payload_type: 111,
    mime_type: MIME_TYPE_OPUS,
    fmtp: "minptime=10;useinbandfec=1",
}];

fn parameters(format: &Format, kind: RtpCodecKind) -> RTCRtpCodecParameters {
    let video = kind == RtpCodecKind::Video;
    // NACK so the upstream retransmits what the link between the edges lost; PLI/FIR so it
    // knows we can ask for a keyframe.
    let rtcp_feedback = if video {
        [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
            .into_iter()
            .map(|(typ, parameter)| RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            })
            .collect()
    } else {
        Vec::new()
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: format.mime_type.to_owned(),
            clock_rate: if video { 90_000 } else { 48_000 },
            channels: if video { 0 } else { 2 },
            sdp_fmtp_line: format.fmtp.to_owned(),
            rtcp_feedback,
        },
        payload_type: format.payload_type,
    }
}

/// Every format the relay offers, with its kind, in preference order.
pub(crate) fn offered() -> Vec<(RtpCodecKind, RTCRtpCodecParameters)> {
    VIDEO
        .iter()
        .map(|f| (RtpCodecKind::Video, parameters(f, RtpCodecKind::Video)))
        .chain(
            AUDIO
                .iter()
                .map(|f| (RtpCodecKind::Audio, parameters(f, RtpCodecKind::Audio))),
        )
        .collect()
}

/// What an answer negotiated.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The pulled stream's tracks, audio first, then video (a fixed order: a reconnect that
    /// negotiates the same codecs gives an identical list, so viewers continue).
    pub tracks: Vec<TrackInfo>,
    /// Every payload type the answer gave a section, with its kind: how received RTP is
    /// told apart.
    pub payload_types: Vec<(u8, TrackKind)>,
}

impl Negotiated {
    /// The kind of a received payload type.
    pub fn kind_of(&self, payload_type: u8) -> Option<TrackKind> {
        self.payload_types
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, kind)| *kind)
    }
}

/// Reads the upstream's answer: per active audio/video section (the answerer sends), the
/// first format is the codec. A section that is rejected (port 0), inactive, or names a
/// codec this node cannot forward carries no track.
pub(crate) fn negotiated(answer: &str) -> Result<Negotiated, String> {
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes()))
        .map_err(|e| format!("unreadable SDP answer: {e}"))?;
    let mut audio = None;
    let mut video = None;
    let mut payload_types = Vec::new();
    for media in &parsed.media_descriptions {
        let kind = match media.media_name.media.as_str() {
            "audio" => TrackKind::Audio,
            "video" => TrackKind::Video,
            _ => continue,
        };
        if media.media_name.port.value == 0
            || media.has_attribute("inactive")
            || media.has_attribute("recvonly")
        {
            continue;
        }
        let codecs = media.codecs();
        let formats: Vec<_> = media
            .media_name
            .formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| codecs.get(&pt))
            .collect();
        let slot = match kind {
            TrackKind::Audio => &mut audio,
            TrackKind::Video => &mut video,
        };
        if slot.is_some() {
            continue;
        }
        let Some(first) = formats.first() else {
            continue;
        };
        let Some(codec) = Codec::from_name(&first.name).filter(|c| c.kind() == kind) else {
            continue;
        };
        for f in &formats {
            payload_types.push((f.payload_type, kind));
        }
        *slot = Some(TrackInfo {
            kind,
            codec: CodecParams {
                codec,
                fmtp: first.fmtp.clone(),
                channels: if codec == Codec::Opus { 2 } else { 0 },
            },
        });
    }
    let tracks: Vec<TrackInfo> = audio.into_iter().chain(video).collect();
    if tracks.is_empty() {
        return Err("the upstream answered no audio or video track this node can forward".into());
    }
    Ok(Negotiated {
        tracks,
        payload_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sections: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{sections}"
        )
    }

    const AUDIO_SECTION: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";

    #[test]
    fn answer_gives_one_track_per_active_kind_audio_first() {
        let sdp = answer(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 106\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n{AUDIO_SECTION}"
        ));
        let n = negotiated(&sdp).expect("a usable answer");
        assert_eq!(n.tracks.len(), 2);
        assert_eq!(n.tracks[0].kind, TrackKind::Audio);
        assert_eq!(n.tracks[0].codec.codec, Codec::Opus);
        assert_eq!(n.tracks[0].codec.channels, 2);
        assert_eq!(n.tracks[1].kind, TrackKind::Video);
        assert_eq!(n.tracks[1].codec.codec, Codec::H264);
        assert_eq!(
            n.tracks[1].codec.fmtp,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"
        );
        assert_eq!(n.kind_of(106), Some(TrackKind::Video));
        assert_eq!(n.kind_of(111), Some(TrackKind::Audio));
        assert_eq!(n.kind_of(96), None);
    }

    #[test]
    fn inactive_rejected_and_unknown_sections_carry_no_track() {
        let sdp = answer(&format!(
            "{AUDIO_SECTION}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n"
        ));
        let n = negotiated(&sdp).expect("audio only");
        assert_eq!(n.tracks.len(), 1);
        assert_eq!(n.tracks[0].kind, TrackKind::Audio);

        let rejected = answer(
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n",
        );
        assert!(negotiated(&rejected).is_err());

        let unknown = answer(
            "m=video 9 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:97 H265/90000\r\n",
        );
        assert!(negotiated(&unknown).is_err());
        assert!(negotiated("not sdp").is_err());
    }

    #[test]
    fn vp9_and_av1_map_to_their_codecs() {
        for (name, codec) in [
            ("VP9", Codec::VP9),
            ("AV1", Codec::AV1),
            ("VP8", Codec::VP8),
        ] {
            let sdp = answer(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:98 {name}/90000\r\n"
            ));
            let n = negotiated(&sdp).expect("a video track");
            assert_eq!(n.tracks.len(), 1);
            assert_eq!(n.tracks[0].codec.codec, codec);
            assert_eq!(n.tracks[0].codec.channels, 0);
        }
    }

    #[test]
    fn offered_formats_have_distinct_payload_types() {
        let all = offered();
        let mut pts: Vec<u8> = all.iter().map(|(_, c)| c.payload_type).collect();
        pts.sort_unstable();
        pts.dedup();
        assert_eq!(pts.len(), all.len());
        let h264: Vec<_> = all
            .iter()
            .filter(|(_, c)| c.rtp_codec.mime_type == MIME_TYPE_H264)
            .collect();
        assert_eq!(h264.len(), 3);
        assert!(
            h264.iter()
                .all(|(_, c)| c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1"))
        );
    }
}
