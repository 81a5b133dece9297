//! LL-HLS end to end: Debian's ffmpeg publishes `testsrc2` + `sine` as H.264 with B-frames
//! (`-bf 2`, which WebRTC viewers get without) + AAC over RTMP; the edge muxes the stream (H.264
//! as sent, B-frames included, and the AAC as sent) into CMAF parts and segments once a client
//! asks for `/hls/{stream}/index.m3u8`.
//!
//! - `hls_objects_and_blocking_reload`: the playlists, init segment, parts and segments over
//!   plain HTTP: LL-HLS tags, a blocking reload that returns only once the asked-for segment
//!   exists, CORS and cache headers, and ffprobe reading what was served (every picture, in
//!   the right order, and the AAC track).
//! - `chromium_plays_ll_hls_with_audio`: the edge's own player with `?hls=1` (hls.js, served
//!   by the edge) plays the B-frame stream at ≥ 25 fps with audio; the latency behind the
//!   edge's arrival time (wall clock − `PROGRAM-DATE-TIME` of the playing frame) is reported.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::ffmpeg::Ffmpeg;
use waveguide_tests::{Browser, EdgeProcess, poll_until, ports};

/// The edge with stream `demo` (key `demo-key`) and its RTMP server on a free port.
fn start_edge() -> (EdgeProcess, u16) {
    let port = ports::free_port();
    let mut config = static_config(&[("demo", "demo-key")], 15);
    config.push_str(&format!("\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n"));
    (EdgeProcess::start(&config), port)
}

/// ffmpeg publishing 640x480@30 H.264 (keyframe every 2 s, two B-frames, one reference as
/// OBS's x264 default) + AAC at `rate` Hz for `seconds`.
fn publish(port: u16, seconds: u32, rate: u32) -> Ffmpeg {
    let rate = rate.to_string();
    Ffmpeg::publish(
        &format!("rtmp://127.0.0.1:{port}/live/demo-key"),
        seconds,
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "60", "-pix_fmt", "yuv420p",
        ],
        &["-c:a", "aac", "-ar", &rate, "-ac", "2"],
    )
}

fn wait_live(edge: &EdgeProcess, ffmpeg: &mut Ffmpeg) {
    poll_until(
        "demo live over RTMP with two tracks",
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
}

struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    took: Duration,
}

