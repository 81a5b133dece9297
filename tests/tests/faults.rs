//! Fault tests of the cluster, on loopback and bounded in time: an edge killed under 20
//! viewers (their player pages come back on another edge), an edge drained by SIGTERM (the
//! same, cleanly), the orchestrator killed and restarted (nobody watching notices), Redis
//! restarted under two orchestrators (redirects keep working, state is rebuilt), and a
//! publisher that vanishes without a goodbye (its stream ends, its name is free again).

use serde_json::Value;
use std::time::{Duration, Instant};
use waveguide_tests::aiortc::{PyPeer, VideoCodec};
use waveguide_tests::cluster::{
    CONVERGE, OrchestratorAddr, POLL, get_json, orchestrator_config, redirect, rtmp_publish,
    start_edge, wait_nodes, wait_stream_origin,
};
use waveguide_tests::edge::http_client;
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::{
    Browser, EdgeProcess, OrchestratorProcess, PageId, RedisProcess, exclusive, poll_until,
};

/// ffmpeg publishing a small picture (20 Chromium players decode it on 2 cores) to `edge`.
fn small_publish(edge: &EdgeProcess, seconds: u32) -> Ffmpeg {
    let url = format!("rtmp://127.0.0.1:{}/live/demo-key", edge.rtmp_port());
    let seconds = seconds.to_string();
    Ffmpeg::spawn(&[
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &seconds,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-bf",
        "0",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-f",
        "flv",
        &url,
    ])
}

/// What one player page shows: its WHEP session URL and frames decoded so far.
#[derive(Debug, Clone)]
struct Player {
    resource: String,
    frames: u64,
    state: String,
}

fn player(browser: &mut Browser, page: PageId) -> Option<Player> {
    let v: Value = browser
        .eval(
            page,
            "(async () => { const w = window.waveguide; if (!w || !w.pc) return null; \
             const s = await w.stats(); return { resource: w.resource || '', \
             frames: (s && s.framesDecoded) || 0, state: w.pc.connectionState }; })()",
        )
        .ok()?;
    if v.is_null() {
        return None;
    }
    Some(Player {
        resource: v["resource"].as_str().unwrap_or_default().to_owned(),
        frames: v["frames"].as_u64().unwrap_or(0),
        state: v["state"].as_str().unwrap_or_default().to_owned(),
    })
}

/// How many of `pages` play from `edge`.
fn players_on(browser: &mut Browser, pages: &[PageId], edge: &EdgeProcess) -> usize {
    pages
        .iter()
        .filter(|p| player(browser, **p).is_some_and(|s| s.resource.starts_with(&edge.base_url())))
        .count()
}

/// Opens `count` player pages (`/watch/demo` served by `edge`) and waits until each decodes.
fn open_players(browser: &mut Browser, edge: &EdgeProcess, count: usize) -> Vec<PageId> {
    let pages: Vec<PageId> = (0..count)
        .map(|_| browser.goto(&edge.url("/watch/demo")))
        .collect();
    for page in &pages {
        poll_until(
            "a player page decoding",
            Duration::from_secs(30),
            Duration::from_millis(250),
            || player(browser, *page).filter(|p| p.frames > 10),
        );
    }
    pages
}

/// Waits until every page plays from an edge whose base URL is in `on`, with `more` frames
/// beyond what it had; returns how long that took.
fn wait_players_on(
    browser: &mut Browser,
    pages: &[PageId],
    on: &[String],
    timeout: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    let before: Vec<u64> = pages
        .iter()
        .map(|p| player(browser, *p).map_or(0, |s| s.frames))
        .collect();
    poll_until(what, timeout, Duration::from_millis(250), || {
        let mut all = true;
        for (page, before) in pages.iter().zip(&before) {
            let p = player(browser, *page);
            let moved = p.as_ref().is_some_and(|p| {
                on.iter().any(|e| p.resource.starts_with(e.as_str()))
                    && p.state == "connected"
                    && p.frames > 10
                    && (p.frames > *before + 10 || p.frames < *before)
            });
            all &= moved;
        }
        all.then_some(())
    });
    start.elapsed()
}

