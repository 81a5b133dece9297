//! Recording: Chromium publishes over WHIP, the edge records the stream to disk, and ffprobe
//! (ffmpeg 5.1) reads what it wrote: H.264 + Opus to fragmented MP4 (started and stopped over
//! REST), VP8 to WebM, a file that survives SIGKILL, and a disk that fills while a WebRTC
//! viewer keeps decoding.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use waveguide_tests::browser::{PageId, PublishOptions, Signaled};
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::{Browser, EdgeProcess, poll_until};

const CONNECT: Duration = Duration::from_secs(15);
const TOKEN: &str = "record-admin-token";
/// The published time the first test records.
const RECORD_FOR: Duration = Duration::from_secs(8);

/// A fresh directory for one test's recordings, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wg-record-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create recording dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small tmpfs mounted on a directory (the test runs as root); unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(label: &str, size: &str) -> Self {
        let dir = TempDir::new(label);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", dir.0.display());
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0.0).status();
    }
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "{}\n[cluster]\ntoken = \"{TOKEN}\"\n\n[record]\ndirectory = \"{}\"\n{extra}",
        static_config(&[("demo", "demo-key")], 15),
        dir.display()
    )
}

/// Publishes the fake camera and microphone from Chromium; waits until video reaches the edge.
fn publish(edge: &EdgeProcess, browser: &mut Browser, codec: &str) -> (PageId, Signaled) {
    let page = browser.open_page();
    let opts = PublishOptions {
        video_codec: Some(codec.to_owned()),
        ..PublishOptions::default()
    };
    let published = browser.publish(page, &edge.url("/whip/demo"), Some("demo-key"), &opts);
    assert_eq!(published.status, 201, "WHIP from Chromium: {published:?}");
    browser.wait_connected(page, &[published.id], CONNECT);
    poll_until(
        "video packets at the edge",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            edge.stream_info("demo").filter(|s| {
                s["tracks"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["kind"] == "video" && t["packets"].as_u64() > Some(0))
                })
            })
        },
    );
    (page, published)
}

fn recording_state(edge: &EdgeProcess) -> Option<Value> {
    let resp = http_client()
        .get(edge.url("/api/v1/streams/demo/recording"))
        .send()
        .ok()?;
    (resp.status() == 200).then(|| resp.json().ok())?
}

fn wait_state(edge: &EdgeProcess, state: &str, timeout: Duration) -> Value {
    poll_until(
        &format!("recording state `{state}`"),
        timeout,
        Duration::from_millis(50),
        || recording_state(edge).filter(|v| v["state"] == state),
    )
}

fn recordings(edge: &EdgeProcess) -> Vec<Value> {
    let resp = http_client()
        .get(edge.url("/api/v1/streams/demo/recordings"))
        .send()
        .expect("GET recordings");
    assert_eq!(resp.status(), 200);
    resp.json::<Vec<Value>>().expect("recordings JSON")
}

