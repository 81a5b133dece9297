//! Fan-out: one Chromium publisher, 20 WHEP viewers (20 peer connections in one Chromium page,
//! each played by its own `<video>`), plus one aiortc viewer that stops reading (SIGSTOP).
//! Every viewer decodes at the published size, and the stalled viewer does not lower the frame
//! rate the others decode.

use std::time::{Duration, Instant};
use waveguide_tests::aiortc::PyPeer;
use waveguide_tests::browser::{PcStats, PublishOptions};
use waveguide_tests::{Browser, EdgeProcess, PageId, poll_until};

/// 20 peer connections in one page: one renderer process decodes them all, which 2 cores can
/// carry next to the publisher's encoder and the edge; 20 tabs would mean 20 renderers.
const VIEWERS: usize = 20;
/// Each measuring window; long enough that a frame or two of jitter is a few percent.
const WINDOW: Duration = Duration::from_secs(6);

fn all_stats(browser: &mut Browser, page: PageId, ids: &[u64]) -> Vec<PcStats> {
    browser.stats(page, ids)
}

/// Frames decoded per second by each viewer over one window.
fn rates(browser: &mut Browser, page: PageId, ids: &[u64]) -> Vec<f64> {
    let t0 = Instant::now();
    let before = all_stats(browser, page, ids);
    std::thread::sleep(WINDOW);
    let after = all_stats(browser, page, ids);
    let secs = t0.elapsed().as_secs_f64();
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            assert_eq!(
                a.connection_state, "connected",
                "viewer {} dropped: {a:?}",
                a.id
            );
            (a.frames_decoded() - b.frames_decoded()) as f64 / secs
        })
        .collect()
}

#[test]
fn twenty_viewers_decode_and_a_stalled_viewer_does_not_slow_them() {
    let edge = EdgeProcess::start_demo();
    let mut browser = Browser::launch();
    let publisher_page = browser.open_page();
    let viewer_page = browser.open_page();

    let opts = PublishOptions {
        video_codec: Some("VP8".into()),
        ..PublishOptions::default()
    };
    let published = browser.publish(
        publisher_page,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &opts,
    );
    assert_eq!(published.status, 201, "{published:?}");
    browser.wait_connected(publisher_page, &[published.id], Duration::from_secs(15));

    let viewers = browser.watch(viewer_page, &edge.url("/whep/demo"), VIEWERS);
    for v in &viewers {
        assert_eq!(v.status, 201, "viewer {}: {v:?}", v.id);
    }
    let ids: Vec<u64> = viewers.iter().map(|v| v.id).collect();
    browser.wait_connected(viewer_page, &ids, Duration::from_secs(30));

    let mut stalled = PyPeer::watch(&edge.url("/whep/demo"), 120);
    stalled.child.wait_for(
        "aiortc viewer decoding 640x480",
        Duration::from_secs(20),
        |v| {
            v["event"] == "stats"
                && v["video"]["frames"].as_u64() > Some(10)
                && v["video"]["width"] == 640
        },
    );

    poll_until(
        "every Chromium viewer decoding 640x480 with audio",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let stats = all_stats(&mut browser, viewer_page, &ids);
            stats
                .iter()
                .all(|s| {
                    s.video.as_ref().is_some_and(|v| {
                        v.frames_decoded > 0 && v.frame_width == 640 && v.frame_height == 480
                    }) && s.audio_energy() > 0.0
                })
                .then_some(())
        },
    );
    poll_until(
        "viewers == 21 in the REST API",
        Duration::from_secs(10),
        Duration::from_millis(250),
        || {
            edge.stream_info("demo")
                .filter(|s| s["viewers"] == VIEWERS as u64 + 1)
        },
    );

    let before = rates(&mut browser, viewer_page, &ids);
    stalled.child.signal("STOP");
    let during = rates(&mut browser, viewer_page, &ids);
    stalled.child.signal("CONT");

    let sum_before: f64 = before.iter().sum();
    let sum_during: f64 = during.iter().sum();
    eprintln!(
        "fps per viewer before stall: {before:.1?}\nfps per viewer during stall: {during:.1?}"
    );
    for (i, (b, d)) in before.iter().zip(&during).enumerate() {
        assert!(
            *b >= 5.0,
            "viewer {i} decoded only {b:.1} fps before the stall; the fan-out itself is too slow"
        );
        assert!(
            *d >= 0.75 * b,
            "viewer {i}: {b:.1} fps before, {d:.1} fps while another viewer was stalled"
        );
    }
    assert!(
        sum_during >= 0.85 * sum_before,
        "total decoded fps fell from {sum_before:.1} to {sum_during:.1} during the stall"
    );

    let done = stalled.stop(Duration::from_secs(15));
    let status = done["delete_status"].as_u64();
    assert!(
        status == Some(200) || status == Some(404),
        "stalled viewer's DELETE: {done}"
    );
    for id in ids {
        assert_eq!(browser.delete(viewer_page, id), 200, "DELETE viewer {id}");
    }
    assert_eq!(browser.delete(publisher_page, published.id), 200);
}
