//! LL-HLS from any edge of a cluster: ffmpeg publishes RTMP to an ingest-only edge; another
//! edge, asked for `/hls/demo/index.m3u8`, pulls the stream over the relay (as for a WHEP
//! viewer), muxes it and serves the playlists and parts; the pull lasts while HLS clients do.

use std::time::Duration;
use waveguide_tests::cluster::{
    OrchestratorAddr, orchestrator_config, rtmp_publish, start_edge, wait_nodes, wait_stream_origin,
};
use waveguide_tests::edge::http_client;
use waveguide_tests::{OrchestratorProcess, exclusive, poll_until};

#[test]
fn any_edge_serves_hls_for_a_stream_of_the_cluster() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let _ffmpeg = rtmp_publish(&a, 90);
    wait_stream_origin(&addr, "demo", "edge-a");
    assert!(b.stream_info("demo").is_none(), "edge-b holds nothing yet");

    let client = http_client();
    let get = |url: &str| {
        let r = client
            .get(url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status().as_u16();
        (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
    };
    let (status, body) = get(&b.url("/hls/demo/index.m3u8"));
    let master = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{master}");
    // Through the relay the audio is the Opus viewers get.
    assert!(master.contains("CODECS=\"avc1."), "{master}");
    let relayed = b.stream_info("demo").expect("edge-b pulled demo");
    assert_eq!(relayed["protocol"], "relay", "{relayed}");

    let media = master
        .lines()
        .find(|l| l.ends_with("/media.m3u8"))
        .expect("media playlist URI");
    let base = b.url(&format!(
        "/hls/demo/{}",
        media.trim_end_matches("media.m3u8")
    ));
    let (status, body) = get(&format!("{base}media.m3u8"));
    let playlist = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{playlist}");
    let part = playlist
        .lines()
        .find_map(|l| l.split("URI=\"part").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(|rest| format!("part{rest}"))
        .unwrap_or_else(|| panic!("a part in\n{playlist}"));
    let (status, data) = get(&format!("{base}{part}"));
    assert_eq!(status, 200);
    assert_eq!(&data[4..8], b"moof");
    let (status, init) = get(&format!("{base}init.mp4"));
    assert_eq!(status, 200);
    assert!(init.windows(4).any(|w| w == b"avcC"));

    // The pull serves the HLS tap alone: no WebRTC viewer anywhere, yet it stays up.
    std::thread::sleep(Duration::from_secs(3));
    poll_until(
        "edge-b still relaying demo for its HLS clients",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || {
            let (status, _) = get(&format!("{base}media.m3u8"));
            (status == 200 && b.stream_info("demo").is_some()).then_some(())
        },
    );
}
