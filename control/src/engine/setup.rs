//! Building peer connections for publishers and viewers: ICE-lite with our own credentials (the
//! shard demultiplexes by them), host candidates on the shard's port, AES-GCM SRTP first.

use super::offer::{Offer, OfferedFormat, no_common_codec};
use super::srtp_keys::KeyCapture;
use crate::error::{Error, Result};
use crate::media::{Codec, CodecParams, TrackKind};
use crate::stream::{StreamRef, TrackInfo};
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    Registry, Slot, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A built connection with its answer.
pub(crate) struct Built {
    pub pc: RTCPeerConnection,
    pub local_ufrag: String,
    pub answer_sdp: String,
}

/// A publisher's track as negotiated.
#[derive(Debug, Clone)]
pub(crate) struct PublisherTrack {
    pub info: TrackInfo,
    pub payload_type: u8,
}

/// A viewer's outgoing track as negotiated.
#[derive(Debug, Clone)]
pub(crate) struct ViewerTrack {
    pub kind: TrackKind,
    pub codec: Codec,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub payload_type: u8,
}

fn rtc_kind(kind: TrackKind) -> RtpCodecKind {
    match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    }
}

fn engine_err(e: impl std::fmt::Display) -> Error {
    Error::Engine(e.to_string())
}

fn settings(crypto: Option<Arc<dyn RTCCryptoProvider>>) -> SettingEngine {
    let builder = match crypto {
        Some(provider) => SettingEngineBuilder::new().with_crypto_provider(provider),
        None => SettingEngineBuilder::new(),
    };
    builder
        .with_lite(true)
        // The client starts DTLS once its checks succeed; we never need its address first.
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // GCM first: it avoids the HMAC that dominates SRTP cost (FIELD-NOTES, rtc#105).
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .with_ice_timeouts(
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(15)),
            Some(Duration::from_secs(2)),
        )
        .build()
}

/// Our ICE ufrag in an SDP we made: the shard routes connectivity checks by it.
pub(crate) fn local_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

fn codec_parameters(
    format: &OfferedFormat,
    codec: Codec,
    video_feedback: bool,
) -> RTCRtpCodecParameters {
    let mut feedback = Vec::new();
    if video_feedback && codec.kind() == TrackKind::Video {
        for (typ, parameter) in [("nack", ""), ("nack", "pli"), ("ccm", "fir")] {
            feedback.push(RTCPFeedback {
                typ: typ.into(),
                parameter: parameter.into(),
            });
        }
    }
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: codec.mime_type().into(),
            clock_rate: codec.clock_rate(),
            channels: if codec == Codec::Opus { 2 } else { 0 },
            sdp_fmtp_line: format.fmtp.clone(),
            rtcp_feedback: feedback,
        },
        payload_type: format.payload_type,
    }
}

fn finish(mut pc: RTCPeerConnection, candidates: &[SocketAddr], now: Instant) -> Result<Built> {
    for addr in candidates {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(engine_err)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(engine_err)?;
        pc.add_local_candidate(init).map_err(engine_err)?;
    }
    let answer = pc.create_answer(None).map_err(engine_err)?;
    pc.set_local_description(now, answer).map_err(engine_err)?;
    let answer_sdp = pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| Error::Engine("no local description after answering".into()))?;
    let local_ufrag =
        local_ufrag(&answer_sdp).ok_or_else(|| Error::Engine("answer without ice-ufrag".into()))?;
    Ok(Built {
        pc,
        local_ufrag,
        answer_sdp,
    })
}

fn set_offer(pc: &mut RTCPeerConnection, sdp: String, now: Instant) -> Result<()> {
    let offer =
        RTCSessionDescription::offer(sdp).map_err(|e| Error::MalformedSdp(e.to_string()))?;
    pc.set_remote_description(now, offer)
        .map_err(|e| Error::MalformedSdp(e.to_string()))
}

/// A publisher's connection: one codec per kind, the publisher's own first choice (or the
/// codec its viewers already hold, when it comes back).
pub(crate) fn publisher(
    offer: &Offer,
    sdp: String,
    previous: &[TrackInfo],
    candidates: &[SocketAddr],
    now: Instant,
) -> Result<(Built, Vec<PublisherTrack>)> {
    let mut media_engine = MediaEngine::default();
    let mut tracks = Vec::new();
    for kind in [TrackKind::Audio, TrackKind::Video] {
        let prefer = previous.iter().find(|t| t.kind == kind).map(|t| &t.codec);
        let Some((format, params)) = offer.publisher_choice_preferring(kind, prefer) else {
            continue;
        };
        media_engine
            .register_codec(
                codec_parameters(&format, params.codec, false),
                rtc_kind(kind),
            )
            .map_err(engine_err)?;
        tracks.push(PublisherTrack {
            info: TrackInfo {
                kind,
                codec: params,
            },
            payload_type: format.payload_type,
        });
    }
    if tracks.is_empty() {
        let supported: Vec<CodecParams> = Codec::ALL
            .into_iter()
            .map(|codec| CodecParams {
                codec,
                fmtp: if codec == Codec::H264 {
                    "packetization-mode=1".into()
                } else {
                    String::new()
                },
                channels: 0,
            })
            .collect();
        return Err(no_common_codec(&supported));
    }
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(engine_err)?;
    let settings = settings(None);
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(engine_err)?;
    set_offer(&mut pc, sdp, now)?;
    Ok((finish(pc, candidates, now)?, tracks))
}

