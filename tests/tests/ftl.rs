//! FTL ingest: a client speaking `ftl_app`'s protocol (tests/py/ftl_client.py: HMAC challenge,
//! CONNECT, attributes, RTP H.264 + Opus over UDP, pings) publishes; Chromium watches over WHEP.
//! A wrong key is refused with `405`; garbage on the control port leaves the edge serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use waveguide_tests::process::{JsonChild, python_command};
use waveguide_tests::{Browser, EdgeProcess, ports};

const CHANNEL: u32 = 1234;

struct FtlEdge {
    edge: EdgeProcess,
    control_port: u16,
}

fn start_edge() -> FtlEdge {
    let control_port = ports::free_port();
    let media_port = ports::free_port();
    let config = format!(
        "[service]\nkind = \"static\"\n[[service.streams]]\nname = \"demo\"\nkey = \"demo-key\"\nftl_channel = {CHANNEL}\n\
         [ftl]\nlisten = \"127.0.0.1:{control_port}\"\nmedia_port = {media_port}\n"
    );
    FtlEdge {
        edge: EdgeProcess::start(&config),
        control_port,
    }
}

fn ftl_client(control_port: u16, key: &str, seconds: u32) -> JsonChild {
    let mut cmd = python_command("ftl_client.py");
    cmd.args([
        "127.0.0.1",
        &control_port.to_string(),
        &CHANNEL.to_string(),
        key,
        &seconds.to_string(),
    ]);
    JsonChild::spawn(cmd, "ftl-client", false)
}

#[test]
fn ftl_client_publishes_chromium_watches() {
    let FtlEdge {
        mut edge,
        control_port,
    } = start_edge();
    let mut client = ftl_client(control_port, "demo-key", 25);
    waveguide_tests::poll_until(
        "FTL stream live",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || edge.stream_info("demo").filter(|s| s["protocol"] == "ftl"),
    );

    let mut browser = Browser::launch();
    let page = browser.open_page();
    let viewers = browser.watch(page, &edge.url("/whep/demo"), 1);
    let viewer = &viewers[0];
    assert_eq!(viewer.status, 201, "WHEP: {viewer:?}");
    browser.wait_connected(page, &[viewer.id], Duration::from_secs(15));
    let first = browser.wait_stats(
        page,
        viewer.id,
        "decoded 640x360 H.264 and Opus audio energy",
        Duration::from_secs(20),
        |s| {
            s.video.as_ref().is_some_and(|v| {
                v.frames_decoded > 0 && v.frame_width == 640 && v.frame_height == 360
            }) && s.audio_energy() > 0.0
        },
    );
    let base = first.frames_decoded();
    let start = std::time::Instant::now();
    let later = browser.wait_stats(
        page,
        viewer.id,
        "60 more decoded frames",
        Duration::from_secs(10),
        |s| s.frames_decoded() >= base + 60,
    );
    let fps = (later.frames_decoded() - base) as f64 / start.elapsed().as_secs_f64();
    println!("FTL → WHEP: Chromium decodes {fps:.1} frames/s (source 30)");
    assert!(fps > 20.0, "frame rate {fps:.1}");

    let (status, report) = client.finish(Duration::from_secs(40));
    assert!(status.success(), "FTL client exited with {status}");
    let report = report.expect("FTL client report");
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["pongs"].as_u64().unwrap_or(0) > 0,
        "media pings echoed: {report}"
    );
    let replies = report["ping_replies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(replies.iter().all(|r| r == "201"), "PING replies: {report}");
    // DISCONNECT ends the stream at once.
    waveguide_tests::poll_until(
        "stream ended after DISCONNECT",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || edge.stream_info("demo").is_none().then_some(()),
    );
    edge.assert_alive();
}

#[test]
fn ftl_wrong_key_is_refused_and_garbage_is_survived() {
    let FtlEdge {
        mut edge,
        control_port,
    } = start_edge();
    let mut client = ftl_client(control_port, "wrong-key", 3);
    let (_, report) = client.finish(Duration::from_secs(30));
    let report = report.expect("FTL client report");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "connect", "{report}");
    assert_eq!(report["reply"], "405", "{report}");

    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 10_000][..],
        &b"HMAC\r\n\r\nCONNECT 1234 $zz\r\n\r\n"[..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", control_port)).expect("connect FTL");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.write_all(garbage);
        let mut buf = Vec::new();
        // The edge closes the connection (EOF or reset), it does not hang.
        let _ = s.read_to_end(&mut buf);
    }
    edge.assert_alive();
    let health = waveguide_tests::edge::http_client()
        .get(edge.url("/healthz"))
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 200);
}
