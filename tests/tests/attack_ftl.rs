//! Attacks on FTL ingest, against the release binary over loopback only, each bounded in time:
//!
//! - media injected from another address with a live stream's SSRCs never reaches the stream
//!   (and is counted as `waveguide_drops_total{cause="ftl_foreign_source"}`);
//! - a publisher with a valid key of its own cannot declare another stream's SSRCs (`404`),
//!   and its going away leaves the other stream's media flowing;
//! - idle or trickling control connections are closed at the connect deadline, and connections
//!   past the per-address cap are closed at accept while another address is served.
//!
//! The client is raw sockets speaking `ftl_app`'s protocol: HMAC challenge, `CONNECT` with the
//! HMAC-SHA512 of the key, attributes, `.`, then RTP over UDP from the control connection's
//! host. All of 127.0.0.0/8 is loopback on Linux, so 127.0.0.2 … are "other hosts".

use hmac::{Hmac, Mac};
use sha2::Sha512;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use waveguide_tests::{EdgeProcess, poll_until, ports};

const VICTIM_CHANNEL: u32 = 1234;
const OTHER_CHANNEL: u32 = 5678;
const VIDEO_SSRC: u32 = 1234;
const AUDIO_SSRC: u32 = 1235;

struct FtlEdge {
    edge: EdgeProcess,
    control_port: u16,
    media_port: u16,
}

/// Streams `demo` (channel 1234) and `other` (channel 5678), each with its own key.
fn start_edge() -> FtlEdge {
    let control_port = ports::free_port();
    let media_port = ports::free_port();
    let config = format!(
        "[service]\nkind = \"static\"\n\
         [[service.streams]]\nname = \"demo\"\nkey = \"demo-key\"\nftl_channel = {VICTIM_CHANNEL}\n\
         [[service.streams]]\nname = \"other\"\nkey = \"other-key\"\nftl_channel = {OTHER_CHANNEL}\n\
         [ftl]\nlisten = \"127.0.0.1:{control_port}\"\nmedia_port = {media_port}\n"
    );
    FtlEdge {
        edge: EdgeProcess::start(&config),
        control_port,
        media_port,
    }
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
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

/// One FTL control connection, up to its `200 hi` or refusal.
struct Control {
    reader: BufReader<TcpStream>,
}

impl Control {
    fn new(stream: TcpStream) -> Self {
        Self {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send `{line}`: {e}"));
    }

    /// The next reply line, without its newline ("" at EOF).
    fn reply(&mut self) -> String {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line.trim_end().to_owned()
    }

    /// HMAC, CONNECT with `key`, attributes declaring H.264 `video_ssrc` and Opus
    /// `audio_ssrc`, `.`. Returns the reply to `.` (`200 hi. Use UDP port N` when accepted).
    fn publish(&mut self, channel: u32, key: &str, video_ssrc: u32, audio_ssrc: u32) -> String {
        self.send("HMAC");
        let challenge = self.reply();
        let challenge = challenge
            .strip_prefix("200 ")
            .unwrap_or_else(|| panic!("HMAC reply `{challenge}`"));
        let challenge = hex::decode(challenge).expect("hex challenge");
        let mut mac = Hmac::<Sha512>::new_from_slice(key.as_bytes()).expect("HMAC key");
        mac.update(&challenge);
        let hmac = hex::encode(mac.finalize().into_bytes());
        self.send(&format!("CONNECT {channel} ${hmac}"));
        let connected = self.reply();
        assert_eq!(connected, "200", "CONNECT with the right key");
        for attribute in [
            "ProtocolVersion: 0.9".to_owned(),
            "VendorName: waveguide-attack-test".to_owned(),
            "Video: true".to_owned(),
            "VideoCodec: H264".to_owned(),
            "VideoHeight: 360".to_owned(),
            "VideoWidth: 640".to_owned(),
            "VideoPayloadType: 96".to_owned(),
            format!("VideoIngestSSRC: {video_ssrc}"),
            "Audio: true".to_owned(),
            "AudioCodec: OPUS".to_owned(),
            "AudioPayloadType: 97".to_owned(),
            format!("AudioIngestSSRC: {audio_ssrc}"),
        ] {
            self.send(&attribute);
        }
        self.send(".");
        self.reply()
    }
}

/// An RTP packet: H.264 (PT 96) non-IDR slice bytes, or Opus (PT 97).
fn rtp(ssrc: u32, payload_type: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, payload_type];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x41, 0x9a, 0x02, 0x03, 0x04, 0x05]);
    p
}

