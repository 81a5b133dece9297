//! [`EdgeProcess`]: the real `waveguide-edge` binary, started on free 127.0.0.1 ports.
//!
//! The caller's TOML is parsed, the harness sets `http.listen`, `webrtc.udp_port`,
//! `webrtc.shards`, `webrtc.public_ip` and `webrtc.bind_ips` in it (keys the caller already set,
//! other than the ports, are kept), and writes it to a file next to the log. Only one edge runs
//! at a time in a test binary (it holds [`crate::exclusive`]): the edge also binds ports this
//! harness does not choose (gRPC, RTMP, FTL defaults), and on 2 cores parallel media tests
//! would starve each other.

use crate::ports;
use crate::process::{new_log_path, spawn_logged, tail, wait_child};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Shards the harness configures; it reserves this many consecutive UDP ports.
pub const SHARDS: u16 = 2;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// A static-service config with the given `(stream, key)` pairs and reconnect grace.
pub fn static_config(streams: &[(&str, &str)], reconnect_grace_secs: u64) -> String {
    let mut toml = String::from("[service]\nkind = \"static\"\n");
    for (name, key) in streams {
        toml.push_str(&format!(
            "\n[[service.streams]]\nname = \"{name}\"\nkey = \"{key}\"\n"
        ));
    }
    toml.push_str(&format!(
        "\n[viewers]\nreconnect_grace_secs = {reconnect_grace_secs}\n"
    ));
    toml
}

/// The config most tests use: stream `demo` with key `demo-key`, default grace (15 s).
pub fn demo_config() -> String {
    static_config(&[("demo", "demo-key")], 15)
}

/// Path of the edge binary: `WAVEGUIDE_EDGE_BIN`, else `<target>/release/waveguide-edge`.
pub fn edge_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("WAVEGUIDE_EDGE_BIN") {
        return PathBuf::from(bin);
    }
    crate::target_dir().join("release/waveguide-edge")
}

/// A blocking HTTP client with bounded timeouts and no redirect following (the tests look at
/// every status themselves).
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        // The TLS tests serve a self-signed certificate made for the run (loopback only).
        .danger_accept_invalid_certs(true)
        .build()
        .expect("build reqwest client")
}

fn spawn_edge(bin: &Path, config_path: &Path, log: &Path) -> Child {
    spawn_logged(bin, ["--config".as_ref(), config_path.as_os_str()], log)
}

/// The port of `[section] listen` when the caller set it.
fn listen_port(root: &toml::Table, section: &str) -> Option<u16> {
    root.get(section)?
        .get("listen")?
        .as_str()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

fn set_path(root: &mut toml::Table, table: &str, key: &str, value: toml::Value, overwrite: bool) {
    let section = root
        .entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section) = section else {
        panic!("config: `{table}` must be a table");
    };
    if overwrite || !section.contains_key(key) {
        section.insert(key.to_owned(), value);
    }
}

/// The running edge. Killed (SIGKILL) on drop; the log tail is printed if the test panicked.
pub struct EdgeProcess {
    child: Child,
    /// `https` when the config serves TLS.
    scheme: &'static str,
    http_port: u16,
    udp_port: u16,
    grpc_port: u16,
    rtmp_port: u16,
    log: PathBuf,
    config_path: PathBuf,
    _turn: Option<MutexGuard<'static, ()>>,
}

impl EdgeProcess {
    /// Writes `config_toml` (with ports filled in) to a file, spawns the edge with it, and
    /// waits until `GET /healthz` answers 200. Panics with the log tail if it does not within
    /// 20 s or the process exits.
    pub fn start(config_toml: &str) -> EdgeProcess {
        Self::spawn(config_toml, Some(crate::exclusive()))
    }

    /// Starts one edge of a cluster test, which holds [`crate::exclusive`] itself for all its
    /// processes. The caller's `[http] listen` and `[grpc] listen` are kept when set (a
    /// cluster config names the URLs others reach it at); free ports otherwise.
    pub fn start_member(config_toml: &str) -> EdgeProcess {
        Self::spawn(config_toml, None)
    }

