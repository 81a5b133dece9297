//! The cluster end to end: one orchestrator (memory or a real `redis-server`), several edges,
//! all real processes on 127.0.0.1. Chromium publishes and watches through the orchestrator's
//! `307`s, curl `-L` publishes with its key dropped on the redirect, viewers on a relaying edge
//! decode frames that came through the relay and keep decoding across an upstream restart,
//! killed edges and restarted orchestrators converge within 10 s, two orchestrators on one
//! Redis agree, and gRPC (Google's grpcio as the client) answers health open and everything
//! else only with the cluster token.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use waveguide_tests::browser::PublishOptions;
use waveguide_tests::cluster::{
    CONVERGE, OrchestratorAddr, POLL, TOKEN, get_json, orchestrator_config, redirect, rtmp_publish,
    start_edge, wait_nodes, wait_stream_origin,
};
use waveguide_tests::edge::http_client;
use waveguide_tests::offer::{OfferSpec, make_offer};
use waveguide_tests::signaling;
use waveguide_tests::{
    Browser, EdgeProcess, OrchestratorProcess, RedisProcess, exclusive, poll_until, run_python,
};

/// Chromium publishes through the orchestrator and lands on the ingest edge; Chromium viewers
/// through the orchestrator land on the viewer edges and decode frames that came through a
/// relay; the REST API shows origin and relays.
#[test]
fn chromium_publishes_and_watches_through_the_orchestrator_via_a_relay() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    let c = start_edge("edge-c", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b", "edge-c"]);

    let mut browser = Browser::launch();
    let publisher = browser.open_page();
    let published = browser.publish(
        publisher,
        &addr.url("/whip/demo"),
        Some("demo-key"),
        &PublishOptions::default(),
    );
    assert_eq!(
        published.status, 201,
        "publish through orchestrator: {published:?}"
    );
    let location = published.location.clone().unwrap_or_default();
    assert!(
        location.starts_with(&a.url("/whip/demo/")),
        "the publisher must land on the ingest edge {}: {location}",
        a.base_url()
    );
    wait_stream_origin(&addr, "demo", "edge-a");

    let viewers = browser.open_page();
    let watched = browser.watch(viewers, &addr.url("/whep/demo"), 2);
    let viewer_edges = [b.base_url(), c.base_url()];
    for w in &watched {
        assert_eq!(w.status, 201, "watch through orchestrator: {w:?}");
        let loc = w.location.clone().unwrap_or_default();
        assert!(
            viewer_edges.iter().any(|e| loc.starts_with(e.as_str())),
            "viewers must land on a viewer edge, not the ingest-only edge: {loc}"
        );
    }
    let ids: Vec<u64> = watched.iter().map(|w| w.id).collect();
    browser.wait_connected(viewers, &ids, Duration::from_secs(15));
    for id in &ids {
        let s = browser.wait_stats(
            viewers,
            *id,
            "30 frames decoded through the relay",
            Duration::from_secs(20),
            |s| s.frames_decoded() >= 30,
        );
        assert!(s.video.as_ref().is_some_and(|v| v.frame_width == 640));
    }

    let stream = poll_until(
        "orchestrator shows a relay for demo",
        CONVERGE,
        POLL,
        || {
            get_json(&addr.url("/api/v1/streams/demo"))
                .filter(|s| s["relays"].as_array().is_some_and(|r| !r.is_empty()))
        },
    );
    println!("orchestrator view of demo: {stream}");
    assert_eq!(stream["origin"], "edge-a");
    for relay in stream["relays"].as_array().into_iter().flatten() {
        let id = relay.as_str().unwrap_or_default();
        assert!(id == "edge-b" || id == "edge-c", "relay {id}");
    }
    // On the relaying edge the stream is a relayed one, with the viewers on it.
    let relayed: Vec<Value> = [&b, &c]
        .iter()
        .filter_map(|e| e.stream_info("demo"))
        .collect();
    assert!(!relayed.is_empty());
    assert!(
        relayed.iter().all(|s| s["protocol"] == "relay"),
        "{relayed:?}"
    );
    let local_viewers: u64 = relayed
        .iter()
        .map(|s| s["viewers"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(local_viewers, 2, "{relayed:?}");
    drop(orchestrator);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl `-L` follows the orchestrator's 307 to the edge and drops `Authorization` on the way
/// (another port is another origin): the ticket in the Location publishes. A wrong key is
/// refused by the orchestrator itself, without a redirect.
#[test]
fn curl_publishes_through_the_orchestrator_with_its_key_dropped() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest", "edge"], addr);
    wait_nodes(&addr, &["edge-a"]);

    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let dir = std::env::temp_dir().join(format!("wg-cluster-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let offer_path = dir.join("offer.sdp");
    std::fs::write(&offer_path, offer).expect("write offer");
    let body = format!("@{}", offer_path.display());
    let url = addr.url("/whip/demo");
    let write_out = "%{http_code} %{num_redirects} %{url_effective}";
    let (out, err) = curl(&[
        "-L",
        "-o",
        "/dev/null",
        "-w",
        write_out,
        "-H",
        "Authorization: Bearer demo-key",
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        &body,
        &url,
    ]);
    println!("curl -L through the orchestrator: {out} {err}");
    let parts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"201"), "{out} {err}");
    assert_eq!(parts.get(1), Some(&"1"), "one redirect: {out}");
    assert!(
        parts
            .get(2)
            .is_some_and(|u| u.starts_with(&a.url("/whip/demo?ticket="))),
        "{out}"
    );
    // The key really was dropped: the same URL without the ticket is refused by the edge.
    let (out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        &body,
        &a.url("/whip/demo"),
    ]);
    assert_eq!(out, "401", "no key and no ticket at the edge");
    let (out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        &body,
        &a.url("/whip/demo?ticket=w1~p~9999999999~demo~00"),
    ]);
    assert_eq!(out, "401", "a forged ticket");

    let (out, _) = curl(&[
        "-L",
        "-o",
        "/dev/null",
        "-w",
        write_out,
        "-H",
        "Authorization: Bearer wrong-key",
        "-H",
        "Content-Type: application/sdp",
        "--data-binary",
        &body,
        &url,
    ]);
    assert!(
        out.starts_with("401 0 "),
        "the orchestrator refuses a wrong key: {out}"
    );

    // The 307 carries CORS headers, or a browser would never follow it.
    let r = http_client()
        .post(&url)
        .header("Origin", "http://page.example")
        .header("Authorization", "Bearer demo-key")
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .expect("POST /whip/demo");
    assert_eq!(r.status(), 307);
    assert!(r.headers().contains_key("access-control-allow-origin"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGKILL an edge: within 10 s the orchestrator forgets it and its streams and sends no one
/// there. Restart the orchestrator (memory store: it starts empty): within 10 s it knows every
/// node and stream again, because edges re-announce themselves.
#[test]
fn killed_edges_are_forgotten_and_a_restarted_orchestrator_relearns() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let mut orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let mut a = start_edge("edge-a", &["ingest"], addr);
    let mut b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let _ffmpeg = rtmp_publish(&a, 120);
    wait_stream_origin(&addr, "demo", "edge-a");

    orchestrator.restart();
    let t = wait_nodes(&addr, &["edge-a", "edge-b"]);
    wait_stream_origin(&addr, "demo", "edge-a");
    println!("restarted orchestrator knew both nodes again after {t:?}");

    b.kill();
    let t = wait_nodes(&addr, &["edge-a"]);
    println!("killed edge-b dropped after {t:?}");
    // Viewers go to the only edge left that can serve them: none here (edge-a takes none).
    let (status, _) = redirect(&addr.url("/whep/demo"), None);
    assert_eq!(status, 503, "nobody left to serve viewers");

    a.kill();
    let t = wait_nodes(&addr, &[]);
    println!("killed edge-a dropped after {t:?}");
    poll_until("demo forgotten", CONVERGE, POLL, || {
        let r = http_client()
            .get(addr.url("/api/v1/streams/demo"))
            .send()
            .ok()?;
        (r.status() == 404).then_some(())
    });
    let (status, _) = redirect(&addr.url("/whep/demo"), None);
    assert_eq!(status, 404, "no edge has demo any more");
    let (status, _) = redirect(&addr.url("/whip/demo"), Some("demo-key"));
    assert_eq!(status, 503, "no ingest edge left");
}

fn redirect_target(url: &str, key: Option<&str>) -> (u16, String) {
    let (status, location) = redirect(url, key);
    // The ticket differs per answer; where it sends the client must not.
    let target = location.split('?').next().unwrap_or_default().to_owned();
    (status, target)
}

/// Two orchestrators on one Redis: edges report to one, both answer the same.
#[test]
fn two_orchestrators_on_one_redis_answer_the_same() {
    let _turn = exclusive();
    let redis = RedisProcess::start();
    let first = OrchestratorAddr::new();
    let second = OrchestratorAddr::new();
    let _o1 = OrchestratorProcess::start(&orchestrator_config(first, Some(&redis.url())));
    let _o2 = OrchestratorProcess::start(&orchestrator_config(second, Some(&redis.url())));
    let a = start_edge("edge-a", &["ingest"], first);
    let _b = start_edge("edge-b", &["edge"], first);
    wait_nodes(&first, &["edge-a", "edge-b"]);
    wait_nodes(&second, &["edge-a", "edge-b"]);
    let _ffmpeg = rtmp_publish(&a, 60);
    let s1 = wait_stream_origin(&first, "demo", "edge-a");
    let s2 = wait_stream_origin(&second, "demo", "edge-a");
    assert_eq!(s1["origin"], s2["origin"]);
    assert_eq!(s1["relays"], s2["relays"]);

    let whep1 = redirect_target(&first.url("/whep/demo"), None);
    let whep2 = redirect_target(&second.url("/whep/demo"), None);
    assert_eq!(whep1.0, 307);
    assert_eq!(
        whep1, whep2,
        "both orchestrators send a viewer to the same edge"
    );
    let whip1 = redirect_target(&first.url("/whip/demo"), Some("demo-key"));
    let whip2 = redirect_target(&second.url("/whip/demo"), Some("demo-key"));
    assert_eq!(whip1.0, 307);
    assert_eq!(
        whip1, whip2,
        "both orchestrators send a publisher to the same edge"
    );
    assert!(whip1.1.starts_with(&a.base_url()), "{whip1:?}");
    println!("both orchestrators: WHEP → {}, WHIP → {}", whep1.1, whip1.1);
}

/// The origin edge dies and comes back (with its publisher): viewers on the relaying edge keep
/// their sessions and decode again, without a new WHEP request.
#[test]
fn relay_viewers_keep_decoding_across_an_upstream_restart() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let mut a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let ffmpeg = rtmp_publish(&a, 120);
    wait_stream_origin(&addr, "demo", "edge-a");

    let mut browser = Browser::launch();
    let page = browser.open_page();
    let watched = browser.watch(page, &addr.url("/whep/demo"), 1);
    assert_eq!(watched[0].status, 201, "{:?}", watched[0]);
    assert!(
        watched[0]
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with(&b.base_url())),
        "{:?}",
        watched[0]
    );
    let id = watched[0].id;
    browser.wait_connected(page, &[id], Duration::from_secs(15));
    browser.wait_stats(
        page,
        id,
        "frames before the restart",
        Duration::from_secs(20),
        |s| s.frames_decoded() >= 30,
    );

    drop(ffmpeg);
    a.kill();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    a.restart();
    let _ffmpeg = rtmp_publish(&a, 120);
    let before = browser.stats_of(page, id).frames_decoded();
    let s = browser.wait_stats(
        page,
        id,
        "60 more frames after the upstream restart",
        Duration::from_secs(25),
        |s| s.frames_decoded() >= before + 60,
    );
    println!(
        "viewer decoding again {:?} after the origin was killed ({} frames total)",
        outage.elapsed(),
        s.frames_decoded()
    );
    assert_eq!(
        s.connection_state, "connected",
        "the same session throughout"
    );
}

