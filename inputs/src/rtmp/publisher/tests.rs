use super::*;
use crate::rtmp::amf0;
use crate::rtmp::commands;
use crate::rtmp::fixtures::{self, AV_BFRAMES};
use waveguide_control::media::Audience;

/// What feeding a file produced: the publisher, its tracks, its packets and its notices.
struct Run {
    publisher: Publisher,
    tracks: Vec<TrackInfo>,
    out: Vec<Outgoing>,
    notices: Vec<Notice>,
}

/// Feeds every tag of an FLV file the way `server` does, starting the stream when ready.
fn run(file: &[u8]) -> Run {
    let mut p = Publisher::new(11, 22, (100, 200));
    let mut out = Vec::new();
    let mut tracks = Vec::new();
    let mut notices = Vec::new();
    for (ty, ts, body) in fixtures::tags(file) {
        match ty {
            8 => p.on_audio(ts, body, &mut out).unwrap(),
            9 => p.on_video(ts, body, &mut out).unwrap(),
            18 => {
                let values = amf0::decode_all(&body).unwrap();
                if let Some(meta) = commands::metadata(&values) {
                    p.on_metadata(&meta);
                }
            }
            _ => {}
        }
        if p.is_ready() {
            tracks = p.tracks();
            p.start(&mut out).unwrap();
        }
        notices.extend(p.take_notices());
    }
    Run {
        publisher: p,
        tracks,
        out,
        notices,
    }
}

#[test]
fn ffmpeg_flv_with_b_frames_becomes_h264_and_opus_rtp() {
    let Run {
        publisher: p,
        tracks,
        out,
        notices,
    } = run(AV_BFRAMES);
    assert!(p.is_started());
    assert_eq!(tracks.len(), 2);
    assert_eq!(tracks[0].codec.codec, Codec::Opus);
    assert_eq!(tracks[1].codec.codec, Codec::H264);
    let fmtp = &tracks[1].codec.fmtp;
    assert!(
        fmtp.starts_with("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e0"),
        "{fmtp}"
    );
    assert_eq!(
        notices,
        vec![Notice::BFrames(crate::rtmp::video::BFrames::Dropped)]
    );

    let only = |kind: TrackKind, audience: Audience| -> Vec<&rtp::Packet> {
        out.iter()
            .filter(|(k, _, d)| *k == kind && d.audience == audience)
            .map(|(_, p, _)| p)
            .collect()
    };
    let video = only(TrackKind::Video, Audience::Everyone);
    let audio = only(TrackKind::Audio, Audience::Everyone);
    let b_frames = only(TrackKind::Video, Audience::Taps);
    // 30 frames of which the B-frames (two of every three) are for taps only; one marker each.
    let frames = video.iter().filter(|p| p.header.marker).count();
    assert!((10..=16).contains(&frames), "{frames} frames sent");
    let tapped = b_frames.iter().filter(|p| p.header.marker).count();
    assert_eq!(frames + tapped, 30, "taps get every frame");
    // Taps also get the AAC frames as sent, 1024 samples apart.
    let aac = only(TrackKind::Audio, Audience::Taps);
    assert!(aac.len() >= 40, "{} AAC frames", aac.len());
    for w in aac.windows(2) {
        assert_eq!(
            w[1].header.timestamp.wrapping_sub(w[0].header.timestamp),
            1024
        );
    }
    assert!(p.aac_config().is_some());
    for w in b_frames.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
    }
    assert_eq!(video[0].payload[0] & 0x1f, 24, "STAP-A first");
    assert!(waveguide_control::media::is_keyframe_start(
        Codec::H264,
        &video[0].payload
    ));
    for w in video.windows(2) {
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
        assert!(
            w[1].header.timestamp >= w[0].header.timestamp,
            "decode-order timestamps never go back"
        );
    }
    assert_eq!(video[0].header.ssrc, 11);
    assert_eq!(video[0].header.sequence_number, 100);
    // 1 s of audio (plus the AAC encoder's priming): about 50 Opus packets.
    assert!(
        (48..=53).contains(&audio.len()),
        "{} audio packets",
        audio.len()
    );
    assert_eq!(audio[0].header.ssrc, 22);
    assert_eq!(audio[0].header.sequence_number, 200);
}

#[test]
fn metadata_without_audio_starts_on_the_video_header() {
    let mut p = Publisher::new(1, 2, (0, 0));
    p.on_metadata(&commands::Metadata {
        video_codec: Some("7".into()),
        ..Default::default()
    });
    let mut out = Vec::new();
    let header = fixtures::tags(AV_BFRAMES)
        .into_iter()
        .find(|(ty, _, body)| *ty == 9 && body[1] == 0)
        .unwrap();
    assert!(!p.is_ready());
    p.on_video(0, header.2, &mut out).unwrap();
    assert!(p.is_ready());
    assert_eq!(p.tracks().len(), 1);
}

#[test]
fn frames_before_headers_are_dropped_and_unknown_codecs_refused() {
    let mut p = Publisher::new(1, 2, (0, 0));
    let mut out = Vec::new();
    p.on_video(
        0,
        Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]),
        &mut out,
    )
    .unwrap();
    assert!(!p.is_ready());
    assert!(
        p.on_video(0, Bytes::from_static(&[0x1c, 0, 0, 0, 0]), &mut out)
            .is_err()
    );
    assert!(
        p.on_audio(0, Bytes::from_static(&[0x2f, 1, 0]), &mut out)
            .is_err()
    );
    // HE-AAC is refused with a clear error.
    assert!(
        p.on_audio(
            0,
            Bytes::from_static(&[0xaf, 0, 0x2b, 0x92, 0x08, 0x00]),
            &mut out
        )
        .is_err()
    );
    assert!(out.is_empty());
}
