//! Publisher reconnect: the publisher's tab closes without DELETE, a new publisher takes the
//! same stream within the grace period, and the SAME viewer peer connection keeps decoding —
//! no new WHEP session, no renegotiation. Past the grace period the stream ends.

use std::time::{Duration, Instant};
use waveguide_tests::browser::{PublishOptions, Signaled};
use waveguide_tests::edge::static_config;
use waveguide_tests::{Browser, EdgeProcess, PageId, poll_until};

/// Publishes from `page`, retrying while the edge still answers 409 (it has not yet noticed
/// that the old publisher vanished), until `deadline`.
fn publish_until_accepted(
    browser: &mut Browser,
    page: PageId,
    edge: &EdgeProcess,
    deadline: Instant,
    viewer: Option<(PageId, u64)>,
) -> Signaled {
    let opts = PublishOptions::default();
    loop {
        let attempt = browser.publish(page, &edge.url("/whip/demo"), Some("demo-key"), &opts);
        match attempt.status {
            201 => return attempt,
            409 if Instant::now() < deadline => {}
            other => panic!(
                "new publisher got {other} (deadline passed: {}): {attempt:?}",
                Instant::now() >= deadline
            ),
        }
        if let Some((vpage, vid)) = viewer {
            let s = browser.stats_of(vpage, vid);
            assert_eq!(
                s.connection_state, "connected",
                "viewer left `connected` while the publisher was away: {s:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn same_viewer_keeps_decoding_across_a_publisher_reconnect() {
    let grace = 15;
    let edge = EdgeProcess::start(&static_config(&[("demo", "demo-key")], grace));
    let mut browser = Browser::launch();
    let first_page = browser.open_page();
    let viewer_page = browser.open_page();

    let opts = PublishOptions::default();
    let first = browser.publish(first_page, &edge.url("/whip/demo"), Some("demo-key"), &opts);
    assert_eq!(first.status, 201, "{first:?}");
    browser.wait_connected(first_page, &[first.id], Duration::from_secs(15));

    let viewer = browser
        .watch(viewer_page, &edge.url("/whep/demo"), 1)
        .remove(0);
    assert_eq!(viewer.status, 201, "{viewer:?}");
    browser.wait_connected(viewer_page, &[viewer.id], Duration::from_secs(15));
    browser.wait_stats(
        viewer_page,
        viewer.id,
        "decoded 640x480 video",
        Duration::from_secs(15),
        |s| {
            s.video.as_ref().is_some_and(|v| {
                v.frames_decoded > 30 && v.frame_width == 640 && v.frame_height == 480
            })
        },
    );

    // The publisher vanishes: its tab closes, no DELETE.
    browser.close_page(first_page);
    let closed_at = Instant::now();

    let second_page = browser.open_page();
    // Leave a margin inside the grace period for the reconnect itself.
    let deadline = closed_at + Duration::from_secs(grace - 3);
    let second = publish_until_accepted(
        &mut browser,
        second_page,
        &edge,
        deadline,
        Some((viewer_page, viewer.id)),
    );
    browser.wait_connected(second_page, &[second.id], Duration::from_secs(15));
    let reconnected_after = closed_at.elapsed();

    let at_reconnect = browser.stats_of(viewer_page, viewer.id);
    assert_eq!(
        at_reconnect.connection_state, "connected",
        "{at_reconnect:?}"
    );
    let base = at_reconnect.frames_decoded();
    // Two seconds of frames from the new publisher through the old viewer connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let s = browser.stats_of(viewer_page, viewer.id);
        assert_eq!(
            s.connection_state, "connected",
            "viewer left `connected` after the reconnect: {s:?}"
        );
        if s.frames_decoded() >= base + 60 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "viewer decoded {} frames in 20 s after the publisher reconnected \
             ({reconnected_after:?} after the first one vanished); last stats: {s:#?}",
            s.frames_decoded() - base
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let video = last.video.expect("video stats");
    assert_eq!((video.frame_width, video.frame_height), (640, 480));

    let info = edge.stream_info("demo").expect("demo is live");
    assert_eq!(info["viewers"], 1, "still exactly one viewer: {info}");

    assert_eq!(browser.delete(viewer_page, viewer.id), 200, "DELETE viewer");
    assert_eq!(
        browser.delete(second_page, second.id),
        200,
        "DELETE publisher"
    );
}

#[test]
fn stream_ends_when_the_publisher_stays_away_past_the_grace_period() {
    let grace = 2;
    let edge = EdgeProcess::start(&static_config(&[("demo", "demo-key")], grace));
    let mut browser = Browser::launch();
    let first_page = browser.open_page();
    let viewer_page = browser.open_page();

    let first = browser.publish(
        first_page,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &PublishOptions::default(),
    );
    assert_eq!(first.status, 201, "{first:?}");
    browser.wait_connected(first_page, &[first.id], Duration::from_secs(15));
    let viewer = browser
        .watch(viewer_page, &edge.url("/whep/demo"), 1)
        .remove(0);
    assert_eq!(viewer.status, 201, "{viewer:?}");
    browser.wait_stats(
        viewer_page,
        viewer.id,
        "decoded video",
        Duration::from_secs(20),
        |s| s.frames_decoded() > 0,
    );

    browser.close_page(first_page);
    // Detecting a silent publisher takes the edge some seconds (no DELETE, no DTLS alert
    // guaranteed); then the 2 s grace runs out.
    poll_until(
        "the stream to end after its publisher vanished",
        Duration::from_secs(40),
        Duration::from_millis(250),
        || edge.stream_info("demo").is_none().then_some(()),
    );

    let second_page = browser.open_page();
    let second = browser.publish(
        second_page,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &PublishOptions::default(),
    );
    assert_eq!(
        second.status, 201,
        "a new publisher after the stream ended: {second:?}"
    );
    assert_eq!(browser.delete(second_page, second.id), 200);
}
