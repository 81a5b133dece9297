//! The edge's configuration: one TOML file, every key overridable by a `WAVEGUIDE_<SECTION>_<KEY>`
//! environment variable, the common ones by flags. Unknown keys are an error that names them.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use waveguide_control::config::{ViewerConfig, WebRtcConfig};
use waveguide_control::config_file::{ConfigFileError, read_with_env};
use waveguide_control::serve::ConnectionLimits;
use waveguide_control::service::ServiceConfig;
use waveguide_inputs::ftl::FtlConfig;
use waveguide_inputs::rtmp::RtmpConfig;
use waveguide_outputs::record::RecordConfig;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// `[http]`
    pub http: HttpConfig,
    /// `[webrtc]`
    pub webrtc: WebRtcConfig,
    /// `[service]`
    pub service: ServiceConfig,
    /// `[viewers]`
    pub viewers: ViewerConfig,
    /// `[ftl]`
    pub ftl: FtlConfig,
    /// `[rtmp]`
    pub rtmp: RtmpConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[grpc]`
    pub grpc: GrpcConfig,
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[orchestrator]`
    pub orchestrator: OrchestratorConfig,
    /// `[node]`
    pub node: NodeConfig,
    /// `[relay]`
    pub relay: RelaySettings,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[record]`
    pub record: RecordConfig,
}

/// `[limits]`: what one client may ask of the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// WHIP/WHEP POSTs per minute per client IP address (0: no limit); `429` past it.
    pub posts_per_minute: u32,
    /// POSTs one address may make at once before the per-minute rate applies.
    pub posts_burst: u32,
    /// gRPC `Signal` streams opened per minute per client IP (0: no limit);
    /// `RESOURCE_EXHAUSTED` past it.
    pub signals_per_minute: u32,
    /// `Signal` streams one address may open at once before the per-minute rate applies.
    pub signals_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            posts_per_minute: 600,
            posts_burst: 100,
            signals_per_minute: 120,
            signals_burst: 30,
        }
    }
}

/// `[grpc]`: the node's gRPC server (ModuleService, EntityService, health, reflection).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Whether to serve gRPC at all.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// The URL the orchestrator reaches this server at; derived from `listen` if unset.
    pub public_url: Option<String>,
    /// PEM certificate chain: with `tls_key`, gRPC is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            public_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[cluster]`: the shared secret of the cluster.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Authenticates gRPC calls both ways and signs redirect tickets. Unset: a standalone
    /// edge that accepts no gRPC calls and no tickets.
    pub token: Option<String>,
    /// PEM CA certificate(s) that sign the orchestrator's gRPC certificate, for an `https://`
    /// `[orchestrator] grpc`. Unset: the public web PKI roots.
    pub ca_cert: Option<PathBuf>,
}

/// `[orchestrator]`: where this edge reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// The orchestrator's HTTP base URL (the relay asks it where a stream is). Unset: no relay.
    pub url: Option<String>,
    /// The orchestrator's gRPC URL (EventService). Unset: the edge reports to no one.
    pub grpc: Option<String>,
    /// Seconds between load heartbeats.
    pub heartbeat_secs: f64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            url: None,
            grpc: None,
            heartbeat_secs: 1.0,
        }
    }
}

/// `[node]`: who this edge is in the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Stable id; the host name when unset.
    pub id: Option<String>,
    /// Placement label for "nearest" selection.
    pub region: String,
    /// Base URL publishers and viewers reach; `[http] public_url` or the listen address when
    /// unset.
    pub public_url: Option<String>,
    /// `"ingest"` (takes publishers), `"edge"` (serves viewers, relays), or both.
    pub roles: Vec<NodeRole>,
    /// End viewers this node takes; 0: none of its own (relay pulls from other edges are
    /// still served). Unset: no limit.
    pub max_viewers: Option<u32>,
    /// Egress ceiling the orchestrator measures load against; 0: no limit.
    pub max_egress_mbps: u64,
    /// Publishers this node takes; unset: no limit.
    pub max_publishers: Option<u32>,
    /// On SIGTERM (or gRPC `Shutdown` without a grace), how long sessions may continue before
    /// they are closed and the process exits; it exits sooner once empty.
    pub drain_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            region: String::new(),
            public_url: None,
            roles: vec![NodeRole::Ingest, NodeRole::Edge],
            max_viewers: None,
            max_egress_mbps: 0,
            max_publishers: None,
            drain_secs: 30,
        }
    }
}

/// What a node is for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Takes publishers (WHIP, RTMP, FTL).
    Ingest,
    /// Serves viewers and pulls streams it lacks from other edges.
    Edge,
}

