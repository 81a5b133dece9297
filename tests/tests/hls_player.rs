//! The player page (`/watch/{stream}`) choosing between WebRTC and LL-HLS.
//!
//! - `player_without_udp_falls_back_to_hls`: Chromium runs in a network namespace of its own
//!   (a veth pair to this host, and a routing rule that prohibits every UDP packet leaving it),
//!   so WHEP signaling over HTTP works but no ICE check can; the page must give up on WebRTC a
//!   few seconds after the WHEP answer and play LL-HLS over the same HTTP port. Needs root
//!   (`ip netns`), as the CI runner and the dev container have.
//! - `vp8_stream_has_no_hls_rendition`: aiortc publishes VP8; `/hls/…` answers `409` with the
//!   reason, the REST notices name it, and the player forced to HLS says so instead of trying.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use waveguide_tests::aiortc::{PyPeer, VideoCodec};
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::{Browser, EdgeProcess, poll_until, ports};

/// A network namespace joined to this host by a veth pair, from which no UDP gets out.
/// Removed (with its veth pair) on drop.
struct NoUdpNamespace {
    name: String,
    host_link: String,
    /// The host's end of the pair, which the namespace reaches.
    host_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NoUdpNamespace {
    fn create() -> Self {
        let id = std::process::id() % 10_000;
        let subnet = 16 + std::process::id() % 200;
        let name = format!("wg-noudp-{id}");
        let host_link = format!("wgh{id}");
        let ns_link = format!("wgn{id}");
        let host_ip = Ipv4Addr::new(10, 231, subnet as u8, 1);
        let ns_ip = Ipv4Addr::new(10, 231, subnet as u8, 2);
        let ns = Self {
            name: name.clone(),
            host_link: host_link.clone(),
            host_ip,
        };
        // Leftovers of an earlier run with the same pid would make `add` fail.
        ns.remove();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", &ns_link,
        ]);
        ip(&["link", "set", &ns_link, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_link]);
        inside(&["link", "set", &ns_link, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // After the local table (the browser's own loopback works), before every route: a
        // UDP packet to anywhere else is refused at the sender.
        inside(&["rule", "add", "pref", "10", "ipproto", "udp", "prohibit"]);
        ns
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

impl Drop for NoUdpNamespace {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Forwards TCP connections from `listen` to `to` (the edge listens on loopback, which the
/// namespace cannot reach). The accept thread lives as long as the test process.
fn forward_tcp(listen: Ipv4Addr, to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((listen, 0)).expect("bind the forwarder");
    let addr = listener.local_addr().expect("forwarder address");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(to) else {
                continue;
            };
            let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || pipe(client, server));
            std::thread::spawn(move || pipe(server2, client2));
        }
    });
    addr
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The edge with stream `demo` (key `demo-key`) and its RTMP server on a free port.
fn start_edge() -> (EdgeProcess, u16) {
    let port = ports::free_port();
    let mut config = static_config(&[("demo", "demo-key")], 15);
    config.push_str(&format!("\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n"));
    (EdgeProcess::start(&config), port)
}

#[test]
fn player_without_udp_falls_back_to_hls() {
    // The namespace exists before the edge starts, and goes after everything else.
    let ns = NoUdpNamespace::create();
    let (edge, port) = start_edge();
    // No B-frames: the player would otherwise pick LL-HLS from the start.
    let mut ffmpeg = Ffmpeg::publish(
        &format!("rtmp://127.0.0.1:{port}/live/demo-key"),
        60,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
        ],
        &["-c:a", "aac", "-ar", "48000", "-ac", "2"],
    );
    poll_until(
        "demo live over RTMP",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if let Ok(Some(status)) = ffmpeg.child.try_wait() {
                panic!("ffmpeg exited early with {status}:\n{}", ffmpeg.output());
            }
            edge.stream_info("demo").filter(|s| s["state"] == "live")
        },
    );
    let edge_addr = SocketAddr::from(([127, 0, 0, 1], edge.http_port()));
    let front = forward_tcp(ns.host_ip, edge_addr);

