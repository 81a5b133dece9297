//! [`OrchestratorProcess`]: the real `waveguide-orchestrator` binary, and [`RedisProcess`], a
//! real `redis-server`, for the cluster tests. Both are killed (SIGKILL) on drop.

use crate::process::{new_log_path, spawn_logged, tail};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Path of the orchestrator binary: `WAVEGUIDE_ORCHESTRATOR_BIN`, else
/// `<target>/release/waveguide-orchestrator`.
pub fn orchestrator_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("WAVEGUIDE_ORCHESTRATOR_BIN") {
        return PathBuf::from(bin);
    }
    crate::target_dir().join("release/waveguide-orchestrator")
}

/// A running orchestrator. The config names its ports (`[http] listen`, `[grpc] listen`):
/// edges are configured with them before it starts, and a restart keeps them.
pub struct OrchestratorProcess {
    child: Child,
    http: String,
    log: PathBuf,
    config_path: PathBuf,
}

impl OrchestratorProcess {
    /// Writes `config_toml`, spawns the orchestrator and waits for `/healthz`.
    pub fn start(config_toml: &str) -> OrchestratorProcess {
        let bin = orchestrator_binary();
        assert!(
            bin.is_file(),
            "orchestrator binary {} not found: run `cargo build --release -p waveguide-orchestrator`",
            bin.display()
        );
        let root: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("orchestrator config is not TOML: {e}\n{config_toml}"));
        let http = root
            .get("http")
            .and_then(|h| h.get("listen"))
            .and_then(|l| l.as_str())
            .expect("the cluster test names [http] listen")
            .to_owned();
        let scheme = if root.get("http").and_then(|h| h.get("tls_cert")).is_some() {
            "https"
        } else {
            "http"
        };
        let log = new_log_path("orchestrator");
        let config_path = log.with_extension("toml");
        std::fs::write(&config_path, config_toml)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let child = spawn_logged(&bin, ["--config".as_ref(), config_path.as_os_str()], &log);
        let mut o = OrchestratorProcess {
            child,
            http: format!("{scheme}://{http}"),
            log,
            config_path,
        };
        o.wait_healthy();
        o
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.http
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts it again with the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_logged(
            &orchestrator_binary(),
            ["--config".as_ref(), self.config_path.as_os_str()],
            &self.log,
        );
        self.wait_healthy();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    fn wait_healthy(&mut self) {
        let client = crate::edge::http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "orchestrator exited during start-up with {status}\n{}",
                    self.log_tail(60)
                );
            }
            match client.get(self.url("/readyz")).send() {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "orchestrator not ready after 20 s ({last})\n{}",
            self.log_tail(60)
        );
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- orchestrator log {} (tail) ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

/// A throwaway `redis-server` on a free port, without persistence.
pub struct RedisProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl RedisProcess {
    /// Starts it and waits until it accepts connections.
    pub fn start() -> RedisProcess {
        let port = crate::ports::free_port();
        let log = new_log_path("redis");
        let child = Self::spawn(port, &log);
        RedisProcess { child, port, log }
    }

    /// SIGKILL: every key is lost (no persistence).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.log);
    }

    fn spawn(port: u16, log: &Path) -> Child {
        let port_text = port.to_string();
        let child = spawn_logged(
            Path::new("redis-server"),
            [
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            log,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}: {}",
                tail(log, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