/// A viewer's connection: one sending track per stream track the viewer's offer can carry.
pub(crate) fn viewer(
    offer: &Offer,
    sdp: String,
    stream: &StreamRef,
    candidates: &[SocketAddr],
    keys: Option<Arc<KeyCapture>>,
    now: Instant,
) -> Result<(Built, Vec<ViewerTrack>)> {
    let mut media_engine = MediaEngine::default();
    let mut matched = Vec::new();
    for track in &stream.tracks {
        if let Some(format) = offer.viewer_match(&track.codec) {
            media_engine
                .register_codec(
                    codec_parameters(&format, track.codec.codec, true),
                    rtc_kind(track.kind),
                )
                .map_err(engine_err)?;
            matched.push((track.clone(), format));
        }
    }
    let all: Vec<CodecParams> = stream.tracks.iter().map(|t| t.codec.clone()).collect();
    if matched.is_empty() {
        return Err(no_common_codec(&all));
    }
    // A kind the stream lacks (video of an audio-only stream) is still answered, inactive,
    // rather than rejected: a rejected first m-line is the BUNDLE tag, and Chromium then never
    // connects the bundle.
    for kind in [TrackKind::Audio, TrackKind::Video] {
        if matched.iter().any(|(t, _)| t.kind == kind) {
            continue;
        }
        if let Some((format, codec)) = offer.first_known_format(kind) {
            media_engine
                .register_codec(codec_parameters(&format, codec, true), rtc_kind(kind))
                .map_err(engine_err)?;
        }
    }
    // A viewer only sends: it answers NACKs from its history (within its retransmission budget,
    // `resend_gate.rs`) and sends sender reports. A NACK
    // generator and receiver reports would have no incoming media to act on, yet every packet
    // to every viewer walks through each interceptor in the chain (a copy per stage): leaving
    // them out is measurably cheaper per packet. The NACK and PLI feedback itself is in the
    // codec parameters; the sender reports' slot also lets the viewer's PLIs and reports
    // through to the shard.
    let registry = Registry::new()
        .with(Slot::NackResponder, super::resend_gate::ResendGate::new())
        .with(Slot::SenderReport, super::feedback::FeedbackTap::new());
    let settings = settings(keys.map(|k| k as Arc<dyn RTCCryptoProvider>));
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(engine_err)?;
    set_offer(&mut pc, sdp, now)?;
    let mut tracks = Vec::new();
    for (track, format) in matched {
        let ssrc: u32 = rand::random();
        let codec = codec_parameters(&format, track.codec.codec, true).rtp_codec;
        let kind_name = match track.kind {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        };
        let local = MediaStreamTrack::new(
            format!("waveguide-{}", stream.name),
            format!("{}-{kind_name}", stream.name),
            kind_name.to_owned(),
            rtc_kind(track.kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let sender = pc.add_track(local).map_err(engine_err)?;
        tracks.push((track, sender, ssrc));
    }
    // Sections the stream has no track for are answered inactive: rtc would answer them
    // sendonly with nothing to send, and a silent video track stalls a page's media element.
    let ours: Vec<RTCRtpSenderId> = tracks.iter().map(|(_, sender, _)| *sender).collect();
    let transceivers: Vec<_> = pc.get_transceivers().collect();
    for id in transceivers {
        if let Some(mut t) = pc.rtp_transceiver(id)
            && t.sender().is_none_or(|s| !ours.contains(&s))
        {
            t.set_direction(RTCRtpTransceiverDirection::Inactive);
        }
    }
    let built = finish(pc, candidates, now)?;
    let mut pc = built.pc;
    let mut out = Vec::new();
    for (track, sender, ssrc) in tracks {
        let payload_type = pc.rtp_sender(sender).and_then(|mut s| {
            s.get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
        });
        if let Some(payload_type) = payload_type {
            out.push(ViewerTrack {
                kind: track.kind,
                codec: track.codec.codec,
                sender,
                ssrc,
                payload_type,
            });
        }
    }
    if out.is_empty() {
        return Err(no_common_codec(&all));
    }
    Ok((
        Built {
            pc,
            local_ufrag: built.local_ufrag,
            answer_sdp: built.answer_sdp,
        },
        out,
    ))
}
