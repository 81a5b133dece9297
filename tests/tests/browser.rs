//! Chromium publishes over WHIP and Chromium watches over WHEP, both from a page on another
//! origin (the driver's own HTTP port), so CORS preflight is part of every request.

use std::time::Duration;
use waveguide_tests::browser::{PcStats, PublishOptions};
use waveguide_tests::edge::http_client;
use waveguide_tests::{Browser, EdgeProcess, poll_until, run_node};

const CONNECT: Duration = Duration::from_secs(15);
const MEDIA: Duration = Duration::from_secs(15);

/// The harness itself, with no edge: fake camera → loopback peer connection in one page.
#[test]
fn chromium_loopback_selftest() {
    let _turn = waveguide_tests::exclusive();
    let result = run_node("selftest.mjs", &[], Duration::from_secs(60));
    assert_eq!(result["ok"], true, "Chromium self-test: {result:#}");
}

fn decoded_at_size(s: &PcStats, w: u32, h: u32) -> bool {
    s.video
        .as_ref()
        .is_some_and(|v| v.frames_decoded > 0 && v.frame_width == w && v.frame_height == h)
}

fn publish_and_watch(codec: &str) {
    let edge = EdgeProcess::start_demo();
    let mut browser = Browser::launch();
    let publisher_page = browser.open_page();
    let viewer_page = browser.open_page();

    let opts = PublishOptions {
        video_codec: Some(codec.to_owned()),
        ..PublishOptions::default()
    };
    let published = browser.publish(
        publisher_page,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &opts,
    );
    assert_eq!(published.status, 201, "WHIP from Chromium: {published:?}");
    assert!(published.etag.is_some(), "ETag not exposed to the page");
    let location = published
        .location
        .clone()
        .expect("Location exposed to the page");
    assert!(location.starts_with(&edge.base_url()), "{location}");
    browser.wait_connected(publisher_page, &[published.id], CONNECT);

    let info = poll_until(
        "demo with a video track in the REST API",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            edge.stream_info("demo").filter(|s| {
                s["tracks"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["kind"] == "video"))
            })
        },
    );
    let video_codec = info["tracks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "video"))
        .and_then(|t| t["codec"].as_str())
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert_eq!(video_codec, codec, "REST track codec: {info}");

    let viewers = browser.watch(viewer_page, &edge.url("/whep/demo"), 1);
    let viewer = &viewers[0];
    assert_eq!(viewer.status, 201, "WHEP from Chromium: {viewer:?}");
    assert!(viewer.location.is_some(), "viewer Location exposed");
    browser.wait_connected(viewer_page, &[viewer.id], CONNECT);

    let first = browser.wait_stats(
        viewer_page,
        viewer.id,
        "decoded 640x480 video and audio energy",
        MEDIA,
        |s| decoded_at_size(s, 640, 480) && s.audio_energy() > 0.0,
    );
    let got_codec = first
        .video
        .as_ref()
        .and_then(|v| v.codec.clone())
        .unwrap_or_default();
    assert!(
        got_codec.eq_ignore_ascii_case(&format!("video/{codec}")),
        "viewer decodes {got_codec}, expected {codec}"
    );
    // Frames keep coming, not just a cached keyframe: a second's worth more.
    let base = first.frames_decoded();
    browser.wait_stats(
        viewer_page,
        viewer.id,
        "30 more decoded frames",
        MEDIA,
        |s| s.frames_decoded() >= base + 30 && s.connection_state == "connected",
    );
    // All that was sealed and sent by the shard itself: both of the viewer's tracks moved to
    // the direct path, none stayed on rtc's (`control/src/engine/direct.rs`).
    assert_eq!(
        (
            edge.metric("waveguide_viewer_tracks_total", &["path=\"direct\""]),
            edge.metric("waveguide_viewer_tracks_total", &["path=\"rtc\""]),
        ),
        (2.0, 0.0),
        "viewer tracks by path"
    );
    let publisher_stats = browser.stats_of(publisher_page, published.id);
    let out = publisher_stats.out_video.expect("publisher outbound video");
    assert_eq!((out.frame_width, out.frame_height), (640, 480));

    let info = poll_until(
        "viewers == 1 in the REST API",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || edge.stream_info("demo").filter(|s| s["viewers"] == 1),
    );
    assert!(
        info["uptime_secs"].as_f64().is_some(),
        "uptime_secs: {info}"
    );

    assert_eq!(browser.delete(viewer_page, viewer.id), 200, "DELETE viewer");
    assert_eq!(
        browser.delete(publisher_page, published.id),
        200,
        "DELETE publisher"
    );
    // A DELETE from outside the page on the same session is now unknown.
    let status = http_client()
        .delete(&location)
        .send()
        .expect("DELETE again")
        .status();
    assert_eq!(status, 404);
    let mut edge = edge;
    edge.assert_alive();
}

#[test]
fn chromium_vp8_publish_chromium_watch() {
    publish_and_watch("VP8");
}

#[test]
fn chromium_h264_publish_chromium_watch() {
    publish_and_watch("H264");
}