impl Fetched {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn get(client: &reqwest::blocking::Client, url: &str) -> Fetched {
    let t0 = Instant::now();
    let r = client
        .get(url)
        .header("origin", "http://127.0.0.1:9")
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().expect("body").to_vec();
    Fetched {
        status,
        headers,
        body,
        took: t0.elapsed(),
    }
}

/// The last `#EXT-X-PRELOAD-HINT` part of a media playlist: (msn, part).
fn preload_hint(playlist: &str) -> (u64, u64) {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .unwrap_or_else(|| panic!("no preload hint in\n{playlist}"));
    let uri = line.split("URI=\"part").nth(1).expect("hint URI");
    let (msn, rest) = uri.split_once('.').expect("msn.part");
    let part = rest.split_once('.').expect("part.m4s").0;
    (msn.parse().expect("msn"), part.parse().expect("part"))
}

fn has_box(data: &[u8], kind: &[u8; 4]) -> bool {
    data.windows(4).any(|w| w == kind)
}

#[test]
fn hls_objects_and_blocking_reload() {
    let (edge, port) = start_edge();
    let client = http_client();
    let missing = get(&client, &edge.url("/hls/nobody/index.m3u8"));
    assert_eq!(missing.status, 404, "a stream the edge does not hold");

    let mut ffmpeg = publish(port, 60, 44_100);
    wait_live(&edge, &mut ffmpeg);

    // The first request starts muxing and waits for the first keyframe (≤ 2 s GOP).
    let master = get(&client, &edge.url("/hls/demo/index.m3u8"));
    assert_eq!(master.status, 200, "{}", master.text());
    assert_eq!(
        master.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(master.header("access-control-allow-origin"), "*");
    assert!(master.header("cache-control").contains("max-age=1"));
    let text = master.text();
    assert!(text.contains("CODECS=\"avc1.64"), "{text}");
    assert!(text.contains(",mp4a.40.2\""), "AAC kept as AAC: {text}");
    assert!(text.contains("RESOLUTION=640x480"), "{text}");
    let media_uri = text
        .lines()
        .find(|l| l.ends_with("/media.m3u8"))
        .expect("media playlist URI");
    let base = edge.url(&format!(
        "/hls/demo/{}",
        media_uri.trim_end_matches("media.m3u8")
    ));

    let media = get(&client, &format!("{base}media.m3u8"));
    assert_eq!(media.status, 200);
    assert_eq!(media.header("access-control-allow-origin"), "*");
    let playlist = media.text();
    for tag in [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=",
        "#EXT-X-PART-INF:PART-TARGET=1.000",
        "PART-HOLD-BACK=3.000",
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PART:DURATION=",
        ",INDEPENDENT=YES",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part",
    ] {
        assert!(playlist.contains(tag), "no {tag} in\n{playlist}");
    }

    let init = get(&client, &format!("{base}init.mp4"));
    assert_eq!(init.status, 200);
    assert_eq!(
        init.header("cache-control"),
        "public, max-age=3600, immutable"
    );
    assert_eq!(init.header("access-control-allow-origin"), "*");
    assert_eq!(&init.body[4..8], b"ftyp");
    for kind in [b"avc1", b"avcC", b"mp4a", b"esds", b"mvex"] {
        assert!(has_box(&init.body, kind), "init lacks {kind:?}");
    }

    // The preload-hinted part does not exist yet: the request is held until it does.
    let (msn, part) = preload_hint(&playlist);
    let hinted = get(&client, &format!("{base}part{msn}.{part}.m4s"));
    assert_eq!(hinted.status, 200, "{}", hinted.text());
    assert_eq!(
        hinted.header("cache-control"),
        "public, max-age=3600, immutable"
    );
    assert_eq!(&hinted.body[4..8], b"moof");
    assert!(has_box(&hinted.body, b"mdat") && has_box(&hinted.body, b"trun"));

    // Blocking reload: segment `msn` is still being written, so its EXTINF line appears only
    // once it is complete; the request must be held until then, and no longer than ~4 s more.
    let seg_line = format!("seg{msn}.m4s");
    assert!(
        !playlist.contains(&seg_line),
        "segment {msn} already complete"
    );
    let blocked = get(&client, &format!("{base}media.m3u8?_HLS_msn={msn}"));
    assert_eq!(blocked.status, 200);
    let reloaded = blocked.text();
    assert!(
        reloaded.contains(&seg_line),
        "blocking reload returned before segment {msn} was complete (after {:?}):\n{reloaded}",
        blocked.took
    );
    assert!(
        blocked.took > Duration::from_millis(300),
        "{:?}",
        blocked.took
    );
    assert!(blocked.took < Duration::from_secs(6), "{:?}", blocked.took);
    eprintln!("blocking reload for msn {msn} held {:?}", blocked.took);
    // With _HLS_part: held until that part of the open segment exists.
    let (msn2, part2) = preload_hint(&reloaded);
    let blocked = get(
        &client,
        &format!("{base}media.m3u8?_HLS_msn={msn2}&_HLS_part={part2}"),
    );
    assert!(
        blocked
            .text()
            .contains(&format!("part{msn2}.{part2}.m4s\"")),
        "{}",
        blocked.text()
    );
    let far = get(&client, &format!("{base}media.m3u8?_HLS_msn={}", msn2 + 10));
    assert_eq!(far.status, 400, "an _HLS_msn far ahead is refused");

    // ffprobe reads the init segment plus a whole segment: both tracks, every picture.
    let segment = get(&client, &format!("{base}{seg_line}"));
    assert_eq!(segment.status, 200);
    assert_eq!(
        segment.header("cache-control"),
        "public, max-age=3600, immutable"
    );
    let path = std::env::temp_dir().join(format!("waveguide-hls-{}.mp4", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(&init.body).expect("write");
    file.write_all(&segment.body).expect("write");
    drop(file);
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,width,height,has_b_frames,nb_read_frames,sample_rate")
        .args(["-of", "compact"])
        .arg(&path)
        .output()
        .expect("run ffprobe");
    let _ = std::fs::remove_file(&path);
    let out = String::from_utf8_lossy(&probe.stdout).into_owned();
    let err = String::from_utf8_lossy(&probe.stderr).into_owned();
    eprintln!("ffprobe: {out}{err}");
    assert!(probe.status.success(), "{err}");
    assert!(
        out.contains("codec_name=h264|width=640|height=480|has_b_frames="),
        "{out}"
    );
    assert!(
        !out.contains("has_b_frames=0"),
        "the B-frames are kept: {out}"
    );
    assert!(out.contains("codec_name=aac|sample_rate=44100"), "{out}");
    let video_frames: u64 = out
        .lines()
        .find(|l| l.contains("h264"))
        .and_then(|l| l.rsplit("nb_read_frames=").next())
        .and_then(|n| n.trim().parse().ok())
        .expect("video frame count");
    // A ~4 s segment at 30 fps, cut at a keyframe (every 2 s): B-frames included.
    assert!(
        (110..=130).contains(&video_frames),
        "{video_frames} pictures in {seg_line}"
    );
    assert!(err.trim().is_empty(), "ffprobe complained: {err}");

    let bytes = edge.metric("waveguide_hls_bytes_total", &[]);
    assert!(bytes > 100_000.0, "waveguide_hls_bytes_total = {bytes}");
    poll_until(
        "waveguide_hls_renditions = 1",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || (edge.metric("waveguide_hls_renditions", &[]) == 1.0).then_some(()),
    );
    assert!(edge.metric("waveguide_hls_clients", &[]) >= 1.0);
}

#[test]
fn chromium_plays_ll_hls_with_audio() {
    let (edge, port) = start_edge();
    let mut ffmpeg = publish(port, 60, 48_000);
    wait_live(&edge, &mut ffmpeg);
    poll_until(
        "the REST notices name the B-frames",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            edge.stream_info("demo")
                .filter(|s| s["notices"].to_string().contains("B-frames"))
        },
    );
    let mut browser = Browser::launch();
    let page = browser.goto(&edge.url("/watch/demo?hls=1"));
    let eval = |browser: &mut Browser, expr: &str| -> serde_json::Value {
        browser
            .eval(page, expr)
            .unwrap_or_else(|e| panic!("eval {expr}: {e}\n{}", browser.log_tail(40)))
    };
    let playing = Instant::now();
    poll_until(
        "the watch page playing LL-HLS",
        Duration::from_secs(25),
        Duration::from_millis(250),
        || {
            let t = eval(&mut browser, "document.getElementById('video').currentTime");
            (t.as_f64().unwrap_or(0.0) > 1.0).then_some(())
        },
    );
    eprintln!("HLS playing after {:?}", playing.elapsed());
    assert_eq!(eval(&mut browser, "window.waveguide.mode"), "hls");
    assert_eq!(
        eval(&mut browser, "document.getElementById('mode').textContent"),
        "LL-HLS"
    );

    // Decoded pictures and audio bytes over a window, from the media element itself.
    let sample = "(() => { const v = document.getElementById('video'); \
                  const q = v.getVideoPlaybackQuality(); \
                  return [q.totalVideoFrames, q.droppedVideoFrames, v.webkitAudioDecodedByteCount, \
                          performance.now(), v.videoWidth, v.videoHeight, v.currentTime, \
                          window.waveguide.hls.targetLatency]; })()";
    std::thread::sleep(Duration::from_secs(2));
    let a = eval(&mut browser, sample);
    std::thread::sleep(Duration::from_secs(6));
    let b = eval(&mut browser, sample);
    let n = |v: &serde_json::Value, i: usize| v[i].as_f64().unwrap_or(0.0);
    let secs = (n(&b, 3) - n(&a, 3)) / 1000.0;
    let fps = (n(&b, 0) - n(&a, 0)) / secs;
    let dropped = n(&b, 1) - n(&a, 1);
    let audio_bytes = n(&b, 2) - n(&a, 2);
    let latency = eval(&mut browser, "window.waveguide.hls.latency");
    let behind_pdt = eval(
        &mut browser,
        "(() => { const d = window.waveguide.hls.playingDate; \
                  return d ? (Date.now() - d.getTime()) / 1000 : null; })()",
    );
    eprintln!(
        "LL-HLS in Chromium: {fps:.1} fps ({dropped} dropped), {}x{}, {audio_bytes} audio bytes \
         decoded in {secs:.1} s, media time advanced {:.2} s; hls.js latency {latency} s \
         (target {}), wall clock − PROGRAM-DATE-TIME {behind_pdt} s",
        n(&b, 4),
        n(&b, 5),
        n(&b, 6) - n(&a, 6),
        b[7]
    );
    assert_eq!((n(&b, 4), n(&b, 5)), (640.0, 480.0));
    assert!(fps >= 25.0, "{fps:.1} fps");
    assert!(audio_bytes > 10_000.0, "audio decoded: {audio_bytes} bytes");
    let behind = behind_pdt.as_f64().expect("hls.js knows the program date");
    assert!(behind > 0.0 && behind < 6.0, "{behind} s behind live");
}
