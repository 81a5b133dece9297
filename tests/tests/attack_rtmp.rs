//! Attacks on RTMP ingest before authentication, against the release binary over loopback
//! only, each bounded in time:
//!
//! - a slowloris (one byte every 2 s, never finishing the handshake) is closed by the publish
//!   deadline, 10 s after it connected, although no single read waits long;
//! - connections past the per-address cap (8) are closed at accept while another address still
//!   connects and ffmpeg publishes from it;
//! - a command message of 8 MiB of AMF0 `null`s before `publish` (once ~450 MB decoded) is
//!   refused at its header, and the edge's peak memory (`VmHWM`) barely moves while ffmpeg
//!   keeps publishing.
//!
//! All of 127.0.0.0/8 is loopback on Linux, so 127.0.0.2 … are "other hosts".

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use waveguide_tests::edge::static_config;
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::{EdgeProcess, poll_until, ports};

/// The edge with stream `demo` (key `demo-key`) and its RTMP server on a free port.
fn start_edge() -> (EdgeProcess, u16) {
    let port = ports::free_port();
    let mut config = static_config(&[("demo", "demo-key")], 15);
    config.push_str(&format!("\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n"));
    (EdgeProcess::start(&config), port)
}

fn publish(port: u16, seconds: u32) -> Ffmpeg {
    Ffmpeg::publish(
        &format!("rtmp://127.0.0.1:{port}/live/demo-key"),
        seconds,
        &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0"],
        &["-c:a", "aac"],
    )
}

/// Waits until `demo` is live over RTMP with both tracks.
fn wait_live(edge: &EdgeProcess, ffmpeg: &mut Ffmpeg) {
    poll_until(
        "demo live over RTMP",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if let Ok(Some(status)) = ffmpeg.child.try_wait() {
                panic!("ffmpeg exited early with {status}:\n{}", ffmpeg.output());
            }
            edge.stream_info("demo").filter(|s| {
                s["protocol"] == "rtmp"
                    && s["state"] == "live"
                    && s["tracks"].as_array().is_some_and(|t| t.len() == 2)
            })
        },
    );
}

/// Video packets `demo` has received so far.
fn video_packets(edge: &EdgeProcess) -> u64 {
    edge.stream_info("demo")
        .and_then(|s| {
            s["tracks"]
                .as_array()?
                .iter()
                .find(|t| t["kind"] == "video")?["packets"]
                .as_u64()
        })
        .unwrap_or(0)
}

/// A TCP connection to `port` on 127.0.0.1 from `from` (another loopback address).
fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("TCP socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    socket.into()
}

/// A valid C0+C1, S0S1S2 read, C2: the connection is past the handshake. `false` if the edge
/// closed it instead.
fn handshake(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    if s.write_all(&c0c1).is_err() {
        return false;
    }
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    if s.read_exact(&mut s0s1s2).is_err() {
        return false;
    }
    s.write_all(&[0u8; 1536]).is_ok()
}

/// Whether the edge closes `s` (EOF or reset) within `within`; sends `trickle` one byte every
/// `every` meanwhile.
fn closed_within(s: &mut TcpStream, within: Duration, trickle: &[u8], every: Duration) -> bool {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut next = 0;
    let mut last_sent = Instant::now();
    let mut buf = [0u8; 8192];
    while start.elapsed() < within {
        if next < trickle.len() && last_sent.elapsed() >= every {
            if s.write_all(&trickle[next..=next]).is_err() {
                return true;
            }
            next += 1;
            last_sent = Instant::now();
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn rtmp_slowloris_is_closed_by_the_publish_deadline() {
    let (mut edge, port) = start_edge();
    let mut slow = connect_from(Ipv4Addr::LOCALHOST, port);
    let connected = Instant::now();
    // C0 then C1 one byte every 2 s: each read is well inside any per-read timeout.
    let mut bytes = vec![3u8];
    bytes.extend_from_slice(&[0u8; 100]);
    assert!(
        closed_within(
            &mut slow,
            Duration::from_secs(16),
            &bytes,
            Duration::from_secs(2)
        ),
        "a connection trickling one byte every 2 s is still open after 16 s"
    );
    let took = connected.elapsed();
    eprintln!("slowloris closed after {took:?}");
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_secs(13),
        "closed at the 10 s publish deadline, not {took:?}"
    );
    // A client that finishes the handshake but never publishes gets the same deadline.
    let mut idle = connect_from(Ipv4Addr::LOCALHOST, port);
    let connected = Instant::now();
    assert!(handshake(&mut idle), "handshake");
    assert!(
        closed_within(&mut idle, Duration::from_secs(14), &[], Duration::ZERO),
        "a connection that never publishes is still open after 14 s"
    );
    assert!(connected.elapsed() >= Duration::from_secs(9));
    let log = edge.log_tail(50);
    assert!(
        log.contains("no accepted publish within 10s"),
        "the reason is logged:\n{log}"
    );
    edge.assert_alive();
}

#[test]
fn rtmp_connections_past_the_per_address_cap_are_refused_others_publish() {
    let (mut edge, port) = start_edge();
    let crowd = Ipv4Addr::new(127, 0, 0, 2);
    // Eight connections from one address (the default cap), each past its handshake.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = connect_from(crowd, port);
            assert!(handshake(&mut s), "connection {i} within the cap");
            s
        })
        .collect();
    // A ninth from that address is closed at accept: no S0S1S2.
    let mut ninth = connect_from(crowd, port);
    assert!(
        !handshake(&mut ninth),
        "a ninth connection got its handshake"
    );
    let refused = edge.metric(
        "waveguide_ingest_refused_total",
        &["protocol=\"rtmp\"", "cause=\"max_connections_per_ip\""],
    );
    assert!(refused >= 1.0, "refusal counted: {refused}");
    // Another address connects, and ffmpeg (from 127.0.0.1) publishes, meanwhile.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 3), port);
    assert!(handshake(&mut other), "another address is served");
    let mut ffmpeg = publish(port, 8);
    wait_live(&edge, &mut ffmpeg);
    // Closing one of the eight frees its slot.
    drop(held.pop());
    let mut again = poll_until(
        "a slot freed by a closed connection",
        Duration::from_secs(3),
        Duration::from_millis(100),
        || {
            let mut s = connect_from(crowd, port);
            handshake(&mut s).then_some(s)
        },
    );
    assert!(handshake_done_and_open(&mut again));
    edge.assert_alive();
}

