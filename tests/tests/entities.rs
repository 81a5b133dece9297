//! The edge's entities from outside: a Python `grpcio` client, generated from the repo's
//! `.proto` files at run time (`tests/py/entities.py`), lists the streams, tracks and sessions
//! of a stream watched by two aiortc viewers and kicks one with `EntityService.DestroyEntity`;
//! the kicked viewer stops receiving while the other keeps decoding. The REST admin endpoints
//! (`/api/v1/sessions`, `DELETE /api/v1/{sessions,streams}/…`) need the cluster token.

use serde_json::Value;
use std::time::{Duration, Instant};
use waveguide_tests::aiortc::{PyPeer, VideoCodec};
use waveguide_tests::edge::{demo_config, http_client};
use waveguide_tests::{EdgeProcess, poll_until, run_python};

const TOKEN: &str = "cluster-secret";

fn config_with_token() -> String {
    format!("{}\n[cluster]\ntoken = \"{TOKEN}\"\n", demo_config())
}

/// The session id of a WHIP/WHEP client: the last segment of its resource URL.
fn session_id(peer: &PyPeer) -> String {
    let location = peer.location.as_deref().expect("a Location header");
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("a path segment")
        .to_owned()
}

/// The newest `stats` line the viewer has printed by now (reads what is queued, waiting at
/// most `settle` for more), or `None` if it printed none.
fn latest_stats(peer: &mut PyPeer, settle: Duration) -> Option<Value> {
    let mut latest = None;
    while let Some(v) = peer.child.next_json(Instant::now() + settle) {
        if v["event"] == "stats" {
            latest = Some(v);
        }
    }
    latest.or_else(|| {
        peer.child
            .seen
            .iter()
            .rev()
            .find(|v| v["event"] == "stats")
            .cloned()
    })
}

fn video_frames(stats: &Value) -> u64 {
    stats["video"]["frames"].as_u64().unwrap_or(0)
}

/// Waits until the viewer has decoded video.
fn wait_decoding(peer: &mut PyPeer, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = peer.next_stats(Duration::from_secs(10));
        if video_frames(&stats) > 10 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{label} decodes no video: {stats}"
        );
    }
}

