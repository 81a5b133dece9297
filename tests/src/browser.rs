//! [`Browser`]: one headless Chromium, driven through `tests/js/driver.mjs`.
//!
//! The driver serves `tests/js/page/` from its own 127.0.0.1 port, so every WHIP/WHEP request
//! the page makes to the edge is cross-origin and goes through CORS preflight, as on a real
//! site. Each tab is a [`PageId`]; each peer connection inside a tab has a numeric id that the
//! page's `window.wg` functions return and accept. See `tests/js/page/client.js`.

use crate::process::{JsonChild, node_command};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A tab in the driven browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageId(pub u64);

/// The answer to a WHIP/WHEP POST made by the page.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signaled {
    /// Peer connection id inside its page.
    pub id: u64,
    pub status: u16,
    /// Absolute session URL (resolved against the request URL).
    pub location: Option<String>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    /// Response body when the status was not 201.
    pub body: Option<String>,
}

/// `getStats()` of one inbound video stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoIn {
    pub codec: Option<String>,
    pub packets_received: u64,
    pub packets_lost: i64,
    pub frames_decoded: u64,
    pub frames_dropped: u64,
    pub key_frames_decoded: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    pub freeze_count: u64,
}

/// `getStats()` of one inbound audio stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioIn {
    pub codec: Option<String>,
    pub packets_received: u64,
    pub total_audio_energy: f64,
    pub total_samples_received: u64,
}

/// `getStats()` of one outbound stream (publisher side).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    pub codec: Option<String>,
    pub packets_sent: u64,
    pub frames_encoded: u64,
    pub frame_width: u32,
    pub frame_height: u32,
}

/// Stats of one peer connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PcStats {
    pub id: u64,
    pub connection_state: String,
    pub video: Option<VideoIn>,
    pub audio: Option<AudioIn>,
    pub out_video: Option<Outbound>,
    pub out_audio: Option<Outbound>,
}

impl PcStats {
    pub fn frames_decoded(&self) -> u64 {
        self.video.as_ref().map_or(0, |v| v.frames_decoded)
    }

    pub fn audio_energy(&self) -> f64 {
        self.audio.as_ref().map_or(0.0, |a| a.total_audio_energy)
    }
}

/// Options for [`Browser::publish`].
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub audio: bool,
    /// `"VP8"`, `"H264"`, or `None` for the browser's default order.
    pub video_codec: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 30,
            audio: true,
            video_codec: None,
        }
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The driven Chromium. Quits (and its process group is killed) on drop.
pub struct Browser {
    driver: JsonChild,
    next_id: u64,
    origin: String,
}

impl Browser {
    /// Starts the driver and Chromium; panics (with the driver log) if it is not ready in 30 s.
    pub fn launch() -> Browser {
        Self::launch_with(node_command("driver.mjs"))
    }

    /// Launches the driver (and so Chromium) inside network namespace `netns`, through
    /// `ip netns exec` (root only): the browser then has that namespace's network.
    pub fn launch_in_netns(netns: &str) -> Browser {
        let node = node_command("driver.mjs");
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(node.get_program())
            .args(node.get_args());
        if let Some(dir) = node.get_current_dir() {
            cmd.current_dir(dir);
        }
        Self::launch_with(cmd)
    }

    fn launch_with(command: std::process::Command) -> Browser {
        let mut driver = JsonChild::spawn(command, "chromium", true);
        let ready = driver.wait_for("driver ready", Duration::from_secs(30), |v| {
            v["event"] == "ready"
        });
        let origin = ready["origin"]
            .as_str()
            .expect("ready carries origin")
            .to_owned();
        Browser {
            driver,
            next_id: 1,
            origin,
        }
    }

    /// Origin of the test page (`http://127.0.0.1:<port>`), distinct from the edge's.
    pub fn page_origin(&self) -> &str {
        &self.origin
    }