/// A UDP socket on `from`, aimed at the edge's media port.
fn media_socket(from: Ipv4Addr, media_port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("bind UDP {from}: {e}"));
    socket
        .connect((Ipv4Addr::LOCALHOST, media_port))
        .expect("connect UDP");
    socket
}

/// Sends `count` video packets with `ssrc` from `socket`, numbered from `first`, paced so the
/// edge's queues never drop any.
fn send_video(socket: &UdpSocket, ssrc: u32, first: u16, count: u16) {
    for i in 0..count {
        socket
            .send(&rtp(ssrc, 96, first.wrapping_add(i)))
            .expect("send RTP");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The video packet count of `stream` once it has stopped changing (the edge counts
/// asynchronously).
fn settled_video_packets(edge: &EdgeProcess, stream: &str) -> u64 {
    let read = || {
        edge.stream_info(stream).and_then(|s| {
            s["tracks"]
                .as_array()?
                .iter()
                .find(|t| t["kind"] == "video")?["packets"]
                .as_u64()
        })
    };
    let mut last = read().unwrap_or_else(|| panic!("stream {stream} is not live"));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(150));
        let now = read().unwrap_or_else(|| panic!("stream {stream} ended"));
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn foreign_drops(edge: &EdgeProcess) -> f64 {
    edge.metric("waveguide_drops_total", &["cause=\"ftl_foreign_source\""])
}

fn wait_live(edge: &EdgeProcess, stream: &str) {
    poll_until(
        &format!("{stream} live over FTL"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || edge.stream_info(stream).filter(|s| s["protocol"] == "ftl"),
    );
}

#[test]
fn ftl_media_from_another_address_never_reaches_the_stream() {
    let FtlEdge {
        mut edge,
        control_port,
        media_port,
    } = start_edge();
    let mut publisher = Control::new(connect_from(Ipv4Addr::LOCALHOST, control_port));
    let hi = publisher.publish(VICTIM_CHANNEL, "demo-key", VIDEO_SSRC, AUDIO_SSRC);
    assert_eq!(hi, format!("200 hi. Use UDP port {media_port}"));
    wait_live(&edge, "demo");

    let legit = media_socket(Ipv4Addr::LOCALHOST, media_port);
    send_video(&legit, VIDEO_SSRC, 0, 100);
    let before = settled_video_packets(&edge, "demo");
    assert_eq!(before, 100, "the publisher's own packets all arrive");

    // Another host sends 300 packets with the stream's video SSRC; so does another socket on
    // the publisher's host (media is bound to the publisher's first source port).
    let attacker = media_socket(Ipv4Addr::new(127, 0, 0, 2), media_port);
    send_video(&attacker, VIDEO_SSRC, 100, 300);
    let same_host = media_socket(Ipv4Addr::LOCALHOST, media_port);
    send_video(&same_host, VIDEO_SSRC, 400, 50);
    let after = settled_video_packets(&edge, "demo");
    assert_eq!(
        after,
        before,
        "{} injected packets reached the stream",
        after - before
    );
    let drops = foreign_drops(&edge);
    assert!(drops >= 350.0, "foreign datagrams counted: {drops}");

    // The publisher is unaffected.
    send_video(&legit, VIDEO_SSRC, 1000, 50);
    assert_eq!(settled_video_packets(&edge, "demo"), before + 50);
    edge.assert_alive();
}

#[test]
fn ftl_publisher_with_a_valid_key_cannot_take_another_streams_ssrcs() {
    let FtlEdge {
        mut edge,
        control_port,
        media_port,
    } = start_edge();
    let mut victim = Control::new(connect_from(Ipv4Addr::LOCALHOST, control_port));
    let hi = victim.publish(VICTIM_CHANNEL, "demo-key", VIDEO_SSRC, AUDIO_SSRC);
    assert!(hi.starts_with("200 hi"), "victim: {hi}");
    wait_live(&edge, "demo");
    let legit = media_socket(Ipv4Addr::LOCALHOST, media_port);
    send_video(&legit, VIDEO_SSRC, 0, 50);
    assert_eq!(settled_video_packets(&edge, "demo"), 50);

    // A publisher of another stream, with that stream's valid key, from the victim's own
    // host, declares the victim's video SSRC: refused with FTL's video SSRC collision code,
    // and its connection closed.
    let mut thief = Control::new(connect_from(Ipv4Addr::LOCALHOST, control_port));
    let refused = thief.publish(OTHER_CHANNEL, "other-key", VIDEO_SSRC, 9999);
    assert_eq!(refused, "404", "a taken video SSRC is refused");
    assert_eq!(thief.reply(), "", "then the connection closes");
    drop(thief);
    // The same with the audio SSRC (403), from another host.
    let mut thief = Control::new(connect_from(Ipv4Addr::new(127, 0, 0, 5), control_port));
    let refused = thief.publish(OTHER_CHANNEL, "other-key", 7777, AUDIO_SSRC);
    assert_eq!(refused, "403", "a taken audio SSRC is refused");
    drop(thief);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        edge.stream_info("other").is_none(),
        "the refused publisher started no stream"
    );

    // The victim's media still reaches its stream.
    send_video(&legit, VIDEO_SSRC, 50, 50);
    assert_eq!(
        settled_video_packets(&edge, "demo"),
        100,
        "the victim's media after the refused takeover"
    );
    // And the victim still answers pings on its control connection.
    victim.send(&format!("PING {VICTIM_CHANNEL}"));
    assert_eq!(victim.reply(), "201");
    edge.assert_alive();
}

/// Whether the edge closes `s` (EOF or reset) within `within`; sends `trickle` bytes one at a
/// time every `every` meanwhile (a slowloris keeps each read short of any per-read timeout).
fn closed_within(s: &mut TcpStream, within: Duration, trickle: &[u8], every: Duration) -> bool {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut next_byte = 0;
    let mut last_sent = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < within {
        if next_byte < trickle.len() && last_sent.elapsed() >= every {
            if s.write_all(&trickle[next_byte..=next_byte]).is_err() {
                return true;
            }
            next_byte += 1;
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
fn ftl_control_deadline_and_per_address_cap() {
    let FtlEdge {
        mut edge,
        control_port,
        ..
    } = start_edge();
    let crowd = Ipv4Addr::new(127, 0, 0, 3);
    let opened = Instant::now();
    // The default cap is 8 per address: 8 idle connections are accepted ...
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect_from(crowd, control_port)).collect();
    // ... (the last of them answers HMAC) ...
    let mut last = Control::new(idle.pop().expect("eight"));
    last.send("HMAC");
    assert!(
        last.reply().starts_with("200 "),
        "an admitted connection is served"
    );
    idle.push(last.reader.into_inner());
    // ... a ninth from the same address is closed at once ...
    let mut ninth = connect_from(crowd, control_port);
    let _ = ninth.write_all(b"HMAC\r\n\r\n");
    assert!(
        closed_within(&mut ninth, Duration::from_secs(2), &[], Duration::ZERO),
        "a ninth connection from one address is closed at accept"
    );
    // ... while another address is served.
    let mut neighbour = Control::new(connect_from(Ipv4Addr::new(127, 0, 0, 4), control_port));
    neighbour.send("HMAC");
    assert!(
        neighbour.reply().starts_with("200 "),
        "another address is served"
    );
    let refused = edge.metric(
        "waveguide_ingest_refused_total",
        &["protocol=\"ftl\"", "cause=\"max_connections_per_ip\""],
    );
    assert!(refused >= 1.0, "refusal counted: {refused}");

    // A slowloris: a valid start, then one byte every 2 s. The whole exchange has 10 s.
    let mut slow = connect_from(Ipv4Addr::new(127, 0, 0, 6), control_port);
    slow.write_all(b"HMAC\r\n\r\n").expect("HMAC");
    let slow_start = Instant::now();
    let trickle = format!("CONNECT {VICTIM_CHANNEL} $00112233445566778899");
    assert!(
        closed_within(
            &mut slow,
            Duration::from_secs(14),
            trickle.as_bytes(),
            Duration::from_secs(2)
        ),
        "a trickling control connection is closed by the connect deadline"
    );
    let took = slow_start.elapsed();
    eprintln!("trickling connection closed after {took:?}");
    assert!(
        took >= Duration::from_secs(8),
        "not before the deadline: {took:?}"
    );

    // The idle ones were closed by their deadline too (10 s after they connected).
    let wait = Duration::from_secs(13).saturating_sub(opened.elapsed());
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, wait.max(Duration::from_millis(500)), &[], Duration::ZERO),
            "idle connection {i} still open {:?} after connecting",
            opened.elapsed()
        );
    }
    // Their slots are free again.
    let mut again = Control::new(connect_from(crowd, control_port));
    again.send("HMAC");
    assert!(again.reply().starts_with("200 "), "slots freed after close");
    edge.assert_alive();
}
