//! The aiortc clients in `tests/py` as child processes.
//!
//! `publish.py` (WHIP, synthetic moving 640x480 video and a sine) and `watch.py` (WHEP,
//! counts decoded frames) print JSON lines: an `event` of `published`/`watching` with the HTTP
//! status, `connected`, periodic `stats`, and `done`. See the scripts' docstrings.

use crate::process::{JsonChild, python_command};
use serde_json::Value;
use std::time::Duration;

/// Video codec the aiortc publisher is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

/// A running aiortc client (publisher or viewer).
pub struct PyPeer {
    pub child: JsonChild,
    /// Absolute session URL from the 201.
    pub location: Option<String>,
}

impl PyPeer {
    /// Starts `publish.py` against `whip_url` and waits for the 201 and `connected`.
    pub fn publish(whip_url: &str, key: Option<&str>, codec: VideoCodec, seconds: u32) -> PyPeer {
        let mut cmd = python_command("publish.py");
        cmd.args(["--url", whip_url, "--codec", codec.name()])
            .args(["--seconds", &seconds.to_string()]);
        if let Some(key) = key {
            cmd.args(["--key", key]);
        }
        Self::start(cmd, "aiortc-publish", "published")
    }

    /// Starts `watch.py` against `whep_url` and waits for the 201 and `connected`.
    pub fn watch(whep_url: &str, seconds: u32) -> PyPeer {
        let mut cmd = python_command("watch.py");
        cmd.args(["--url", whep_url, "--seconds", &seconds.to_string()])
            .args(["--interval", "0.5"]);
        Self::start(cmd, "aiortc-watch", "watching")
    }

    fn start(cmd: std::process::Command, label: &str, first: &str) -> PyPeer {
        let mut child = JsonChild::spawn(cmd, label, false);
        let signaled = child.wait_for(&format!("{first} event"), Duration::from_secs(30), |v| {
            v["event"] == first
        });
        assert_eq!(
            signaled["status"], 201,
            "{label}: expected 201, got {signaled}"
        );
        let location = signaled["location"].as_str().map(str::to_owned);
        child.wait_for("connected", Duration::from_secs(15), |v| {
            v["event"] == "connected" || v["event"] == "done"
        });
        assert_eq!(
            child.seen.last().map(|v| v["event"].clone()),
            Some(Value::from("connected")),
            "{label} did not connect: {:?}\n--- log ---\n{}",
            child.seen.last(),
            child.log_tail(40)
        );
        PyPeer { child, location }
    }

    /// The next `stats` line (viewer: per-kind frame counts; publisher: frames sent).
    pub fn next_stats(&mut self, timeout: Duration) -> Value {
        self.child
            .wait_for("stats line", timeout, |v| v["event"] == "stats")
    }

    /// SIGTERM, then the `done` line (the client DELETEs its session on the way out).
    pub fn stop(mut self, timeout: Duration) -> Value {
        self.child.signal("TERM");
        self.child
            .wait_for("done line", timeout, |v| v["event"] == "done")
    }
}
