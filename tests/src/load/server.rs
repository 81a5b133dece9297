//! An edge the load tool starts itself (`waveguide-load bench`, and `churn` without `--whep`):
//! the real `waveguide-edge` binary with a generated config on free loopback ports, optionally
//! pinned to one core, killed when dropped. Also the CPU-pinning helpers the bench uses.

use super::error::LoadError;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use reqwest::Url;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the edge may take to answer `/healthz`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// The stream and key the generated config publishes.
pub const STREAM: &str = "demo";
pub const KEY: &str = "demo-key";

/// Pins the calling thread (and the threads and processes it starts afterwards) to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), LoadError> {
    pin_current_thread_to(&[core])
}

/// Pins the calling thread (and what it starts afterwards) to the set `cores`.
pub fn pin_current_thread_to(cores: &[usize]) -> Result<(), LoadError> {
    let mut set = CpuSet::new();
    for &core in cores {
        set.set(core)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// The cores this process may run on.
pub fn allowed_cores() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return vec![];
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// What edge to start.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    /// The `waveguide-edge` binary.
    pub bin: PathBuf,
    /// `[webrtc] shards`.
    pub shards: u16,
    /// Cores to pin the edge (every thread) to; empty: not pinned.
    pub cores: Vec<usize>,
    /// `[webrtc] direct_send`: false sends every packet through `rtc`'s write path.
    pub direct_send: bool,
    /// Where the config and the log go.
    pub dir: PathBuf,
}

impl EdgeSpec {
    /// `<target>/release/waveguide-edge`, logs under `<target>/waveguide-load/`.
    pub fn new() -> Self {
        Self {
            bin: crate::target_dir().join("release/waveguide-edge"),
            shards: 1,
            cores: Vec::new(),
            direct_send: true,
            dir: crate::target_dir().join("waveguide-load"),
        }
    }
}

impl Default for EdgeSpec {
    fn default() -> Self {
        Self::new()
    }
}

/// The config: static key `demo`/`demo-key`, loopback only, no rate limit on POSTs and no cap
/// on viewers still connecting per client (a ramp is hundreds of POSTs from one address, and
/// joins slow down at the limit being measured), no gRPC, RTMP or FTL listeners.
pub fn config_toml(http_port: u16, udp_port: u16, spec: &EdgeSpec) -> String {
    let EdgeSpec {
        shards,
        direct_send,
        ..
    } = spec;
    format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [webrtc]\nudp_port = {udp_port}\nshards = {shards}\ndirect_send = {direct_send}\n\
         public_ip = \"127.0.0.1\"\n\
         bind_ips = [\"127.0.0.1\"]\n\n\
         [service]\nkind = \"static\"\n\n\
         [[service.streams]]\nname = \"{STREAM}\"\nkey = \"{KEY}\"\n\n\
         [viewers]\nmax_connecting_per_ip = 0\n\n\
         [limits]\nposts_per_minute = 0\n\n\
         [grpc]\nenabled = false\n\n\
         [rtmp]\nenabled = false\n\n\
         [ftl]\nenabled = false\n\n\
         [relay]\nenabled = false\n"
    )
}

/// A running edge; killed (SIGKILL) and reaped on drop.
pub struct SpawnedEdge {
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl SpawnedEdge {
    /// Writes the config, spawns the edge (pinned when asked) and waits for `/healthz`.
    pub fn start(spec: &EdgeSpec) -> Result<Self, LoadError> {
        if !spec.bin.is_file() {
            return Err(LoadError::Edge(format!(
                "{} not found: run `cargo build --release -p waveguide-edge` or pass --edge-bin",
                spec.bin.display()
            )));
        }
        std::fs::create_dir_all(&spec.dir)?;
        let http_port = crate::ports::free_port();
        let udp_port = crate::ports::free_port_block(spec.shards.max(1));
        let stem = format!("edge-{}-{http_port}", std::process::id());
        let config_path = spec.dir.join(format!("{stem}.toml"));
        let log = spec.dir.join(format!("{stem}.log"));
        std::fs::write(&config_path, config_toml(http_port, udp_port, spec))?;
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut command = Command::new(&spec.bin);
        command
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = if spec.cores.is_empty() {
            command.spawn()?
        } else {
            // The child inherits the mask of the thread that forks it: pin this thread for
            // the spawn, then put it back.
            let before = sched_getaffinity(Pid::from_raw(0))?;
            pin_current_thread_to(&spec.cores)?;
            let child = command.spawn();
            sched_setaffinity(Pid::from_raw(0), &before)?;
            child?
        };
        let mut edge = SpawnedEdge {
            child,
            http_port,
            log,
        };
        edge.wait_healthy()?;
        Ok(edge)
    }

    fn wait_healthy(&mut self) -> Result<(), LoadError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let url = self.url("/healthz");
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LoadError::Edge(format!(
                    "exited during start-up with {status}; log {}:\n{}",
                    self.log.display(),
                    self.log_tail(30)
                )));
            }
            if client
                .get(url.clone())
                .send()
                .is_ok_and(|r| r.status().as_u16() == 200)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(LoadError::Edge(format!(
            "not healthy within {HEALTH_TIMEOUT:?}; log {}",
            self.log.display()
        )))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> Url {
        // Always a valid URL: a fixed scheme and host, a port, and a path starting with '/'.
        Url::parse(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .unwrap_or_else(|e| unreachable!("url {path}: {e}"))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the edge's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SpawnedEdge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_toml_with_the_bench_settings() {
        let spec = EdgeSpec {
            shards: 2,
            ..EdgeSpec::new()
        };
        let text = config_toml(18080, 18189, &spec);
        let root: toml::Table = text.parse().expect("toml");
        assert_eq!(root["webrtc"]["shards"].as_integer(), Some(2));
        assert_eq!(root["limits"]["posts_per_minute"].as_integer(), Some(0));
        assert_eq!(
            root["viewers"]["max_connecting_per_ip"].as_integer(),
            Some(0)
        );
        assert_eq!(root["grpc"]["enabled"].as_bool(), Some(false));
        assert_eq!(root["service"]["streams"][0]["key"].as_str(), Some(KEY));
    }

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!allowed_cores().is_empty());
    }
}