/// `ffprobe -show_format -show_streams` of `file` as JSON; panics with its stderr on failure.
fn ffprobe(file: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

fn codecs(probe: &Value) -> Vec<String> {
    let mut c: Vec<String> = probe["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}

fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// The only file in the stream's folder.
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir.join("demo"))
        .expect("stream folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "files: {files:?}");
    files[0].clone()
}

/// H.264 + Opus from Chromium, recorded for ~8 s between a REST start and stop: ffprobe sees
/// both tracks and the published duration (within 5 %); REST lists the file.
#[test]
fn h264_opus_recorded_over_rest_reads_in_ffprobe() {
    let dir = TempDir::new("h264");
    let edge = EdgeProcess::start(&config(&dir.0, ""));
    let mut browser = Browser::launch();
    let (_page, _published) = publish(&edge, &mut browser, "H264");
    let client = http_client();
    let url = edge.url("/api/v1/streams/demo/recording");

    let status = client.post(&url).send().expect("POST").status();
    assert_eq!(status, 401, "starting a recording needs the admin token");
    let resp = client.post(&url).bearer_auth(TOKEN).send().expect("POST");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    let again = client.post(&url).bearer_auth(TOKEN).send().expect("POST");
    assert_eq!(again.status(), 409, "a second start while recording");

    // Recording from the first keyframe on (the edge asks the publisher for one).
    wait_state(&edge, "recording", Duration::from_secs(5));
    let started = Instant::now();
    std::thread::sleep(RECORD_FOR);
    let resp = client
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .expect("DELETE");
    let published = started.elapsed().as_secs_f64();
    assert_eq!(resp.status(), 200);
    let end = wait_state(&edge, "stopped", Duration::from_secs(5));
    assert_eq!(end["error"], Value::Null, "{end}");
    assert_eq!(end["files"], 1, "{end}");

    let file = only_file(&dir.0);
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("mp4"));
    let probe = ffprobe(&file);
    assert_eq!(codecs(&probe), ["h264", "opus"], "{probe:#}");
    let recorded = duration(&probe);
    println!("published {published:.3} s, recorded {recorded:.3} s");
    assert!(
        (recorded - published).abs() <= published * 0.05,
        "recorded {recorded:.3} s of {published:.3} s published"
    );

    let listed = recordings(&edge);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["name"].as_str(),
        file.file_name().and_then(|n| n.to_str())
    );
    assert_eq!(
        listed[0]["size"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );
    let listed_duration = listed[0]["duration_secs"].as_f64().unwrap_or(0.0);
    assert!(
        (listed_duration - recorded).abs() < 0.2,
        "REST says {listed_duration} s, ffprobe {recorded} s"
    );
    assert!(
        listed[0]["start_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(edge.metric("waveguide_recording_files_total", &[]) >= 1.0);
    assert!(edge.metric("waveguide_recording_bytes_total", &[]) > 10_000.0);
    assert_eq!(edge.metric("waveguide_recording_errors_total", &[]), 0.0);
    // Stopping again: nothing records.
    let status = client
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);
}

/// VP8 from Chromium, recorded from go-live (the `[record] streams` list) to WebM, which
/// ffprobe reads with both tracks.
#[test]
fn vp8_recorded_to_webm_from_go_live() {
    let dir = TempDir::new("vp8");
    let edge = EdgeProcess::start(&config(&dir.0, "streams = [\"demo\"]\n"));
    let mut browser = Browser::launch();
    let (page, published) = publish(&edge, &mut browser, "VP8");
    let state = wait_state(&edge, "recording", Duration::from_secs(10));
    assert_eq!(state["started_by"], "config", "{state}");
    std::thread::sleep(Duration::from_secs(4));
    // The publisher leaving ends the stream and its recording.
    assert_eq!(browser.delete(page, published.id), 200);
    wait_state(&edge, "stopped", Duration::from_secs(5));

    let file = only_file(&dir.0);
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("webm"));
    let probe = ffprobe(&file);
    assert_eq!(codecs(&probe), ["opus", "vp8"], "{probe:#}");
    let video = probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_name"] == "vp8"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(480))
    );
    let listed = recordings(&edge);
    let secs = listed[0]["duration_secs"].as_f64().unwrap_or(0.0);
    assert!(
        (3.0..6.0).contains(&secs),
        "listed duration {secs}: {listed:?}"
    );
}