/// `[relay]`: pulling streams from other edges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Whether a viewer of a missing stream makes this edge pull it (needs `[orchestrator] url`
    /// and `[cluster] token`).
    pub enabled: bool,
    /// How long a pull outlives its last local viewer.
    pub idle_grace_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_grace_secs: 30,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server (WHIP, WHEP, player, API, metrics).
    pub listen: SocketAddr,
    /// Base URL used in `Location` headers and printed at start; derived from `Host` if unset.
    pub public_url: Option<String>,
    /// Origins allowed by CORS; empty means any (`*`).
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Connections open at once, all clients (0: no cap); past it new ones are closed.
    pub max_connections: usize,
    /// Connections open at once from one IPv4 address or IPv6 /64 (0: no cap).
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers (TLS handshake included), and that an
    /// idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
}

impl HttpConfig {
    /// What one connection may hold, for `serve`.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: None,
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: ConnectionLimits::default().max_connections,
            max_connections_per_ip: ConnectionLimits::default().max_connections_per_ip,
            header_read_timeout_secs: ConnectionLimits::default().header_read_timeout.as_secs(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info,waveguide_control=debug`; `RUST_LOG` wins when set.
    pub filter: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the configuration cannot be used.
pub type ConfigError = ConfigFileError;

/// The sections environment variables may set.
const ENV_SECTIONS: &[&str] = &[
    "http",
    "webrtc",
    "service",
    "viewers",
    "log",
    "ftl",
    "rtmp",
    "grpc",
    "cluster",
    "orchestrator",
    "node",
    "relay",
    "limits",
    "record",
];

/// Reads the file (if any), applies environment overrides, then checks every key.
pub fn load(
    path: Option<&std::path::Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<EdgeConfig, ConfigError> {
    let table = read_with_env(path, env, ENV_SECTIONS)?;
    EdgeConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| ConfigError::Invalid(format!("config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_env_merge_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("wg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edge.toml");
        std::fs::write(
            &file,
            "[http]\nlisten = \"127.0.0.1:8080\"\n[webrtc]\nudp_port = 8189\npublic_ip = \"127.0.0.1\"\n[service]\nkind = \"static\"\n[[service.streams]]\nname = \"demo\"\nkey = \"demo-key\"\nftl_channel = 1234\n",
        )
        .unwrap();
        let env = vec![("WAVEGUIDE_WEBRTC_UDP_PORT".to_owned(), "9000".to_owned())];
        let c = load(Some(&file), env.into_iter()).unwrap();
        assert_eq!(c.webrtc.udp_port, 9000);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.service.streams[0].name, "demo");

        std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n").unwrap();
        let err = load(Some(&file), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lsiten"), "{err}");
    }

    /// The documented example must stay loadable, key for key.
    #[test]
    fn example_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/edge.example.toml");
        let c = load(Some(&path), std::iter::empty()).unwrap();
        assert_eq!(c.webrtc.udp_port, 8189);
    }

    /// The cluster keys exactly as the issue and the README show them.
    #[test]
    fn cluster_config_loads() {
        let text = r#"
[http]
listen = "127.0.0.1:18081"
[grpc]
listen = "127.0.0.1:15061"
[rtmp]
listen = "127.0.0.1:11936"
[ftl]
listen = "127.0.0.1:18084"
[webrtc]
udp_port = 18200
public_ip = "127.0.0.1"
[cluster]
token = "cluster-secret"
[orchestrator]
url = "http://127.0.0.1:18090"
grpc = "http://127.0.0.1:15052"
[node]
id = "edge-a"
region = "eu"
public_url = "http://127.0.0.1:18081"
roles = ["ingest"]
max_viewers = 0
max_egress_mbps = 1000
"#;
        let dir = std::env::temp_dir().join(format!("wg-cluster-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edge.toml");
        std::fs::write(&file, text).unwrap();
        let c = load(Some(&file), std::iter::empty()).unwrap();
        assert_eq!(c.node.roles, vec![NodeRole::Ingest]);
        assert_eq!(c.node.max_viewers, Some(0));
        assert_eq!(c.cluster.token.as_deref(), Some("cluster-secret"));
        assert_eq!(c.grpc.listen.port(), 15061);
    }

    #[test]
    fn env_only_unknown_key_is_named() {
        let env = vec![("WAVEGUIDE_WEBRTC_UDP_PROT".to_owned(), "1".to_owned())];
        let err = load(None, env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("udp_prot"), "{err}");
    }
}
