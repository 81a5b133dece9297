//! RTMP ingest end to end: Debian's ffmpeg publishes `testsrc2` + `sine` as H.264 + AAC over
//! RTMP, headless Chromium watches over WHEP and must decode the picture at its full frame rate
//! and hear the (Opus-transcoded) audio. Plus the refusals: a wrong key fails ffmpeg fast, and
//! garbage on the RTMP port closes only that connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};
use waveguide_tests::browser::PcStats;
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::{Browser, EdgeProcess, PageId, poll_until, ports};

const CONNECT: Duration = Duration::from_secs(15);

/// The edge with stream `demo` (key `demo-key`) and its RTMP server on a free port.
fn start_edge() -> (EdgeProcess, u16) {
    let port = ports::free_port();
    let mut config = static_config(&[("demo", "demo-key")], 15);
    config.push_str(&format!("\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n"));
    (EdgeProcess::start(&config), port)
}

fn rtmp_url(port: u16, key: &str) -> String {
    format!("rtmp://127.0.0.1:{port}/live/{key}")
}

/// Waits until `demo` is live over RTMP with an audio and a video track; returns its REST JSON.
fn wait_live(edge: &EdgeProcess, ffmpeg: &mut Ffmpeg) -> serde_json::Value {
    poll_until(
        "demo live over RTMP with two tracks",
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
    )
}