/// SIGKILL mid-recording: the file reads in ffprobe as it is; a torn fragment at its end (a
/// write the kill or a power cut interrupted) is cut off by the restarted edge, which says so.
#[test]
fn a_killed_edge_leaves_a_readable_file_and_repairs_a_torn_one() {
    let dir = TempDir::new("kill");
    let mut edge = EdgeProcess::start(&config(&dir.0, "enabled = true\n"));
    let mut browser = Browser::launch();
    let _publisher = publish(&edge, &mut browser, "H264");
    wait_state(&edge, "recording", Duration::from_secs(10));
    poll_until(
        "3 s recorded",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || recording_state(&edge).filter(|v| v["file_duration_secs"].as_f64() >= Some(3.0)),
    );
    edge.kill();
    drop(browser);

    let file = only_file(&dir.0);
    let whole = std::fs::metadata(&file).unwrap().len();
    let probe = ffprobe(&file);
    assert_eq!(codecs(&probe), ["h264", "opus"], "{probe:#}");
    assert!(duration(&probe) >= 2.5, "{probe:#}");

    // Half a fragment more: a moof whose box claims more than the file holds.
    let mut torn = std::fs::read(&file).unwrap();
    torn.extend_from_slice(&[0, 0, 0x10, 0, b'm', b'o', b'o', b'f', 0, 0, 0, 0x10]);
    std::fs::write(&file, &torn).unwrap();
    edge.restart();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), whole);
    let log = std::fs::read_to_string(edge.log_path()).unwrap_or_default();
    assert!(
        log.contains("truncated to its last complete fragment"),
        "no repair in the log:\n{}",
        edge.log_tail(30)
    );
    assert_eq!(codecs(&ffprobe(&file)), ["h264", "opus"]);
}

/// A recording directory that fills (a 2 MiB tmpfs, mostly taken by another file): the
/// recording ends with a clear error in REST and metrics, the file stays readable, and a
/// WebRTC viewer keeps decoding.
#[test]
fn a_full_disk_ends_the_recording_not_the_viewers() {
    let disk = Tmpfs::mount("full", "2m");
    // Leave about 400 KiB: a few seconds of the fake camera.
    std::fs::write(disk.0.0.join("filler"), vec![0u8; 1600 * 1024]).expect("filler");
    let edge = EdgeProcess::start(&config(&disk.0.0, "enabled = true\n"));
    let mut browser = Browser::launch();
    let _publisher = publish(&edge, &mut browser, "H264");
    let viewer_page = browser.open_page();
    let viewers = browser.watch(viewer_page, &edge.url("/whep/demo"), 1);
    assert_eq!(viewers[0].status, 201, "{viewers:?}");
    browser.wait_connected(viewer_page, &[viewers[0].id], CONNECT);

    let failed = wait_state(&edge, "failed", Duration::from_secs(60));
    let error = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("No space left on device"),
        "the error names the cause: {failed}"
    );
    assert_eq!(edge.metric("waveguide_recording_errors_total", &[]), 1.0);
    let log = std::fs::read_to_string(edge.log_path()).unwrap_or_default();
    assert!(log.contains("recording failed"), "{}", edge.log_tail(30));

    // The viewer keeps decoding after the failure.
    let before = browser
        .stats_of(viewer_page, viewers[0].id)
        .frames_decoded();
    browser.wait_stats(
        viewer_page,
        viewers[0].id,
        "60 more frames after the disk filled",
        Duration::from_secs(15),
        |s| s.frames_decoded() >= before + 60,
    );
    // What was written up to the failure is a whole file.
    let file = only_file(&disk.0.0);
    assert_eq!(codecs(&ffprobe(&file)), ["h264", "opus"]);
    drop(edge);
}