    fn spawn(config_toml: &str, turn: Option<MutexGuard<'static, ()>>) -> EdgeProcess {
        let bin = edge_binary();
        assert!(
            bin.is_file(),
            "edge binary {} not found: run `cargo build --release -p waveguide-edge` or set \
             WAVEGUIDE_EDGE_BIN",
            bin.display()
        );

        let mut root: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{config_toml}"));
        let s = |v: &str| toml::Value::String(v.to_owned());
        let keep_listen = turn.is_none();
        let http_port = listen_port(&root, "http").filter(|_| keep_listen);
        let http_port = http_port.unwrap_or_else(ports::free_port);
        let udp_port = ports::free_port_block(SHARDS);
        set_path(
            &mut root,
            "http",
            "listen",
            s(&format!("127.0.0.1:{http_port}")),
            true,
        );
        let grpc_port = listen_port(&root, "grpc").filter(|_| keep_listen);
        let grpc_port = grpc_port.unwrap_or_else(ports::free_port);
        set_path(
            &mut root,
            "grpc",
            "listen",
            s(&format!("127.0.0.1:{grpc_port}")),
            true,
        );
        set_path(
            &mut root,
            "webrtc",
            "udp_port",
            toml::Value::Integer(udp_port.into()),
            true,
        );
        set_path(
            &mut root,
            "webrtc",
            "shards",
            toml::Value::Integer(SHARDS.into()),
            true,
        );
        set_path(&mut root, "webrtc", "public_ip", s("127.0.0.1"), false);
        set_path(
            &mut root,
            "webrtc",
            "bind_ips",
            toml::Value::Array(vec![s("127.0.0.1")]),
            false,
        );
        // Ingest ports other than HTTP/WebRTC have fixed defaults (FTL's 8084 is hard-coded in
        // clients); parallel edges must not collide, so each test gets its own.
        let ftl_port = ports::free_port();
        let ftl_media_port = ports::free_port();
        set_path(
            &mut root,
            "ftl",
            "listen",
            s(&format!("127.0.0.1:{ftl_port}")),
            false,
        );
        set_path(
            &mut root,
            "ftl",
            "media_port",
            toml::Value::Integer(ftl_media_port.into()),
            false,
        );
        let rtmp_port = ports::free_port();
        set_path(
            &mut root,
            "rtmp",
            "listen",
            s(&format!("127.0.0.1:{rtmp_port}")),
            false,
        );
        let rtmp_port = listen_port(&root, "rtmp").unwrap_or(rtmp_port);
        let config = toml::to_string(&root).expect("serialize config");

        let log = new_log_path("edge");
        let config_path = log.with_extension("toml");
        std::fs::write(&config_path, &config)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let child = spawn_edge(&bin, &config_path, &log);
        let scheme = if root.get("http").and_then(|h| h.get("tls_cert")).is_some() {
            "https"
        } else {
            "http"
        };
        let mut edge = EdgeProcess {
            child,
            scheme,
            http_port,
            udp_port,
            grpc_port,
            rtmp_port,
            log,
            config_path,
            _turn: turn,
        };
        edge.wait_healthy();
        edge
    }

    /// Kills the edge with SIGKILL (no goodbye to anyone) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the edge again with the same config and ports (after [`Self::kill`]); the log
    /// file continues.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_edge(&edge_binary(), &self.config_path, &self.log);
        self.wait_healthy();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    /// The RTMP port.
    pub fn rtmp_port(&self) -> u16 {
        self.rtmp_port
    }

    /// Starts an edge with [`demo_config`].
    pub fn start_demo() -> EdgeProcess {
        Self::start(&demo_config())
    }

    fn wait_healthy(&mut self) {
        let client = http_client();
        let url = self.url("/healthz");
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "edge exited during start-up with {status}\n--- config ---\n{}\n--- log {} ---\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.log.display(),
                    self.log_tail(60)
                );
            }
            match client.get(&url).timeout(Duration::from_secs(1)).send() {
                Ok(resp) if resp.status() == 200 => return,
                Ok(resp) => last = format!("status {}", resp.status()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "edge not healthy after {HEALTH_TIMEOUT:?} ({last})\n--- log {} ---\n{}",
            self.log.display(),
            self.log_tail(60)
        );
    }

    /// The edge's process id (for `/proc/<pid>/stat`, e.g. the load tool's `--server-pid`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>` (`https` when the edge serves TLS).
    pub fn base_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.http_port)
    }

    /// `base_url() + path`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The first of the [`SHARDS`] UDP ports.
    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Panics with the log tail if the edge has exited (a crash mid-test).
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "edge exited with {status}\n--- log {} ---\n{}",
                self.log.display(),
                self.log_tail(80)
            );
        }
    }

    /// `GET /api/v1/streams/{name}` as JSON, or `None` on a non-200.
    pub fn stream_info(&self, name: &str) -> Option<serde_json::Value> {
        let resp = http_client()
            .get(self.url(&format!("/api/v1/streams/{name}")))
            .send()
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json().ok()
    }

    /// The sum of the edge's `/metrics` samples of `name` that carry every label of `labels`
    /// (`key="value"`); 0 when there are none.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = http_client()
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        metric_in(&text, name, labels).unwrap_or(0.0)
    }
}

/// The sum of the samples of `name` in a Prometheus text exposition that carry every label of
/// `labels` (`key="value"`).
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- edge log {} (tail) ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}