    /// Sends one request to the driver and waits for its reply. `Err` carries the driver's
    /// error message (a rejected promise in the page, a missing page, …).
    pub fn request(&mut self, mut req: Value, timeout: Duration) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        self.driver.send_line(&req.to_string());
        let deadline = Instant::now() + timeout;
        while let Some(msg) = self.driver.next_json(deadline) {
            if msg["id"] != json!(id) {
                continue;
            }
            return if msg["ok"] == json!(true) {
                Ok(msg["result"].clone())
            } else {
                Err(msg["error"].as_str().unwrap_or("unknown error").to_owned())
            };
        }
        panic!(
            "browser driver gave no answer to {req} within {timeout:?}\n--- log {} ---\n{}",
            self.driver.log_path().display(),
            self.driver.log_tail(60)
        );
    }

    fn must(&mut self, req: Value, timeout: Duration) -> Value {
        let what = req.to_string();
        match self.request(req, timeout) {
            Ok(v) => v,
            Err(e) => panic!(
                "browser call {what} failed: {e}\n--- log {} ---\n{}",
                self.driver.log_path().display(),
                self.driver.log_tail(40)
            ),
        }
    }

    /// Opens a new tab on the test page.
    pub fn open_page(&mut self) -> PageId {
        let v = self.must(json!({"cmd": "open"}), CALL_TIMEOUT);
        PageId(v["page"].as_u64().expect("open returns page id"))
    }

    /// Opens a tab on `url` (any page, e.g. an edge's `/watch/{stream}` player).
    pub fn goto(&mut self, url: &str) -> PageId {
        let v = self.must(json!({"cmd": "goto", "url": url}), CALL_TIMEOUT);
        PageId(v["page"].as_u64().expect("goto returns page id"))
    }

    /// Evaluates the JavaScript expression `expr` in `page` (promises are awaited).
    pub fn eval(&mut self, page: PageId, expr: &str) -> Result<Value, String> {
        self.request(
            json!({"cmd": "eval", "page": page.0, "expr": expr}),
            CALL_TIMEOUT,
        )
    }

    /// Calls `window.wg[fn](args)` in `page`; `Err` if it throws.
    pub fn call(&mut self, page: PageId, func: &str, args: Value) -> Result<Value, String> {
        self.request(
            json!({"cmd": "call", "page": page.0, "fn": func, "args": args}),
            CALL_TIMEOUT,
        )
    }

    fn call_must(&mut self, page: PageId, func: &str, args: Value) -> Value {
        self.must(
            json!({"cmd": "call", "page": page.0, "fn": func, "args": args}),
            CALL_TIMEOUT,
        )
    }

    /// Closes a tab abruptly: its peer connections vanish and no DELETE is sent.
    pub fn close_page(&mut self, page: PageId) {
        self.must(json!({"cmd": "close", "page": page.0}), CALL_TIMEOUT);
    }

    /// Publishes the fake camera and microphone over WHIP from `page`.
    pub fn publish(
        &mut self,
        page: PageId,
        whip_url: &str,
        token: Option<&str>,
        opts: &PublishOptions,
    ) -> Signaled {
        let v = self.call_must(
            page,
            "publish",
            json!({
                "url": whip_url,
                "token": token,
                "width": opts.width,
                "height": opts.height,
                "fps": opts.fps,
                "audio": opts.audio,
                "videoCodec": opts.video_codec,
            }),
        );
        serde_json::from_value(v).expect("publish result shape")
    }

    /// Opens `count` WHEP viewers (one peer connection each, each played by an unmuted
    /// `<video>` element) in `page`.
    pub fn watch(&mut self, page: PageId, whep_url: &str, count: usize) -> Vec<Signaled> {
        let v = self.call_must(
            page,
            "watch",
            json!({"url": whep_url, "count": count, "muted": false}),
        );
        serde_json::from_value(v).expect("watch result shape")
    }

    /// Waits until every listed peer connection is `connected`.
    pub fn wait_connected(&mut self, page: PageId, ids: &[u64], timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.must(
            json!({"cmd": "call", "page": page.0, "fn": "waitConnected",
                   "args": {"ids": ids, "timeoutMs": ms}}),
            timeout + Duration::from_secs(5),
        );
    }

    /// `getStats()` summaries of the listed peer connections (all of the page's if empty).
    pub fn stats(&mut self, page: PageId, ids: &[u64]) -> Vec<PcStats> {
        let args = if ids.is_empty() {
            json!({})
        } else {
            json!({ "ids": ids })
        };
        let v = self.call_must(page, "stats", args);
        serde_json::from_value(v).expect("stats result shape")
    }

    /// Stats of one peer connection.
    pub fn stats_of(&mut self, page: PageId, id: u64) -> PcStats {
        self.stats(page, &[id]).remove(0)
    }

    /// DELETEs the session of peer connection `id` from the page and closes it; returns the
    /// HTTP status.
    pub fn delete(&mut self, page: PageId, id: u64) -> u16 {
        let v = self.call_must(page, "remove", json!({"id": id, "close": true}));
        u16::try_from(v["status"].as_u64().expect("remove returns status")).expect("u16 status")
    }

    /// Polls the stats of `id` until `pred` holds; panics with the last stats on timeout.
    pub fn wait_stats(
        &mut self,
        page: PageId,
        id: u64,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&PcStats) -> bool,
    ) -> PcStats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats_of(page, id);
            if pred(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last stats: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.driver.log_tail(lines)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Polite quit first so Chromium removes its temporary profile; the JsonChild drop
        // then kills whatever is left of the process group.
        if self
            .driver
            .try_send_line(&json!({"id": 0, "cmd": "quit"}).to_string())
        {
            self.driver.wait_exit(Duration::from_secs(5));
        }
    }
}
