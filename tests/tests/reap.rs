//! A viewer that vanishes (its tab closes: no DELETE, no more packets) is reaped by the ICE
//! timeouts within 30 s, and the stream and its other viewers carry on.

use std::time::{Duration, Instant};
use waveguide_tests::browser::PublishOptions;
use waveguide_tests::{Browser, EdgeProcess, poll_until};

fn viewers(edge: &EdgeProcess) -> u64 {
    edge.stream_info("demo")
        .and_then(|s| s["viewers"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn vanished_viewer_is_reaped_within_30_s() {
    let edge = EdgeProcess::start_demo();
    let mut browser = Browser::launch();
    let publisher = browser.open_page();
    let published = browser.publish(
        publisher,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &PublishOptions::default(),
    );
    assert_eq!(published.status, 201, "{published:?}");

    let stays = browser.open_page();
    let kept = browser.watch(stays, &edge.url("/whep/demo"), 1).remove(0);
    let goes = browser.open_page();
    let gone = browser.watch(goes, &edge.url("/whep/demo"), 1).remove(0);
    browser.wait_connected(stays, &[kept.id], Duration::from_secs(15));
    browser.wait_connected(goes, &[gone.id], Duration::from_secs(15));
    assert_eq!(viewers(&edge), 2);

    browser.close_page(goes);
    let closed = Instant::now();
    poll_until(
        "the vanished viewer reaped",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || (viewers(&edge) == 1).then_some(()),
    );
    println!("vanished viewer reaped after {:?}", closed.elapsed());

    let before = browser.stats_of(stays, kept.id).frames_decoded();
    browser.wait_stats(
        stays,
        kept.id,
        "the remaining viewer still decodes",
        Duration::from_secs(10),
        |s| s.frames_decoded() > before + 20,
    );
    let mut edge = edge;
    edge.assert_alive();
}