#[test]
fn python_grpc_client_lists_entities_and_kicks_one_viewer() {
    let edge = EdgeProcess::start(&config_with_token());
    let publisher = PyPeer::publish(
        &edge.url("/whip/demo"),
        Some("demo-key"),
        VideoCodec::Vp8,
        120,
    );
    let mut kicked = PyPeer::watch(&edge.url("/whep/demo"), 120);
    let mut kept = PyPeer::watch(&edge.url("/whep/demo"), 120);
    wait_decoding(&mut kicked, "viewer 1");
    wait_decoding(&mut kept, "viewer 2");
    let kicked_id = session_id(&kicked);
    let kept_id = session_id(&kept);
    let publisher_id = session_id(&publisher);

    let target = format!("127.0.0.1:{}", edge.grpc_port());
    let seen = run_python(
        "entities.py",
        &[
            "--target", &target, "--token", TOKEN, "--stream", "demo", "--kick", &kicked_id,
        ],
        Duration::from_secs(90),
    );
    println!("entities.py: {seen:#}");
    assert_eq!(seen["ok"], true, "{seen:#}");
    assert_eq!(seen["no_token"], "UNAUTHENTICATED", "{seen:#}");
    assert_eq!(seen["wrong_token"], "UNAUTHENTICATED", "{seen:#}");

    // The stream, with its two viewers and its tracks, as entities.
    let streams = seen["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "{seen:#}");
    assert_eq!(streams[0]["name"], "demo");
    assert_eq!(streams[0]["viewers"], 2);
    assert_eq!(streams[0]["publishers"], 1);
    let track_ids: Vec<&str> = streams[0]["tracks"]
        .as_array()
        .expect("track ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let tracks: Vec<&str> = seen["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(!tracks.is_empty(), "{seen:#}");
    for id in &track_ids {
        assert!(
            tracks.contains(&format!("demo/{id}").as_str()),
            "track demo/{id} not listed: {tracks:?}"
        );
    }
    // Two per page: stream + tracks + three sessions take several pages.
    assert!(seen["pages"].as_u64().unwrap_or(0) >= 3, "{seen:#}");

    // The sessions: one publisher, exactly the two viewers, all connected.
    let sessions = seen["sessions"].as_array().expect("sessions");
    let role_of = |id: &str| {
        sessions
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["role"].clone())
    };
    assert_eq!(
        role_of(&publisher_id),
        Some(Value::from("SESSION_ROLE_PUBLISHER"))
    );
    let mut viewers: Vec<&str> = seen["viewers"]
        .as_array()
        .expect("viewers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    viewers.sort_unstable();
    let mut want = vec![kicked_id.as_str(), kept_id.as_str()];
    want.sort_unstable();
    assert_eq!(viewers, want, "{seen:#}");
    for s in sessions {
        assert_eq!(s["state"], "ENTITY_STATE_ACTIVE", "{s}");
        assert_eq!(s["stream"], "demo", "{s}");
    }

    // The kick, and what the service says about it.
    assert_eq!(seen["kicked"], kicked_id.as_str());
    assert_eq!(seen["kick_status_before"], "ENTITY_STATE_ACTIVE");
    assert_eq!(seen["destroy"], "OK", "{seen:#}");
    assert_eq!(seen["destroy_again"], "NOT_FOUND", "{seen:#}");
    assert_eq!(seen["status_after"], "NOT_FOUND", "{seen:#}");
    assert_eq!(seen["destroy_track"], "INVALID_ARGUMENT", "{seen:#}");
    assert_eq!(seen["kicked_flow"], "NOT_FOUND", "{seen:#}");
    assert_eq!(seen["track_status"], "OK", "{seen:#}");
    // A per-stream viewer ceiling is set, then lifted (tests/flows.rs sees it refuse).
    assert_eq!(seen["configure_cap"], "OK", "{seen:#}");
    assert_eq!(seen["configure_no_cap"], "OK", "{seen:#}");
    // demo is published here, not relayed.
    assert_eq!(seen["relay_flow"], "NOT_FOUND", "{seen:#}");
    let after: Vec<&str> = seen["sessions_after"]
        .as_array()
        .expect("sessions_after")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!after.contains(&kicked_id.as_str()), "{after:?}");
    assert!(after.contains(&kept_id.as_str()), "{after:?}");
    assert!(after.contains(&publisher_id.as_str()), "{after:?}");
    assert_eq!(seen["other_flow"]["id"], format!("viewer:{kept_id}"));
    // Delivery counted per viewer, and the RTT from aiortc's receiver reports (loopback).
    assert!(
        seen["other_flow"]["packets"].as_u64() > Some(50),
        "{seen:#}"
    );
    assert!(
        seen["other_flow"]["bytes"].as_u64() > Some(10_000),
        "{seen:#}"
    );
    let rtt = seen["other_flow"]["rtt_ms"].as_f64();
    assert!(
        rtt.is_some_and(|ms| (0.0..500.0).contains(&ms)),
        "RTT: {seen:#}"
    );
    assert_eq!(
        seen["other_flow"]["state"], "FLOW_STATE_FLOWING",
        "{seen:#}"
    );
    // Paused and resumed at once (tests/flows.rs measures the pause): the viewer keeps
    // decoding below.
    assert_eq!(seen["stop_flow"], "OK", "{seen:#}");
    assert_eq!(seen["stopped_state"], "FLOW_STATE_STOPPED", "{seen:#}");
    assert_eq!(seen["start_flow"], "OK", "{seen:#}");
    // This edge has no relay (no orchestrator configured): a pull cannot be created here. A
    // real pull from a given URL is tested in tests/cluster.rs.
    assert_eq!(seen["create_relay"], "FAILED_PRECONDITION", "{seen:#}");

    // The kicked viewer's media stops; the other viewer keeps decoding.
    std::thread::sleep(Duration::from_secs(1));
    let settle = Duration::from_millis(300);
    let kicked_before = latest_stats(&mut kicked, settle).expect("kicked viewer stats");
    let kept_before = latest_stats(&mut kept, settle).expect("kept viewer stats");
    std::thread::sleep(Duration::from_secs(4));
    let kicked_after = latest_stats(&mut kicked, settle).expect("kicked viewer stats");
    let kept_after = latest_stats(&mut kept, settle).expect("kept viewer stats");
    let kicked_frames = video_frames(&kicked_after) - video_frames(&kicked_before);
    let kept_frames = video_frames(&kept_after) - video_frames(&kept_before);
    println!(
        "over 4 s after the kick: kicked viewer +{kicked_frames} frames (state {}), other +{kept_frames} (state {})",
        kicked_after["state"], kept_after["state"]
    );
    assert!(
        kicked_frames <= 2 || kicked_after["state"] != "connected",
        "the kicked viewer still receives: {kicked_before} -> {kicked_after}"
    );
    assert!(
        kept_frames >= 20,
        "the other viewer stalled: {kept_before} -> {kept_after}"
    );
    assert_eq!(kept_after["state"], "connected", "{kept_after}");

    // The edge's own list agrees.
    let listed: Value = http_client()
        .get(edge.url("/api/v1/sessions?stream=demo"))
        .bearer_auth(TOKEN)
        .send()
        .expect("GET /api/v1/sessions")
        .json()
        .expect("JSON");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(!ids.contains(&kicked_id.as_str()), "{listed}");
    assert!(ids.contains(&kept_id.as_str()), "{listed}");
    let stream = edge.stream_info("demo").expect("demo is live");
    assert_eq!(stream["viewers"], 1, "{stream}");
}

#[test]
fn rest_admin_lists_sessions_and_kicks_with_the_cluster_token() {
    let edge = EdgeProcess::start(&config_with_token());
    let client = http_client();
    let publisher = PyPeer::publish(
        &edge.url("/whip/demo"),
        Some("demo-key"),
        VideoCodec::Vp8,
        120,
    );
    let viewer = PyPeer::watch(&edge.url("/whep/demo"), 120);
    let viewer_id = session_id(&viewer);
    let publisher_id = session_id(&publisher);
    let sessions_url = edge.url("/api/v1/sessions");
    let viewer_url = edge.url(&format!("/api/v1/sessions/{viewer_id}"));

    // Without the token (or with another): 401, for reads of sessions and for kicks.
    let status = |r: reqwest::blocking::RequestBuilder| r.send().expect("request").status();
    assert_eq!(status(client.get(&sessions_url)), 401);
    assert_eq!(status(client.get(&sessions_url).bearer_auth("wrong")), 401);
    assert_eq!(status(client.get(&viewer_url)), 401);
    assert_eq!(status(client.delete(&viewer_url)), 401);
    assert_eq!(status(client.delete(edge.url("/api/v1/streams/demo"))), 401);
    // Streams stay public.
    assert_eq!(status(client.get(edge.url("/api/v1/streams"))), 200);

    let list = |url: &str| -> Value {
        let resp = client.get(url).bearer_auth(TOKEN).send().expect("GET");
        assert_eq!(resp.status(), 200, "{url}");
        resp.json().expect("JSON")
    };
    let all = list(&sessions_url);
    let role_of = |list: &Value, id: &str| {
        list.as_array()
            .expect("a list")
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["role"].clone())
    };
    assert_eq!(
        role_of(&all, &viewer_id),
        Some(Value::from("viewer")),
        "{all}"
    );
    assert_eq!(
        role_of(&all, &publisher_id),
        Some(Value::from("publisher")),
        "{all}"
    );
    assert_eq!(
        list(&edge.url("/api/v1/sessions?stream=demo"))
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        list(&edge.url("/api/v1/sessions?stream=other"))
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let one = list(&viewer_url);
    assert_eq!(one["stream"], "demo", "{one}");
    assert_eq!(one["role"], "viewer", "{one}");

    // The kick: 204, then 404; the viewer is gone from the list and from the stream's count.
    assert_eq!(status(client.delete(&viewer_url).bearer_auth(TOKEN)), 204);
    assert_eq!(status(client.delete(&viewer_url).bearer_auth(TOKEN)), 404);
    assert_eq!(status(client.get(&viewer_url).bearer_auth(TOKEN)), 404);
    assert_eq!(role_of(&list(&sessions_url), &viewer_id), None);
    poll_until(
        "the stream to count no viewer",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || (edge.stream_info("demo")?["viewers"] == 0).then_some(()),
    );

    // Ending the stream: 204, then it is gone (404 to a second DELETE and to a read).
    let stream_url = edge.url("/api/v1/streams/demo");
    assert_eq!(status(client.delete(&stream_url).bearer_auth(TOKEN)), 204);
    assert_eq!(status(client.delete(&stream_url).bearer_auth(TOKEN)), 404);
    assert_eq!(status(client.get(&stream_url)), 404);
    drop(viewer);
    drop(publisher);
}

#[test]
fn rest_admin_is_refused_without_a_configured_cluster_token() {
    let edge = EdgeProcess::start(&demo_config());
    let client = http_client();
    for request in [
        client.get(edge.url("/api/v1/sessions")),
        client.get(edge.url("/api/v1/sessions/abc")),
        client.delete(edge.url("/api/v1/sessions/abc")),
        client.delete(edge.url("/api/v1/streams/demo")),
    ] {
        let resp = request.bearer_auth("anything").send().expect("request");
        assert_eq!(resp.status(), 403);
        let body = resp.text().unwrap_or_default();
        assert!(body.contains("[cluster] token"), "{body}");
    }
    assert_eq!(
        client
            .get(edge.url("/api/v1/streams"))
            .send()
            .expect("GET")
            .status(),
        200
    );
}
