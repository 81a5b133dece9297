//! Child processes that report on stdout as JSON lines, with their stderr in a log file.
//!
//! Every test client (the Chromium driver, the aiortc scripts) prints one JSON object per line;
//! the last line is its result. [`JsonChild`] reads those lines on a thread, keeps every
//! stdout and stderr byte in `target/test-logs/<test>-<label>-<n>.log`, and kills the process
//! (or its whole process group) on drop, so a failing test leaves nothing running.

use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Directory for the logs of everything the tests start.
pub fn log_dir() -> PathBuf {
    let dir = crate::target_dir().join("test-logs");
    std::fs::create_dir_all(&dir).expect("create target/test-logs");
    dir
}

/// A fresh log path named after the running test (test threads carry the test's name).
pub fn new_log_path(label: &str) -> PathBuf {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main").replace("::", "-");
    let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
    log_dir().join(format!("{test}-{label}-{}-{n}.log", std::process::id()))
}

/// The last `lines` lines of a file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Spawns `bin` with `args`, stdout and stderr appended to `log`, stdin closed, and the
/// variables every child of the harness gets (`RUST_LOG` passed on or `info`; `NO_COLOR`,
/// so the log file holds plain text). Panics naming the binary if it cannot start.
pub fn spawn_logged<A: AsRef<std::ffi::OsStr>>(
    bin: &Path,
    args: impl IntoIterator<Item = A>,
    log: &Path,
) -> Child {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out.try_clone().expect("clone log handle");
    Command::new(bin)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()))
}

/// Waits up to `timeout` for `child` to exit by itself; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// Sends a signal by name (`STOP`, `CONT`, `TERM`, `KILL`) to a pid, or to a process group
/// when `target` is negative. Uses `kill(1)`: the crate forbids `unsafe`, so no libc.
pub fn send_signal(target: i64, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A running child that prints JSON lines on stdout.
pub struct JsonChild {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
    /// Every JSON line read so far, in order.
    pub seen: Vec<Value>,
    stdout_closed: bool,
}

impl JsonChild {
    /// Spawns `cmd` in its own process group, stdout read as JSON lines, stderr (and a copy of
    /// stdout) appended to a fresh log file. `stdin` is piped when `keep_stdin` is set.
    pub fn spawn(mut cmd: Command, label: &str, keep_stdin: bool) -> Self {
        let log = new_log_path(label);
        let mut header = open_log(&log);
        // Best effort: the header only helps a reader of the log.
        let _ = writeln!(header, "# {cmd:?}");
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::from(open_log(&log)))
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            // Own process group: drop kills the child and everything it started (Chromium).
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("stdout was piped above");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        let mut copy = open_log(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(copy, "[stdout] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            label: label.to_owned(),
            child,
            stdin,
            lines: rx,
            log,
            seen: Vec::new(),
            stdout_closed: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Writes one line to the child's stdin; `false` if it is closed (the child is gone).
    pub fn try_send_line(&mut self, line: &str) -> bool {
        match self.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}")
                .and_then(|_| stdin.flush())
                .is_ok(),
            None => false,
        }
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("spawned with keep_stdin");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!(
                "{}: write to stdin: {e}\n--- log tail ---\n{}",
                self.label,
                self.log_tail(40)
            );
        }
    }

    /// The next JSON line, or `None` when the deadline passes or stdout closes. Lines that are
    /// not JSON are skipped (they are in the log).
    pub fn next_json(&mut self, deadline: Instant) -> Option<Value> {
        while !self.stdout_closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        self.seen.push(value.clone());
                        return Some(value);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => self.stdout_closed = true,
            }
        }
        None
    }

    /// Reads lines until one satisfies `pred`; panics (with the log tail) on timeout or exit.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        while let Some(value) = self.next_json(deadline) {
            if pred(&value) {
                return value;
            }
        }
        let why = if self.stdout_closed {
            "it exited"
        } else {
            "timed out"
        };
        panic!(
            "{}: {why} while waiting {timeout:?} for {what}; last lines: {:?}\n--- log {} ---\n{}",
            self.label,
            self.seen.iter().rev().take(3).collect::<Vec<_>>(),
            self.log.display(),
            self.log_tail(60)
        );
    }

    /// Sends a signal by name to the child itself (not its group).
    pub fn signal(&self, signal: &str) {
        assert!(
            send_signal(i64::from(self.pid()), signal),
            "{}: kill -{signal} {} failed",
            self.label,
            self.pid()
        );
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Closes stdin, waits for exit (up to `timeout`), drains stdout, and returns the exit
    /// status with the last JSON line printed. Panics with the log tail on timeout.
    pub fn finish(&mut self, timeout: Duration) -> (ExitStatus, Option<Value>) {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        // Drain stdout first: a child blocked on a full pipe would never exit.
        while self.next_json(deadline).is_some() {}
        let Some(status) = self.wait_exit(deadline.saturating_duration_since(Instant::now()))
        else {
            panic!(
                "{}: still running after {timeout:?}\n--- log {} ---\n{}",
                self.label,
                self.log.display(),
                self.log_tail(60)
            );
        };
        (status, self.seen.last().cloned())
    }
}

impl Drop for JsonChild {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            // A stopped process must be continued before a TERM would be acted on; KILL works
            // either way, and the whole group (Chromium's children too) goes with it.
            send_signal(-i64::from(self.pid()), "KILL");
            let _ = self.child.kill();
        } else {
            // The child is gone, but what it started may linger in its group.
            send_signal(-i64::from(self.pid()), "KILL");
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log {} (tail) ---\n{}",
                self.label,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

fn run_to_completion(cmd: Command, label: &str, timeout: Duration) -> Value {
    let mut child = JsonChild::spawn(cmd, label, false);
    let (status, last) = child.finish(timeout);
    match last {
        Some(value) => value,
        None => panic!(
            "{label}: exited with {status} and printed no JSON line\n--- log {} ---\n{}",
            child.log_path().display(),
            child.log_tail(60)
        ),
    }
}

/// The `node` command for `tests/js/<script>`, run from `tests/js`.
pub fn node_command(script: &str) -> Command {
    let dir = crate::workspace_root().join("tests/js");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/js/node_modules is missing: run scripts/setup.sh"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).current_dir(&dir);
    cmd
}

/// The venv `python` command for `tests/py/<script>`, run from `tests/py`.
pub fn python_command(script: &str) -> Command {
    let dir = crate::workspace_root().join("tests/py");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs `node tests/js/<script> <args>` to completion (killed after `timeout`) and returns the
/// JSON of its last stdout line, whatever its exit status.
pub fn run_node(script: &str, args: &[&str], timeout: Duration) -> Value {
    let mut cmd = node_command(script);
    cmd.args(args);
    run_to_completion(cmd, script.trim_end_matches(".mjs"), timeout)
}

/// Runs `tests/py/.venv/bin/python tests/py/<script> <args>` to completion (killed after
/// `timeout`) and returns the JSON of its last stdout line, whatever its exit status.
pub fn run_python(script: &str, args: &[&str], timeout: Duration) -> Value {
    let mut cmd = python_command(script);
    cmd.args(args);
    run_to_completion(cmd, script.trim_end_matches(".py"), timeout)
}
