//! End-to-end test harness for Waveguide: starts the real `waveguide-edge` binary and drives real
//! peers against it over 127.0.0.1.
//!
//! # Layout
//!
//! - [`edge`]: [`EdgeProcess`] — writes a config, picks free ports, spawns the binary, waits for
//!   `/healthz`, captures its log, kills it on drop. Only one edge runs at a time per test
//!   binary (the edge binds fixed default ports besides the ones the harness hands it).
//! - [`browser`]: [`Browser`] — one headless Chromium driven through `tests/js/driver.mjs`
//!   (JSON lines over stdin/stdout), with WHIP publish / WHEP watch / `getStats()` helpers.
//! - [`aiortc`]: the Python clients in `tests/py` (WHIP publisher, WHEP viewer) as child
//!   processes that report JSON lines.
//! - [`ffmpeg`]: an ffmpeg RTMP publisher (synthetic video and tone).
//! - [`offer`]: SDP offers made by the `rtc` crate, for the HTTP protocol tests.
//! - [`cluster`]: cluster-test building blocks (orchestrator addresses and configs, member
//!   edges, polls of the orchestrator's REST API).
//! - [`orchestrator`]: [`OrchestratorProcess`] (the real orchestrator binary) and
//!   [`RedisProcess`] (a real `redis-server`) for the cluster tests, which start one
//!   orchestrator and several edges ([`EdgeProcess::start_member`]) under one
//!   [`exclusive`] turn.
//! - [`process`]: the child-process plumbing shared by all of the above: a JSON-lines reader,
//!   a log file under `target/test-logs/`, deadlines, and kill on drop.
//! - [`rtc_viewer`]: [`rtc_viewer::RtcViewer`], an `rtc` WHEP viewer on its own thread that
//!   counts every datagram it receives and can send crafted NACKs (the attack suites).
//! - [`ports`]: free 127.0.0.1 ports outside the kernel's ephemeral range.
//! - [`load`]: the load tool behind the `waveguide-load` binary (one synthetic WHIP publisher,
//!   many `rtc` WHEP viewers, a report of join time, loss, delay and CPU). Unlike the rest of
//!   the harness it returns errors instead of panicking: it is also a command-line tool.
//!
//! The harness panics with context (and the tail of the relevant log) instead of returning
//! errors: every caller is a test, and a panic is how a test reports.
//!
//! # What a test needs on the machine
//!
//! `scripts/setup.sh` installs it: Chromium, `tests/js/node_modules` (playwright-core), and the
//! virtualenv `tests/py/.venv` (aiortc, numpy). `cargo build --release -p waveguide-edge` must
//! have produced the edge binary (or set `WAVEGUIDE_EDGE_BIN`).
//!
//! # Running
//!
//! - Everything, as CI does: `scripts/test.sh` (set-up, release build, `cargo test --release
//!   --workspace`).
//! - One suite: `cargo test --release -p waveguide-tests --test reconnect` (`protocol`,
//!   `browser`, `aiortc`, `fanout`, `reconnect`); add `-- --nocapture` to see measurements.
//! - Logs and the generated edge configs of every run: `target/test-logs/`, one file per
//!   process, named after the test. A failing test also prints the tails of its logs.

pub mod aiortc;
pub mod browser;
pub mod cluster;
pub mod edge;
pub mod ffmpeg;
pub mod load;
pub mod offer;
pub mod orchestrator;
pub mod ports;
pub mod process;
pub mod rtc_viewer;
pub mod signaling;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use browser::{Browser, PageId};
pub use edge::EdgeProcess;
pub use orchestrator::{OrchestratorProcess, RedisProcess};
pub use process::{JsonChild, run_node, run_python};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

static EXCLUSIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serializes the heavy tests of one test binary: every [`EdgeProcess`] holds this for its
/// lifetime, and the self-tests that start a browser or aiortc without an edge take it too.
/// On 2 cores two media tests at once would starve each other into flaky frame rates, and the
/// edge binds default ports the harness does not choose. Never take it twice in one test (it
/// is not re-entrant): one edge per test.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    // A poisoned lock only means an earlier test panicked; what it guarded was killed on drop.
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `probe` every `interval` until it returns `Some`, or panics naming `what` once
/// `timeout` has passed. The last attempt happens after the deadline, so a slow probe still
/// gets its final chance.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
    }
}