/// Whether `s` is still open (no EOF within 100 ms).
fn handshake_done_and_open(s: &mut TcpStream) -> bool {
    !closed_within(s, Duration::from_millis(100), &[], Duration::ZERO)
}

/// The edge's `VmHWM` (peak resident memory) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// A command message (type 20) on chunk stream 3 announcing `len` bytes of AMF0 `null`, in
/// chunks of `chunk` bytes (after a `Set Chunk Size` to it).
fn null_command(len: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + len / chunk + 64);
    // Set Chunk Size on chunk stream 2.
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0]);
    out.extend_from_slice(&(chunk as u32).to_be_bytes());
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[0x03, 0, 0, 0, l[1], l[2], l[3], 0x14, 0, 0, 0, 0]);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk);
        out.resize(out.len() + n, 0x05);
        left -= n;
        if left > 0 {
            out.push(0xc3);
        }
    }
    out
}

#[test]
fn rtmp_huge_amf_command_before_publish_is_refused_without_memory_growth() {
    let (mut edge, port) = start_edge();
    let mut ffmpeg = publish(port, 20);
    wait_live(&edge, &mut ffmpeg);
    // Let the publisher's own memory settle (encoder buffers, the GOP cache) first.
    std::thread::sleep(Duration::from_secs(2));
    let before = peak_rss_kib(edge.pid());
    let packets_before = video_packets(&edge);

    // Four clients at once, each sending an 8 MiB command of `null`s (the old message limit)
    // right after the handshake, before any `connect` or `publish`.
    let attack = null_command(8 << 20, 65_536);
    let clients: Vec<_> = (0..4u8)
        .map(|i| {
            let attack = attack.clone();
            std::thread::spawn(move || {
                let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 10 + i), port);
                assert!(handshake(&mut s), "handshake of attacker {i}");
                let started = Instant::now();
                let _ = s.write_all(&attack);
                let closed = closed_within(&mut s, Duration::from_secs(15), &[], Duration::ZERO);
                (closed, started.elapsed())
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let (closed, took) = c.join().expect("attacker thread");
        eprintln!("attacker {i}: closed {closed} after {took:?}");
        assert!(closed, "attacker {i}'s connection is closed");
    }
    let after = peak_rss_kib(edge.pid());
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("edge peak RSS {before} KiB -> {after} KiB (+{growth_mib} MiB)");
    assert!(
        growth_mib < 48,
        "4 x 8 MiB AMF commands grew the edge's peak memory by {growth_mib} MiB"
    );
    // The publisher never noticed.
    std::thread::sleep(Duration::from_secs(1));
    let packets_after = video_packets(&edge);
    assert!(
        packets_after > packets_before + 30,
        "publisher's video kept flowing: {packets_before} -> {packets_after}"
    );
    assert!(
        ffmpeg.child.try_wait().ok().flatten().is_none(),
        "ffmpeg still publishing:\n{}",
        ffmpeg.output()
    );
    let log = edge.log_tail(80);
    assert!(
        log.matches("exceeds the limit of 65536").count() >= 4,
        "each attacker refused at the 64 KiB pre-publish limit:\n{log}"
    );
    edge.assert_alive();
}