fn track_codec(info: &serde_json::Value, kind: &str) -> String {
    info["tracks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == kind))
        .and_then(|t| t["codec"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn video_at(s: &PcStats, w: u32, h: u32) -> bool {
    s.video
        .as_ref()
        .is_some_and(|v| v.frames_decoded > 0 && v.frame_width == w && v.frame_height == h)
}

/// Opens one WHEP viewer of `demo` in a fresh page; returns the page, the peer id and when the
/// WHEP request was made.
fn watch(browser: &mut Browser, edge: &EdgeProcess) -> (PageId, u64, Instant) {
    let page = browser.open_page();
    let asked = Instant::now();
    let viewer = browser.watch(page, &edge.url("/whep/demo"), 1).remove(0);
    assert_eq!(viewer.status, 201, "WHEP: {viewer:?}");
    browser.wait_connected(page, &[viewer.id], CONNECT);
    (page, viewer.id, asked)
}

/// Decoded frames per second over `window`, measured from the viewer's own counters after a
/// two-second settle (a joining viewer first gets the cached GOP in a burst).
fn measure_fps(browser: &mut Browser, page: PageId, id: u64, window: Duration) -> f64 {
    std::thread::sleep(Duration::from_secs(2));
    let start = browser.stats_of(page, id);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let end = browser.stats_of(page, id);
    let frames = end.frames_decoded() - start.frames_decoded();
    frames as f64 / t0.elapsed().as_secs_f64()
}

/// x264 with two B-frames and a 2 s GOP, AAC 44.1 kHz mono. Browsers cannot decode B-frames
/// over WebRTC (see `inputs/src/rtmp/video.rs`), so the edge drops them: the picture must keep
/// coming at the I/P rate (a third of 30 fps) instead of stalling, and the operator is told.
#[test]
fn rtmp_h264_with_b_frames_and_aac_play_in_chromium() {
    let (edge, port) = start_edge();
    let mut ffmpeg = Ffmpeg::publish(
        &rtmp_url(port, "demo-key"),
        40,
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "60",
        ],
        &["-c:a", "aac"],
    );
    let info = wait_live(&edge, &mut ffmpeg);
    assert_eq!(track_codec(&info, "video"), "H264", "{info}");
    assert_eq!(track_codec(&info, "audio"), "Opus", "{info}");

    let mut browser = Browser::launch();
    let (page, id, asked) = watch(&mut browser, &edge);
    let first = browser.wait_stats(page, id, "decoded 640x480 video", CONNECT, |s| {
        video_at(s, 640, 480)
    });
    let join = asked.elapsed();
    let codec = first.video.as_ref().and_then(|v| v.codec.clone());
    assert_eq!(codec.as_deref(), Some("video/H264"));

    let fps = measure_fps(&mut browser, page, id, Duration::from_secs(6));
    let s = browser.wait_stats(page, id, "audio energy", CONNECT, |s| {
        s.audio_energy() > 0.0
    });
    let audio = s.audio.clone().unwrap_or_default();
    assert_eq!(audio.codec.as_deref(), Some("audio/opus"));
    let video = s.video.clone().unwrap_or_default();
    eprintln!(
        "RTMP B-frames: join {join:?}, {fps:.1} fps decoded, {} frames decoded, {} dropped, \
         {} freezes, audio energy {:.3}, {} audio packets",
        video.frames_decoded,
        video.frames_dropped,
        video.freeze_count,
        audio.total_audio_energy,
        audio.packets_received
    );
    assert!(
        (8.0..=16.0).contains(&fps),
        "B-frame stream decoded at {fps:.1} fps; the I/P frames of a 30 fps bframes=2 stream \
         are 10 fps"
    );
    assert!(
        video.freeze_count <= 1,
        "{} freezes: the picture must not stall",
        video.freeze_count
    );
    assert!(
        edge.log_tail(200).contains("bframes=0"),
        "the operator is told how to get full frame rate"
    );
    let status = edge.stream_info("demo").expect("stream status");
    let notices = status["notices"].to_string();
    assert!(
        notices.contains("B-frames"),
        "the REST status names the B-frames: {status}"
    );
    let mut edge = edge;
    edge.assert_alive();
}

/// No B-frames, a 4 s GOP, AAC 48 kHz stereo: full frame rate, and a viewer joining mid-GOP
/// gets its first picture from the keyframe cache, not from the publisher's next keyframe.
#[test]
fn rtmp_viewer_joining_mid_gop_decodes_at_once() {
    let (edge, port) = start_edge();
    let mut browser = Browser::launch();
    let mut ffmpeg = Ffmpeg::publish(
        &rtmp_url(port, "demo-key"),
        40,
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "120",
        ],
        &["-c:a", "aac", "-ar", "48000", "-ac", "2"],
    );
    wait_live(&edge, &mut ffmpeg);
    // The stream went live on its first keyframe: join 2.5 s into that 4 s GOP.
    std::thread::sleep(Duration::from_millis(2500));
    let (page, id, asked) = watch(&mut browser, &edge);
    browser.wait_stats(page, id, "decoded 640x480 video", CONNECT, |s| {
        video_at(s, 640, 480)
    });
    let join = asked.elapsed();
    let fps = measure_fps(&mut browser, page, id, Duration::from_secs(4));
    browser.wait_stats(page, id, "audio energy", CONNECT, |s| {
        s.audio_energy() > 0.0
    });
    eprintln!("RTMP 4 s GOP: first frame {join:?} after the WHEP request, {fps:.1} fps");
    assert!(
        join < Duration::from_millis(2500),
        "first frame after {join:?}; a 4 s GOP must not be waited out"
    );
    assert!(fps >= 25.0, "decoded at {fps:.1} fps");
}

#[test]
fn rtmp_wrong_key_fails_ffmpeg_fast() {
    let (edge, port) = start_edge();
    let started = Instant::now();
    let mut ffmpeg = Ffmpeg::publish(
        &rtmp_url(port, "not-the-key"),
        10,
        &["-c:v", "libx264", "-preset", "ultrafast"],
        &["-c:a", "aac"],
    );
    let status = ffmpeg
        .wait(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("ffmpeg still running after 5 s with a wrong key"));
    assert!(!status.success(), "ffmpeg succeeded with a wrong key");
    eprintln!("wrong key refused after {:?}", started.elapsed());
    let output = ffmpeg.output();
    assert!(
        output.contains("invalid stream key"),
        "ffmpeg said: {output}"
    );
    assert!(edge.stream_info("demo").is_none(), "no stream was created");
}

fn rtmp_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RTMP port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s
}

/// Whether the server closes `s` (EOF or reset) within the read timeout.
fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

/// A valid C0+C1+C2 (the server's S0S1S2 is read and discarded).
fn handshake(s: &mut TcpStream) {
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    s.write_all(&c0c1).expect("write C0C1");
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).expect("read S0S1S2");
    s.write_all(&[0u8; 1536]).expect("write C2");
}

