//! Attacks on the WebRTC engine (issue 15, items 5–8), against the release binary over loopback
//! only, each bounded in time. The stream is `demo`, published by ffmpeg over RTMP; the
//! attackers are `rtc` viewers ([`RtcViewer`]), raw HTTP and raw UDP.
//!
//! - Trickle `PATCH`: a 60 KiB fragment of 600 candidates is refused at its size, more than 32
//!   candidates on a session are refused, and PATCHes past the session's rate get `429` (5).
//! - A NACK storm (350 pairs every 20 ms, each packet named ~12 times) is answered within the
//!   viewer's retransmission budget, and other viewers on the same shard keep their rate (6).
//! - Viewer offers that never connect: one client holds at most 32, gets `429` past them, a
//!   viewer from another address still joins under `max_viewers`, and the held ones are
//!   dropped after 10 s (7).
//! - Connectivity checks with the right USERNAME and a wrong MESSAGE-INTEGRITY from 300
//!   source ports teach the demultiplexer nothing, and the real viewer's media keeps flowing
//!   to it (8).
//!
//! All of 127.0.0.0/8 is loopback on Linux, so 127.0.0.2 is "another host".

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::offer::{OfferSpec, make_offer};
use waveguide_tests::rtc_viewer::{NackStorm, RtcViewer};
use waveguide_tests::{EdgeProcess, poll_until, ports};

/// The edge with stream `demo` (key `demo-key`), `extra` TOML appended, and its RTMP port.
fn start_edge(extra: &str) -> (EdgeProcess, u16) {
    let port = ports::free_port();
    let mut config = static_config(&[("demo", "demo-key")], 15);
    config.push_str(&format!("\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n{extra}"));
    (EdgeProcess::start(&config), port)
}

/// ffmpeg publishing `demo` (H.264 without B-frames, a keyframe a second, AAC).
fn publish(edge: &EdgeProcess, port: u16, seconds: u32) -> Ffmpeg {
    let mut ffmpeg = Ffmpeg::publish(
        &format!("rtmp://127.0.0.1:{port}/live/demo-key"),
        seconds,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-bf",
            "0",
            "-g",
            "30",
            "-b:v",
            "1500k",
        ],
        &["-c:a", "aac"],
    );
    poll_until(
        "demo live over RTMP",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if let Ok(Some(status)) = ffmpeg.child.try_wait() {
                panic!("ffmpeg exited early with {status}:\n{}", ffmpeg.output());
            }
            edge.stream_info("demo").filter(|s| {
                s["state"] == "live" && s["tracks"].as_array().is_some_and(|t| t.len() == 2)
            })
        },
    );
    ffmpeg
}

/// POSTs a WHEP offer made by `rtc` (never connected): status, `Location`, body.
fn post_viewer_offer(url: &str) -> (u16, String, String) {
    let (_pc, sdp) = make_offer(&OfferSpec::viewer());
    let response = http_client()
        .post(url)
        .header("Content-Type", "application/sdp")
        .body(sdp)
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, location, response.text().unwrap_or_default())
}

/// A trickle fragment of `n` distinct host candidates.
fn candidates(n: usize) -> String {
    let mut frag =
        String::from("a=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n");
    for i in 0..n {
        frag.push_str(&format!(
            "a=candidate:{i} 1 udp 2130706431 10.{}.{}.{} {} typ host generation 0 ufrag Wg1x \
             network-id 1\r\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            10_000 + i
        ));
    }
    frag
}