/// An edge killed with SIGKILL under 20 viewers: the orchestrator forgets it within 10 s and
/// the viewers' player pages are back (through the orchestrator) on another edge, which
/// relays, within 15 s.
#[test]
fn edge_killed_under_20_viewers_moves_them_to_another_edge() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    let c = start_edge("edge-c", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b", "edge-c"]);
    let _ffmpeg = small_publish(&a, 180);
    wait_stream_origin(&addr, "demo", "edge-a");

    let mut browser = Browser::launch();
    // Served by edge-b; the orchestrator places them (the first on the lighter viewer edge,
    // the rest where the stream already is), so find where they landed and kill the edge
    // holding most of them.
    let pages = open_players(&mut browser, &b, 20);
    let on_b = players_on(&mut browser, &pages, &b);
    let (mut victim, survivor, victim_id, survivor_id) = if on_b * 2 >= pages.len() {
        (b, c, "edge-b", "edge-c")
    } else {
        (c, b, "edge-c", "edge-b")
    };
    println!("{on_b} of 20 players on edge-b; killing {victim_id}");

    victim.kill();
    let killed = Instant::now();
    let forgotten = wait_nodes(&addr, &["edge-a", survivor_id]);
    let back = wait_players_on(
        &mut browser,
        &pages,
        &[survivor.base_url()],
        Duration::from_secs(15),
        "all 20 players playing on the surviving edge",
    );
    println!(
        "{victim_id} killed: forgotten after {forgotten:?}, 20 players on {survivor_id} {:?} after the kill",
        killed.elapsed().max(back)
    );
    let stream = get_json(&addr.url("/api/v1/streams/demo")).expect("demo listed");
    assert_eq!(
        stream["relays"],
        serde_json::json!([survivor_id]),
        "{stream}"
    );
}

/// SIGTERM on an edge drains it: `/readyz` turns 503 at once, the orchestrator lists it as
/// draining and sends new viewers elsewhere, its viewers are ended at the drain deadline and
/// their players come back on another edge, and the process exits.
#[test]
fn sigterm_drains_an_edge_and_its_viewers_move() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    let c = start_edge("edge-c", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b", "edge-c"]);
    let _ffmpeg = small_publish(&a, 180);
    wait_stream_origin(&addr, "demo", "edge-a");
    let mut browser = Browser::launch();
    let pages = open_players(&mut browser, &b, 3);
    // Drain the edge the orchestrator put the players on (an empty edge would just exit).
    let on_b = players_on(&mut browser, &pages, &b);
    let (mut victim, survivor, victim_id) = if on_b * 2 >= pages.len() {
        (b, c, "edge-b")
    } else {
        (c, b, "edge-c")
    };

    let signalled = Instant::now();
    assert!(waveguide_tests::process::send_signal(
        i64::from(victim.pid()),
        "TERM"
    ));
    poll_until(
        "the drained edge not ready",
        Duration::from_secs(2),
        POLL,
        || {
            let r = http_client().get(victim.url("/readyz")).send().ok()?;
            (r.status() == 503).then_some(())
        },
    );
    let draining = poll_until(
        "the orchestrator sees the edge draining",
        CONVERGE,
        POLL,
        || {
            get_json(&addr.url(&format!("/api/v1/nodes/{victim_id}")))
                .filter(|n| n["draining"] == true)
        },
    );
    println!(
        "{victim_id} draining in the orchestrator after {:?}: {}",
        signalled.elapsed(),
        draining["draining"]
    );
    let (status, location) = redirect(&addr.url("/whep/demo"), None);
    assert_eq!(status, 307);
    assert!(
        location.starts_with(&survivor.base_url()),
        "new viewers go to the other edge: {location}"
    );

    // The drain deadline is 5 s in this config; the players then reconnect by themselves.
    let moved = wait_players_on(
        &mut browser,
        &pages,
        &[survivor.base_url()],
        Duration::from_secs(20),
        "the drained edge's players on the other edge",
    );
    println!(
        "players back on the other edge {:?} after SIGTERM",
        signalled.elapsed().max(moved)
    );
    let exited = victim.wait_exit(Duration::from_secs(10));
    assert!(exited.is_some(), "the drained edge exits");
}