    let mut browser = Browser::launch_in_netns(&ns.name);
    let opened = Instant::now();
    let page = browser.goto(&format!("http://{front}/watch/demo"));
    let eval = |browser: &mut Browser, expr: &str| -> serde_json::Value {
        browser
            .eval(page, expr)
            .unwrap_or_else(|e| panic!("eval {expr}: {e}\n{}", browser.log_tail(40)))
    };
    // WebRTC first: the WHEP POST reaches the edge over HTTP...
    poll_until(
        "the page's WHEP session on the edge",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let mode = eval(&mut browser, "window.waveguide && window.waveguide.mode");
            let resource = eval(
                &mut browser,
                "window.waveguide && window.waveguide.resource",
            );
            (mode == "webrtc" && resource.is_string()).then_some(())
        },
    );
    // ...but no ICE check gets out, and the page falls back.
    poll_until(
        "the player falling back to LL-HLS",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || (eval(&mut browser, "window.waveguide.mode") == "hls").then_some(()),
    );
    let fell_back = opened.elapsed();
    assert!(
        fell_back >= Duration::from_secs(4),
        "fell back after {fell_back:?}, before WebRTC had its chance"
    );
    assert_eq!(
        eval(&mut browser, "document.getElementById('mode').textContent"),
        "LL-HLS"
    );
    poll_until(
        "LL-HLS playing in the namespace",
        Duration::from_secs(25),
        Duration::from_millis(250),
        || {
            let t = eval(&mut browser, "document.getElementById('video').currentTime");
            (t.as_f64().unwrap_or(0.0) > 1.0).then_some(())
        },
    );
    let frames = "document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames";
    let before = eval(&mut browser, frames).as_f64().unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(4));
    let after = eval(&mut browser, frames).as_f64().unwrap_or(0.0);
    let fps = (after - before) / 4.0;
    let size = eval(
        &mut browser,
        "[document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]",
    );
    eprintln!("fell back to LL-HLS after {fell_back:?}; then {fps:.1} fps, {size}");
    assert!(fps >= 20.0, "{fps:.1} fps after the fallback");
    assert_eq!(size, serde_json::json!([640, 480]));
    drop(browser);
    drop(ffmpeg);
    drop(edge);
    drop(ns);
}

#[test]
fn vp8_stream_has_no_hls_rendition() {
    let edge = EdgeProcess::start_demo();
    let publisher = PyPeer::publish(
        &edge.url("/whip/demo"),
        Some("demo-key"),
        VideoCodec::Vp8,
        60,
    );
    let status = poll_until(
        "demo live over WHIP with VP8",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            edge.stream_info("demo").filter(|s| {
                s["tracks"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["codec"] == "VP8"))
            })
        },
    );
    let notices = status["notices"].to_string();
    assert!(notices.contains("no HLS rendition"), "{status}");
    assert!(notices.contains("VP8"), "{status}");

    let client = http_client();
    let r = client
        .get(edge.url("/hls/demo/index.m3u8"))
        .send()
        .expect("GET index.m3u8");
    assert_eq!(r.status().as_u16(), 409);
    let body = r.text().unwrap_or_default();
    assert!(body.contains("VP8") && body.contains("H.264"), "{body}");

    let mut browser = Browser::launch();
    let page = browser.goto(&edge.url("/watch/demo?hls=1"));
    let text = poll_until(
        "the player saying there is no HLS rendition",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            let t = browser
                .eval(page, "document.getElementById('status').textContent")
                .ok()?;
            let t = t.as_str()?.to_owned();
            t.contains("HLS rendition").then_some(t)
        },
    );
    assert!(text.contains("VP8"), "{text}");
    assert_eq!(
        browser.eval(page, "window.waveguide.hls === null"),
        Ok(serde_json::json!(true)),
        "hls.js never started"
    );
    let _ = publisher.stop(Duration::from_secs(10));
}