fn patch(location: &str, fragment: &str) -> (u16, String) {
    let response = http_client()
        .patch(location)
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .body(fragment.to_owned())
        .send()
        .unwrap_or_else(|e| panic!("PATCH {location}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

/// Item 5. Before: a 60 KiB PATCH of 600 candidates got `204` (each added on the shard's
/// thread, deduplicated against all the others), as did any number of PATCHes.
#[test]
fn trickle_patches_are_bounded_in_size_candidates_and_rate() {
    let (edge, port) = start_edge("");
    let _ffmpeg = publish(&edge, port, 60);
    let url = edge.url("/whep/demo");

    let (status, location, body) = post_viewer_offer(&url);
    assert_eq!(status, 201, "{body}");
    let big = candidates(600);
    assert!(big.len() > 50_000 && big.len() < 64 * 1024, "{}", big.len());
    let started = Instant::now();
    let (status, body) = patch(&location, &big);
    println!(
        "PATCH of {} bytes, 600 candidates: {status} in {:?} ({})",
        big.len(),
        started.elapsed(),
        body.trim()
    );
    assert_eq!(
        status, 413,
        "a 60 KiB fragment is refused at its size: {body}"
    );

    let (status, body) = patch(&location, &candidates(33));
    assert_eq!(status, 400, "33 candidates: {body}");
    assert!(body.contains("at most 32"), "{body}");
    let (status, body) = patch(&location, &candidates(32));
    assert_eq!(status, 204, "32 candidates fit: {body}");
    let (status, body) = patch(&location, &candidates(1));
    assert_eq!(status, 400, "the 33rd candidate: {body}");
    println!("33 candidates: 400 ({})", body.trim());

    // PATCHes as fast as one connection sends them, on a fresh session.
    let (status, location, body) = post_viewer_offer(&url);
    assert_eq!(status, 201, "{body}");
    let mut statuses = Vec::new();
    let mut refusal = String::new();
    let flood = Instant::now();
    for _ in 0..40 {
        let (status, body) = patch(&location, "a=end-of-candidates\r\n");
        if status == 429 {
            refusal = body;
        }
        statuses.push(status);
    }
    let flood = flood.elapsed();
    let accepted = statuses.iter().filter(|s| **s == 204).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    println!(
        "40 PATCHes in {flood:?}: {accepted} accepted, {refused} refused ({})",
        refusal.trim()
    );
    assert_eq!(accepted + refused, 40, "{statuses:?}");
    // A burst of 16 and 4 a second.
    let allowed = 16 + (flood.as_secs_f64() * 4.0).ceil() as usize;
    assert!(
        accepted <= allowed,
        "{accepted} accepted > {allowed}: {statuses:?}"
    );
    assert!(refusal.contains("retry in"), "{refusal}");
    assert!(edge.metric("waveguide_patches_refused_total", &["reason=\"rate\""]) >= refused as f64);

    // The shard still serves: a real viewer joins.
    let viewer = RtcViewer::join(&url, None);
    viewer.wait_connected(Duration::from_secs(10));
}

/// Item 6. Before: every NACK was answered in full from the direct path's history, as often as
/// it named a packet: one NACK of 350 pairs made ~6,000 resends.
#[test]
fn a_nack_storm_is_answered_within_the_viewers_budget() {
    let (edge, port) = start_edge("");
    let _ffmpeg = publish(&edge, port, 60);
    let url = edge.url("/whep/demo");
    let attacker = RtcViewer::join(&url, None);
    let others: Vec<RtcViewer> = (0..2).map(|_| RtcViewer::join(&url, None)).collect();
    attacker.wait_connected(Duration::from_secs(10));
    for o in &others {
        o.wait_connected(Duration::from_secs(10));
    }
    assert!(
        others
            .iter()
            .any(|o| o.edge_media_addr() == attacker.edge_media_addr()),
        "one of the others shares the attacker's shard"
    );
    // The direct path proven, the stream's rate measured.
    std::thread::sleep(Duration::from_secs(3));
    let window = Duration::from_secs(4);
    let base: Vec<_> = others.iter().map(RtcViewer::received).collect();
    std::thread::sleep(window);
    let quiet: Vec<_> = others.iter().map(RtcViewer::received).collect();
    let attacker_start = attacker.received();
    let refused_before = edge.metric("waveguide_drops_total", &["cause=\"retransmit_budget\""])
        + edge.metric("waveguide_drops_total", &["cause=\"retransmit_duplicate\""]);

    attacker.storm(Some(NackStorm {
        every: Duration::from_millis(20),
        pairs: 350,
    }));
    std::thread::sleep(window);
    attacker.storm(None);
    let during = attacker.received().since(&attacker_start);
    let loud: Vec<_> = others.iter().map(RtcViewer::received).collect();

    let secs = window.as_secs_f64();
    let stream = during.distinct_bytes as f64 / secs;
    // The shard's budget (a quarter of the stream, half a second of it at once) and `rtc`'s
    // for the few packets that went its way (the floors), with room for SRTP's overhead.
    let direct = (stream * 0.5).max(65_536.0) + (stream / 4.0).max(32_768.0) * secs;
    let through_rtc = 65_536.0 + 32_768.0 * secs;
    let allowed = (direct + through_rtc) * 1.25;
    let refused_after = edge.metric("waveguide_drops_total", &["cause=\"retransmit_budget\""])
        + edge.metric("waveguide_drops_total", &["cause=\"retransmit_duplicate\""]);
    println!(
        "{} NACKs of 350 pairs in {secs} s: {} resends ({} bytes) against a stream of {:.0} \
         bytes/s; allowed {allowed:.0} bytes; {} resends refused by the edge; the edge counts \
         {} NACKs and {} retransmits in all",
        during.nacks_sent,
        during.resends(),
        during.resent_bytes(),
        stream,
        refused_after - refused_before,
        edge.metric("waveguide_nacks_total", &[]),
        edge.metric("waveguide_retransmits_total", &[]),
    );
    let rates: Vec<(u64, u64)> = (0..others.len())
        .map(|i| {
            let before = quiet[i].since(&base[i]).video_distinct;
            let now = loud[i].since(&quiet[i]).video_distinct;
            println!(
                "viewer {i} (shard {}): {before} video packets before, {now} during, {} resends",
                others[i].edge_media_addr(),
                loud[i].resends()
            );
            (before, now)
        })
        .collect();
    assert!(during.nacks_sent >= 50, "the storm ran: {during:?}");
    assert!(
        (during.resent_bytes() as f64) <= allowed,
        "{} resent bytes > {allowed:.0}",
        during.resent_bytes()
    );
    assert!(
        refused_after > refused_before,
        "refused resends are counted"
    );
    for (i, (before, now)) in rates.into_iter().enumerate() {
        assert!(
            now as f64 >= before as f64 * 0.7,
            "viewer {i} lost its rate: {before} → {now}"
        );
        assert_eq!(
            loud[i].resends(),
            0,
            "viewer {i} was sent resends it never asked for"
        );
    }
}

/// Item 7. Before: each never-connected viewer held a viewer slot for 30 s, with no cap per
/// client: one address could fill `max_viewers` and lock everyone else out.
#[test]
fn viewers_that_never_connect_are_capped_per_client_and_dropped() {
    let (edge, port) = start_edge("[node]\nmax_viewers = 36\n");
    let _ffmpeg = publish(&edge, port, 60);
    let url = edge.url("/whep/demo");

    let first = Instant::now();
    let mut statuses = Vec::new();
    let mut refusal = String::new();
    for _ in 0..40 {
        let (status, _, body) = post_viewer_offer(&url);
        if status != 201 && refusal.is_empty() {
            refusal = body;
        }
        statuses.push(status);
    }
    let held = statuses.iter().filter(|s| **s == 201).count();
    println!(
        "40 offers from 127.0.0.1 never connecting: {held} answered; then {}",
        refusal.trim()
    );
    assert_eq!(held, 32, "{statuses:?}");
    assert!(statuses[32..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(refusal.contains("still connecting"), "{refusal}");
    assert_eq!(edge.metric("waveguide_viewers_connecting", &[]), 32.0);

    // Another client joins meanwhile, under max_viewers.
    let other = RtcViewer::join(&url, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    other.wait_connected(Duration::from_secs(10));
    poll_until(
        "video at the other client",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (other.received().video_distinct > 30).then_some(()),
    );

    // The held ones are dropped after 10 s: the first client is answered again.
    let again = poll_until(
        "the held offers dropped",
        Duration::from_secs(16),
        Duration::from_millis(250),
        || (edge.metric("waveguide_viewers_connecting", &[]) == 0.0).then(|| first.elapsed()),
    );
    println!("held offers dropped after {again:?}");
    assert!(
        again >= Duration::from_secs(9),
        "dropped too soon: {again:?}"
    );
    let (status, _, body) = post_viewer_offer(&url);
    assert_eq!(status, 201, "{body}");
    assert!(other.received().video_distinct > 30);
}

/// A binding request to the edge naming `username`, its integrity keyed with `key`.
fn binding_request(username: &str, key: &str) -> Vec<u8> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
    use rtc::stun::textattrs::Username;
    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    let mut msg = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            key.to_owned(),
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ];
    msg.build(&setters).expect("a binding request");
    msg.raw
}

/// Item 8. Before: a check naming a session's ufrag taught the demultiplexer its source
/// address before anyone checked its integrity: every new port grew the table, and could
/// claim a victim's session.
#[test]
fn forged_connectivity_checks_teach_the_demux_nothing() {
    let (edge, port) = start_edge("");
    let _ffmpeg = publish(&edge, port, 60);
    let viewer = RtcViewer::join(&edge.url("/whep/demo"), None);
    viewer.wait_connected(Duration::from_secs(10));
    poll_until(
        "video at the viewer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (viewer.received().video_distinct > 30).then_some(()),
    );
    let table = || {
        let text = http_client()
            .get(edge.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        assert!(
            text.contains("waveguide_demux_addresses"),
            "the demultiplexer's size is a metric"
        );
        waveguide_tests::edge::metric_in(&text, "waveguide_demux_addresses", &[]).unwrap_or(0.0)
    };
    // Gauges are set once per shard load window (500 ms).
    std::thread::sleep(Duration::from_secs(1));
    let before = table();
    assert!(before >= 1.0, "the viewer's address is learned: {before}");

    let username = format!(
        "{}:{}",
        RtcViewer::ufrag(&viewer.answer),
        RtcViewer::ufrag(&viewer.offer)
    );
    let target = viewer.edge_media_addr();
    let forged_before = edge.metric("waveguide_drops_total", &["cause=\"stun_integrity\""]);
    let start = viewer.received();
    let started = Instant::now();
    let sockets: Vec<UdpSocket> = (0..300)
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s.send_to(
                &binding_request(&username, "not-the-session-password"),
                target,
            )
            .expect("send");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = started.elapsed().as_secs_f64();
    let after = table();
    let forged =
        edge.metric("waveguide_drops_total", &["cause=\"stun_integrity\""]) - forged_before;
    let got = viewer.received().since(&start);
    let mut stolen = 0;
    let mut buf = [0u8; 2048];
    for s in &sockets {
        while s.recv_from(&mut buf).is_ok() {
            stolen += 1;
        }
    }
    println!(
        "300 forged checks for {username}: table {before} → {after} addresses, {forged} dropped \
         as forged; the viewer got {} video packets in {elapsed:.1} s, the forgers {stolen} \
         datagrams",
        got.video_distinct
    );
    assert!(after <= before, "the table grew: {before} → {after}");
    assert!(forged >= 300.0, "forged checks are counted: {forged}");
    assert_eq!(stolen, 0, "nothing went to the forgers");
    assert!(
        got.video_distinct as f64 >= 30.0 * elapsed,
        "the viewer's media kept coming: {got:?}"
    );
}
