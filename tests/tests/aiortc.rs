//! aiortc publishes synthetic media (moving 640x480 video, a 440 Hz sine) over WHIP; Chromium
//! watches over WHEP and must decode it at the published size and hear the sine.

use std::time::Duration;
use waveguide_tests::aiortc::{PyPeer, VideoCodec};
use waveguide_tests::{Browser, EdgeProcess, run_python};

/// The Python clients themselves, with no edge: two aiortc peers in one process.
#[test]
fn aiortc_loopback_selftest() {
    let _turn = waveguide_tests::exclusive();
    for codec in ["VP8", "H264"] {
        let result = run_python("selftest.py", &["--codec", codec], Duration::from_secs(60));
        assert_eq!(result["ok"], true, "aiortc self-test {codec}: {result:#}");
    }
}

fn aiortc_publishes_chromium_watches(codec: VideoCodec) {
    let edge = EdgeProcess::start_demo();
    let mut publisher = PyPeer::publish(&edge.url("/whip/demo"), Some("demo-key"), codec, 120);
    let mut browser = Browser::launch();
    let page = browser.open_page();
    let viewers = browser.watch(page, &edge.url("/whep/demo"), 1);
    let viewer = &viewers[0];
    assert_eq!(viewer.status, 201, "WHEP: {viewer:?}");
    browser.wait_connected(page, &[viewer.id], Duration::from_secs(15));

    let first = browser.wait_stats(
        page,
        viewer.id,
        "decoded 640x480 video and audio energy",
        Duration::from_secs(20),
        |s| {
            s.video.as_ref().is_some_and(|v| {
                v.frames_decoded > 0 && v.frame_width == 640 && v.frame_height == 480
            }) && s.audio_energy() > 0.0
        },
    );
    let got = first
        .video
        .as_ref()
        .and_then(|v| v.codec.clone())
        .unwrap_or_default();
    assert!(
        got.eq_ignore_ascii_case(&format!("video/{}", codec.name())),
        "Chromium decodes {got}"
    );
    let base = first.frames_decoded();
    browser.wait_stats(
        page,
        viewer.id,
        "30 more decoded frames",
        Duration::from_secs(15),
        |s| s.frames_decoded() >= base + 30,
    );
    let sent = publisher.next_stats(Duration::from_secs(5));
    assert_eq!(sent["state"], "connected", "publisher: {sent}");

    assert_eq!(browser.delete(page, viewer.id), 200, "DELETE viewer");
    let done = publisher.stop(Duration::from_secs(10));
    assert_eq!(done["delete_status"], 200, "publisher DELETE: {done}");
}

#[test]
fn aiortc_vp8_publish_chromium_watch() {
    aiortc_publishes_chromium_watches(VideoCodec::Vp8);
}

#[test]
fn aiortc_h264_publish_chromium_watch() {
    aiortc_publishes_chromium_watches(VideoCodec::H264);
}