/// A one-route webhook stream service: key `rec-key` may publish `demo` and is recorded,
/// `plain-key` may publish `plain` and is not.
fn start_webhook() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let answer = match request["key"].as_str() {
                Some("rec-key") => r#"{"allow": true, "stream": "demo", "record": true}"#,
                Some("plain-key") => r#"{"allow": true, "stream": "plain"}"#,
                _ => r#"{"allow": false}"#,
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

/// The webhook's `"record": true` records that publisher's stream from go-live; a stream it
/// did not ask for is not recorded.
#[test]
fn the_webhook_asks_for_a_recording() {
    let dir = TempDir::new("webhook");
    let port = start_webhook();
    let edge = EdgeProcess::start(&format!(
        "[service]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/auth\"\n\n[cluster]\ntoken = \"{TOKEN}\"\n\n[record]\ndirectory = \"{}\"\n",
        dir.0.display()
    ));
    let mut browser = Browser::launch();
    let page = browser.open_page();
    let opts = PublishOptions {
        video_codec: Some("H264".to_owned()),
        ..PublishOptions::default()
    };
    let plain = browser.publish(page, &edge.url("/whip"), Some("plain-key"), &opts);
    assert_eq!(plain.status, 201, "{plain:?}");
    let recorded = browser.publish(page, &edge.url("/whip"), Some("rec-key"), &opts);
    assert_eq!(recorded.status, 201, "{recorded:?}");
    browser.wait_connected(page, &[plain.id, recorded.id], CONNECT);
    let state = wait_state(&edge, "recording", Duration::from_secs(10));
    assert_eq!(state["started_by"], "webhook", "{state}");
    let plain_state = http_client()
        .get(edge.url("/api/v1/streams/plain/recording"))
        .send()
        .expect("GET")
        .status();
    assert_eq!(plain_state, 404, "`plain` was not to be recorded");
}

/// Whether the first video frame of `file` is a keyframe (the file plays from its start).
fn starts_with_keyframe(file: &Path) -> bool {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "frame=key_frame", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).lines().next() == Some("1")
}

/// Started and stopped over gRPC (`PipelineService.Record`), with 2 s files and two kept:
/// the edge asks the publisher for a keyframe when a file is due, each file starts at one,
/// and the oldest files go.
#[test]
fn files_rotate_at_keyframes_and_the_newest_are_kept_grpc() {
    use waveguide_proto::v1::RecordRequest;
    use waveguide_proto::v1::pipeline_service_client::PipelineServiceClient;
    use waveguide_tests::signaling::{Bearer, channel};

    let dir = TempDir::new("rotate");
    let edge = EdgeProcess::start(&config(&dir.0, "segment_secs = 2\nkeep_files = 2\n"));
    let mut browser = Browser::launch();
    let _publisher = publish(&edge, &mut browser, "H264");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let record = |stream: &str, start: bool| {
        runtime.block_on(async {
            let mut client = PipelineServiceClient::with_interceptor(
                channel(edge.grpc_port()).await,
                Bearer::new(Some(TOKEN)),
            );
            client
                .record(RecordRequest {
                    stream: stream.to_owned(),
                    start,
                })
                .await
                .map(|r| r.into_inner())
        })
    };
    let missing = record("nope", true).expect_err("no such stream");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let started = record("demo", true).expect("Record start");
    assert!(
        ["waiting", "recording"].contains(&started.state.as_str()),
        "{started:?}"
    );
    let state = poll_until(
        "a fourth file",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || recording_state(&edge).filter(|v| v["files"].as_u64() >= Some(4)),
    );
    assert_eq!(state["started_by"], "grpc", "{state}");
    let stopped = record("demo", false).expect("Record stop");
    assert!(stopped.error.is_empty(), "{stopped:?}");
    wait_state(&edge, "stopped", Duration::from_secs(5));
    let again = record("demo", false).expect_err("nothing records");
    assert_eq!(again.code(), tonic::Code::NotFound);

    let listed = recordings(&edge);
    assert_eq!(listed.len(), 2, "keep_files = 2: {listed:#?}");
    // The older one was closed by a rotation (about 2 s); the newer one by the stop (any
    // length, maybe only a few frames).
    for (i, file) in listed.iter().enumerate() {
        let path = dir
            .0
            .join("demo")
            .join(file["name"].as_str().unwrap_or_default());
        let probe = ffprobe(&path);
        assert!(codecs(&probe).contains(&"h264".to_owned()), "{probe:#}");
        assert!(
            starts_with_keyframe(&path),
            "{} starts mid-GOP",
            path.display()
        );
        if i == 0 {
            assert_eq!(codecs(&probe), ["h264", "opus"], "{probe:#}");
            let secs = duration(&probe);
            assert!(
                (1.5..6.0).contains(&secs),
                "{} lasts {secs} s",
                path.display()
            );
        }
    }
}