/// The orchestrator killed and restarted: nobody watching notices, and its state is back
/// within 10 s.
#[test]
fn orchestrator_restart_interrupts_no_viewer() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let mut orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let _ffmpeg = rtmp_publish(&a, 120);
    wait_stream_origin(&addr, "demo", "edge-a");
    let mut browser = Browser::launch();
    let pages = open_players(&mut browser, &b, 1);
    let resource = player(&mut browser, pages[0]).expect("player").resource;

    orchestrator.kill();
    let before = player(&mut browser, pages[0]).expect("player").frames;
    std::thread::sleep(Duration::from_secs(3));
    let during = player(&mut browser, pages[0]).expect("player");
    assert!(
        during.frames >= before + 45,
        "the viewer keeps decoding with the orchestrator down: {before} → {during:?}"
    );
    orchestrator.restart();
    let relearned = wait_nodes(&addr, &["edge-a", "edge-b"]);
    wait_stream_origin(&addr, "demo", "edge-a");
    let after = player(&mut browser, pages[0]).expect("player");
    assert_eq!(after.resource, resource, "the same session throughout");
    assert_eq!(after.state, "connected");
    assert!(after.frames > during.frames);
    println!("restarted orchestrator knew the cluster again after {relearned:?}");
}

/// Redis restarted under two orchestrators: redirects keep working while it is down (from
/// the last known nodes), and the state is rebuilt in the new Redis within 10 s.
#[test]
fn redis_restart_under_two_orchestrators() {
    let _turn = exclusive();
    let mut redis = RedisProcess::start();
    let first = OrchestratorAddr::new();
    let second = OrchestratorAddr::new();
    let _o1 = OrchestratorProcess::start(&orchestrator_config(first, Some(&redis.url())));
    let _o2 = OrchestratorProcess::start(&orchestrator_config(second, Some(&redis.url())));
    let a = start_edge("edge-a", &["ingest", "edge"], first);
    wait_nodes(&first, &["edge-a"]);
    let _ffmpeg = rtmp_publish(&a, 120);
    wait_stream_origin(&first, "demo", "edge-a");
    wait_stream_origin(&second, "demo", "edge-a");
    let expected = a.url("/whep/demo");
    for o in [&first, &second] {
        assert_eq!(
            redirect(&o.url("/whep/demo"), None),
            (307, expected.clone())
        );
    }

    redis.kill();
    for o in [&first, &second] {
        assert_eq!(
            redirect(&o.url("/whep/demo"), None),
            (307, expected.clone()),
            "redirects keep working with Redis down"
        );
    }
    redis.restart();
    let start = Instant::now();
    for o in [&first, &second] {
        wait_nodes(o, &["edge-a"]);
        wait_stream_origin(o, "demo", "edge-a");
        assert_eq!(
            redirect(&o.url("/whep/demo"), None),
            (307, expected.clone())
        );
    }
    println!(
        "state rebuilt in the restarted Redis after {:?}",
        start.elapsed()
    );
}

/// A WebRTC publisher that drops off the network (aiortc killed with SIGKILL: no DELETE, no
/// DTLS close, its UDP just stops): its stream ends for viewers within 30 s and the stream
/// name is free for the next publisher.
#[test]
fn vanished_publisher_frees_its_stream() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let a = start_edge("edge-a", &["ingest", "edge"], addr);
    wait_nodes(&addr, &["edge-a"]);
    let publisher = PyPeer::publish(&a.url("/whip/demo"), Some("demo-key"), VideoCodec::Vp8, 120);
    wait_stream_origin(&addr, "demo", "edge-a");
    let mut viewer = PyPeer::watch(&a.url("/whep/demo"), 120);
    viewer.next_stats(Duration::from_secs(15));
    let gone = Instant::now();
    drop(publisher);
    poll_until(
        "demo gone from the edge",
        Duration::from_secs(30),
        POLL,
        || a.stream_info("demo").is_none().then_some(()),
    );
    let ended = gone.elapsed();
    poll_until("demo gone from the orchestrator", CONVERGE, POLL, || {
        let r = http_client()
            .get(addr.url("/api/v1/streams/demo"))
            .send()
            .ok()?;
        (r.status() == 404).then_some(())
    });
    println!("vanished publisher's stream ended after {ended:?}");
    let _next = rtmp_publish(&a, 60);
    wait_stream_origin(&addr, "demo", "edge-a");
}