/// gRPC: `grpc.health.v1` answers SERVING on edge and orchestrator without credentials; a
/// waveguide.v1 call without the cluster token (or with a wrong one) is UNAUTHENTICATED, with
/// it OK. The client is Google's grpcio.
#[test]
fn grpc_health_is_open_and_calls_need_the_cluster_token() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest", "edge"], addr);
    wait_nodes(&addr, &["edge-a"]);
    let probes = [
        (
            format!("127.0.0.1:{}", a.grpc_port()),
            "/waveguide.v1.ModuleService/HealthCheck",
        ),
        (
            format!("127.0.0.1:{}", addr.grpc),
            "/waveguide.v1.EventService/ReportMetrics",
        ),
    ];
    for (target, method) in &probes {
        let v = run_python(
            "grpc_probe.py",
            &[target.as_str(), TOKEN, method],
            Duration::from_secs(30),
        );
        println!("{target} {method}: {v}");
        assert_eq!(v["health"], "SERVING", "{v}");
        assert_eq!(v["no_token"]["code"], "UNAUTHENTICATED", "{v}");
        assert_eq!(v["wrong_token"]["code"], "UNAUTHENTICATED", "{v}");
        assert_eq!(v["token"]["code"], "OK", "{v}");
    }
}

/// `EntityService.CreateEntity` with a relay pull from a given WHEP URL: the edge pulls the
/// stream from that edge directly (no orchestrator lookup) and serves it as a relayed stream.
#[test]
fn create_entity_pulls_a_stream_from_a_given_edge() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let _ffmpeg = rtmp_publish(&a, 60);
    wait_stream_origin(&addr, "demo", "edge-a");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let created = runtime.block_on(async {
        use waveguide_proto::v1;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", b.grpc_port()))
                .expect("endpoint")
                .connect()
                .await
                .expect("connect to edge-b gRPC");
        let mut client = v1::entity_service_client::EntityServiceClient::new(channel);
        let mut request = tonic::Request::new(v1::CreateEntityRequest {
            spec: Some(v1::create_entity_request::Spec::RelayPull(
                v1::RelayPullSpec {
                    stream: "demo".into(),
                    upstream_url: a.url("/whep/demo"),
                    upstream_node_id: "edge-a".into(),
                    idle_grace: None,
                },
            )),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("metadata"),
        );
        client.create_entity(request).await
    });
    let created = created.expect("CreateEntity relay pull");
    let entity = created.into_inner().entity.expect("the stream entity");
    assert_eq!(entity.r#ref.expect("ref").id, "demo");
    let info = b.stream_info("demo").expect("edge-b has demo");
    assert_eq!(info["protocol"], "relay", "{info}");
    poll_until("edge-b relays packets", CONVERGE, POLL, || {
        b.stream_info("demo").filter(|s| {
            s["tracks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["packets"].as_u64() > Some(100)))
        })
    });

    // A viewer on edge-b asks for a keyframe: the relay passes it upstream as a PLI of its
    // own, which edge-a counts as feedback from one of its viewers (the pull).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let live = std::sync::Arc::new(signaling::LiveCounts::default());
    let viewer = rt.block_on(async {
        let mut signal = signaling::SignalClient::open(b.grpc_port(), Some(TOKEN))
            .await
            .expect("open Signal on edge-b");
        let watched = signaling::watch(&mut signal, "demo", "relay-viewer")
            .await
            .unwrap_or_else(|e| panic!("watch on edge-b refused: {e:?}"));
        let task = tokio::spawn(signaling::receive_counting(
            watched.peer,
            Duration::from_secs(30),
            std::sync::Arc::clone(&live),
        ));
        (signal, task)
    });
    poll_until("the edge-b viewer gets video", CONVERGE, POLL, || {
        (live.snapshot().0 > 30).then_some(())
    });
    let plis_at_a = || a.metric("waveguide_viewer_plis_total", &[]);
    let before = plis_at_a();
    let relayed_before = video_keyframe_requests(&b);
    // Past the edges' 500 ms merging of keyframe requests (the join made one).
    std::thread::sleep(Duration::from_millis(700));
    live.send_pli
        .store(true, std::sync::atomic::Ordering::Relaxed);
    poll_until("edge-a gets the relayed PLI", CONVERGE, POLL, || {
        (plis_at_a() > before).then_some(())
    });
    let relayed_after = video_keyframe_requests(&b);
    println!(
        "PLIs from viewers at edge-a: {before} → {}; edge-b asked upstream {relayed_before} → {relayed_after} times",
        plis_at_a()
    );
    assert!(
        relayed_after > relayed_before,
        "edge-b counts its requests upstream"
    );
    live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_signal, task) = viewer;
    let _ = rt.block_on(task);
}

/// Keyframe requests the stream's video track has sent to its publisher (REST).
fn video_keyframe_requests(edge: &EdgeProcess) -> u64 {
    edge.stream_info("demo")
        .and_then(|s| {
            s["tracks"]
                .as_array()?
                .iter()
                .find(|t| t["kind"] == "video")?["keyframe_requests"]
                .as_u64()
        })
        .unwrap_or(0)
}