#[test]
fn rtmp_garbage_closes_only_that_connection() {
    let (edge, port) = start_edge();
    // A slow client that never finishes its handshake stays open meanwhile.
    let mut stalled = rtmp_connect(port);
    stalled.write_all(&[3, 0, 0, 0]).expect("partial handshake");

    // Random bytes.
    let mut s = rtmp_connect(port);
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let _ = s.write_all(&noise);
    assert!(closed_by_server(s), "random bytes: connection not closed");

    // An HTTP request.
    let mut s = rtmp_connect(port);
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_by_server(s), "HTTP: connection not closed");

    // A valid handshake, then a chunk announcing a 16 MiB message.
    let mut s = rtmp_connect(port);
    handshake(&mut s);
    let _ = s.write_all(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 1, 0, 0, 0]);
    assert!(
        closed_by_server(s),
        "oversized message: connection not closed"
    );

    // A valid handshake, then a type-3 chunk on a chunk stream never opened.
    let mut s = rtmp_connect(port);
    handshake(&mut s);
    let _ = s.write_all(&[0xc5, 1, 2, 3]);
    assert!(closed_by_server(s), "orphan chunk: connection not closed");
    let _ = stalled.shutdown(Shutdown::Both);

    // The edge still serves HTTP and takes a real publisher.
    let health = http_client()
        .get(edge.url("/healthz"))
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let mut ffmpeg = Ffmpeg::publish(
        &rtmp_url(port, "demo-key"),
        6,
        &["-c:v", "libx264", "-preset", "ultrafast"],
        &["-c:a", "aac"],
    );
    wait_live(&edge, &mut ffmpeg);
    let log = edge.log_tail(200);
    assert!(
        log.matches("RTMP connection closed").count() >= 4,
        "one log line per bad connection:\n{log}"
    );
    let mut edge = edge;
    edge.assert_alive();
}

/// Audio only (a radio-style stream): the viewer's offer still has a video section, which the
/// edge must answer inactive rather than reject, or Chromium never connects the bundle. The
/// AAC → Opus transcode runs only while someone watches, and starts when the viewer arrives.
#[test]
fn rtmp_audio_only_plays_and_transcodes_only_while_watched() {
    let (edge, port) = start_edge();
    // Its own command: `-re` must pace the audio input itself when there is no video.
    let url = rtmp_url(port, "demo-key");
    let mut ffmpeg = Ffmpeg::spawn(&[
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        "40",
        "-c:a",
        "aac",
        "-f",
        "flv",
        &url,
    ]);
    let info = poll_until(
        "audio-only demo live over RTMP",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if let Ok(Some(status)) = ffmpeg.child.try_wait() {
                panic!("ffmpeg exited early with {status}:\n{}", ffmpeg.output());
            }
            edge.stream_info("demo").filter(|s| s["state"] == "live")
        },
    );
    assert_eq!(track_codec(&info, "audio"), "Opus", "{info}");
    std::thread::sleep(Duration::from_secs(2));
    let unwatched = edge.stream_info("demo").expect("stream");
    let packets = |s: &serde_json::Value| {
        s["tracks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["kind"] == "audio"))
            .and_then(|t| t["packets"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(
        packets(&unwatched),
        0,
        "no Opus made while nobody watches: {unwatched}"
    );

    let mut browser = Browser::launch();
    let (page, id, _) = watch(&mut browser, &edge);
    let s = browser.wait_stats(page, id, "audio energy", CONNECT, |s| {
        s.audio_energy() > 0.0
    });
    assert_eq!(
        s.audio.clone().unwrap_or_default().codec.as_deref(),
        Some("audio/opus")
    );
    let watched = edge.stream_info("demo").expect("stream");
    assert!(packets(&watched) > 0, "Opus made once watched: {watched}");
    let mut edge = edge;
    edge.assert_alive();
}
