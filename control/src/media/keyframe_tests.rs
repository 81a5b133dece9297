use super::*;
use crate::media::TrackKind;
use bytes::Bytes;
use rtc::rtp;

fn packet(seq: u16, ts: u32, key: bool) -> Arc<MediaPacket> {
    let mut rtp = rtp::Packet::default();
    rtp.header.sequence_number = seq;
    rtp.header.timestamp = ts;
    rtp.payload = Bytes::from_static(&[0]);
    Arc::new(MediaPacket {
        stream: 1,
        kind: TrackKind::Video,
        epoch: 0,
        keyframe_start: key,
        rtp,
        received: std::time::Instant::now(),
        delivery: Default::default(),
    })
}

#[test]
fn h264_detects_idr_sps_stapa_and_fua() {
    assert!(is_keyframe_start(Codec::H264, &[0x65, 0]));
    assert!(is_keyframe_start(Codec::H264, &[0x67, 0]));
    assert!(!is_keyframe_start(Codec::H264, &[0x41, 0]));
    // STAP-A carrying an SPS.
    assert!(is_keyframe_start(
        Codec::H264,
        &[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]
    ));
    // FU-A start of IDR, and a middle fragment.
    assert!(is_keyframe_start(Codec::H264, &[0x7c, 0x85, 0]));
    assert!(!is_keyframe_start(Codec::H264, &[0x7c, 0x05, 0]));
    assert!(!is_keyframe_start(Codec::H264, &[]));
}

#[test]
fn vp8_detects_keyframe() {
    // X=1, S=1, PID=0; I=1 with a 15-bit picture id; frame tag with P=0.
    assert!(is_keyframe_start(
        Codec::VP8,
        &[0x90, 0x80, 0x81, 0x23, 0x10]
    ));
    // Same but P=1 (interframe).
    assert!(!is_keyframe_start(
        Codec::VP8,
        &[0x90, 0x80, 0x81, 0x23, 0x11]
    ));
    // Not the start of a partition.
    assert!(!is_keyframe_start(
        Codec::VP8,
        &[0x80, 0x80, 0x81, 0x23, 0x10]
    ));
}

#[test]
fn cache_keeps_newest_gop_only() {
    let mut cache = KeyframeCache::default();
    cache.push(&packet(1, 100, false));
    assert!(!cache.has_keyframe());
    cache.push(&packet(2, 200, true));
    cache.push(&packet(3, 200, false));
    cache.push(&packet(4, 300, false));
    assert_eq!(cache.packets().count(), 3);
    cache.push(&packet(5, 400, true));
    let seqs: Vec<u16> = cache
        .packets()
        .map(|p| p.rtp.header.sequence_number)
        .collect();
    assert_eq!(seqs, vec![5]);
}
