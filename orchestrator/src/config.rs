//! The orchestrator's configuration: one TOML file (`--config FILE`), every key overridable by a
//! `WAVEGUIDE_<SECTION>_<KEY>` environment variable (`WAVEGUIDE_CLUSTER_TOKEN=...`), the common
//! ones by flags (applied by `main`). Precedence: flags > environment > file > defaults.
//!
//! Owns the typed shape of the file, its loading and its validation. Unknown keys are refused
//! (the error names them) so a typo is reported at start instead of silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use waveguide_control::config_file::{ConfigFileError, read_with_env};
use waveguide_control::serve::ConnectionLimits;
use waveguide_control::service::ServiceConfig;

use crate::region::{RegionRule, Regions};
use crate::store::StoreConfig;

/// Every key, for `--help`.
pub const CONFIG_HELP: &str = "\
Config file keys (TOML; env WAVEGUIDE_<SECTION>_<KEY> overrides each; see deploy/orchestrator.example.toml):
  [http]     listen (0.0.0.0:8090), cors_origins ([] = any), tls_cert, tls_key,
             max_connections (8192; 0 = no cap), max_connections_per_ip (256, an IPv6 /64 is
             one client), header_read_timeout_secs (10)
  [grpc]     listen (0.0.0.0:50052): EventService, grpc.health.v1, reflection
  [cluster]  token (required: gRPC auth and redirect tickets), heartbeat_secs (1; a node silent
             for 3 heartbeats is dropped), ticket_ttl_secs (60)
  [admin]    token (bearer token of the admin endpoints; default: the cluster token)
  [service]  required: kind (\"static\" | \"webhook\" | \"open\"; no default: the orchestrator
             signs publish tickets that edges accept before their own key check, so it holds
             the keys), [[service.streams]] name, key | key_sha256; webhook: url,
             timeout_ms (2000), cache_ttl_secs (30)
  [store]    kind (\"memory\" | \"redis\"), url (redis://127.0.0.1:6379), prefix (\"waveguide:\")
  [[regions]] cidr = \"10.0.0.0/8\", region = \"eu\" (client network -> preferred region)
  [limits]   posts_per_minute (600 WHIP/WHEP POSTs per client IP, the TCP peer; 0 = off),
             posts_burst (100); past them: 429 with Retry-After
  [log]      format (\"text\" | \"json\"), filter (tracing filter; RUST_LOG wins)";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub cluster: ClusterConfig,
    pub admin: AdminConfig,
    /// Who may publish. Required, with an explicit `kind`: see [`Config::load`].
    pub service: Option<ServiceConfig>,
    pub store: StoreConfig,
    pub regions: Vec<RegionRule>,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// WHIP/WHEP redirects, the REST API, health and metrics.
    pub listen: SocketAddr,
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
            listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: ConnectionLimits::default().max_connections,
            max_connections_per_ip: ConnectionLimits::default().max_connections_per_ip,
            header_read_timeout_secs: ConnectionLimits::default().header_read_timeout.as_secs(),
        }
    }
}

/// `[grpc]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `waveguide.v1.EventService`, `grpc.health.v1.Health` and reflection.
    pub listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, gRPC is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 50052)),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The shared secret of orchestrators and edges: gRPC auth and redirect tickets.
    pub token: String,
    /// The heartbeat interval asked of nodes; a node silent for three is dropped.
    pub heartbeat_secs: u64,
    /// How long a redirect ticket stays valid.
    pub ticket_ttl_secs: u64,
    /// PEM CA certificate(s) that sign the edges' gRPC certificates (`https://` grpc URLs).
    /// Unset: the public web PKI roots.
    pub ca_cert: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            heartbeat_secs: 1,
            ticket_ttl_secs: 60,
            ca_cert: None,
        }
    }
}

impl ClusterConfig {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// Three heartbeats: how long a silent node is kept.
    pub fn node_expiry(&self) -> Duration {
        self.heartbeat() * 3
    }

    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_secs(self.ticket_ttl_secs)
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of the admin endpoints; the cluster token when unset.
    pub token: Option<String>,
}

/// `[limits]`: what one client may ask of the orchestrator, as on the edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// WHIP/WHEP POSTs per minute per client IP address (0: no limit); `429` past it. The
    /// address is the TCP peer: behind a proxy that does not keep it, all clients share one.
    pub posts_per_minute: u32,
    /// POSTs one address may make at once before the per-minute rate applies.
    pub posts_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        // The edge's defaults: every redirected POST is re-sent to an edge, so both hops refuse
        // a client at the same rate.
        Self {
            posts_per_minute: 600,
            posts_burst: 100,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info,waveguide_orchestrator=debug`; `RUST_LOG` wins.
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The refusal of a configuration without `[service] kind`.
const SERVICE_KIND_REQUIRED: &str = "service.kind is required: the orchestrator checks publishers' \
     keys and signs the publish tickets edges accept, so it must hold the same keys as the edges. \
     Set [service] kind = \"static\" (with [[service.streams]]) or \"webhook\" (or \"open\" for \
     local use only), or WAVEGUIDE_SERVICE_KIND";

/// Why the configuration cannot be used.
pub type ConfigError = ConfigFileError;

/// The sections an environment variable may set (`[[regions]]` is a list: file only).
const ENV_SECTIONS: &[&str] = &[
    "http", "grpc", "cluster", "admin", "service", "store", "limits", "log",
];

impl Config {
    /// Reads the file (if any) and applies environment overrides. Call [`Config::validate`]
    /// once flags are applied too.
    pub fn load(
        path: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = read_with_env(path, env, ENV_SECTIONS)?;
        // The edges accept the orchestrator's publish tickets before their own key check, so
        // an implicit `open` here would publish any stream on a keyed edge: no default kind.
        let kind_given = table.get("service").and_then(|s| s.get("kind")).is_some();
        let config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(format!("config: {e}")))?;
        if !kind_given {
            return Err(ConfigError::Invalid(SERVICE_KIND_REQUIRED.to_owned()));
        }
        Ok(config)
    }

    /// Refuses what cannot run: no `[service]`, no cluster token, a zero interval, a bad
    /// region network.
    pub fn validate(&self) -> Result<Regions, ConfigError> {
        if self.service.is_none() {
            return Err(ConfigError::Invalid(SERVICE_KIND_REQUIRED.to_owned()));
        }
        if self.cluster.token.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.token is required (the secret shared with every edge: gRPC auth and \
                 redirect tickets); set it in [cluster] or WAVEGUIDE_CLUSTER_TOKEN"
                    .to_owned(),
            ));
        }
        if self.cluster.heartbeat_secs == 0 {
            return Err(ConfigError::Invalid(
                "cluster.heartbeat_secs must be at least 1".to_owned(),
            ));
        }
        if self.cluster.ticket_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "cluster.ticket_ttl_secs must be at least 1".to_owned(),
            ));
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::Invalid(
                "admin.token is empty; remove it to use the cluster token".to_owned(),
            ));
        }
        Regions::new(&self.regions).map_err(ConfigError::Invalid)
    }

    /// The admin bearer token: `[admin] token`, else the cluster token.
    pub fn admin_token(&self) -> &str {
        self.admin.token.as_deref().unwrap_or(&self.cluster.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKind;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "wg-orchestrator-config-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("orchestrator.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(Some(&file), std::iter::empty())
    }

    #[test]
    fn defaults_need_a_service_kind_and_a_cluster_token() {
        let err = Config::load(None, std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("service.kind is required"), "{err}");
        let err = parse("[service]\n[[service.streams]]\nname = \"a\"\nkey = \"k\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service.kind"),
            "a [service] without kind: {err}"
        );
        let mut config = Config::load(None, env(&[("WAVEGUIDE_SERVICE_KIND", "open")])).unwrap();
        assert_eq!(
            config.http.listen,
            "0.0.0.0:8090".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.grpc.listen,
            "0.0.0.0:50052".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.cluster.heartbeat_secs, 1);
        assert_eq!(config.cluster.ticket_ttl_secs, 60);
        assert_eq!(config.store.kind, StoreKind::Memory);
        assert_eq!(config.store.url, "redis://127.0.0.1:6379");
        assert_eq!(config.store.prefix, "waveguide:");
        assert_eq!(config.limits.posts_per_minute, 600);
        assert_eq!(config.limits.posts_burst, 100);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.token"), "{err}");
        config.cluster.token = "t".to_owned();
        config.validate().unwrap();
        config.service = None;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("service.kind"), "{err}");
    }

    #[test]
    fn file_and_environment_merge() {
        let dir = std::env::temp_dir().join(format!("wg-orch-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("o.toml");
        std::fs::write(
            &file,
            "[cluster]\ntoken = \"from-file\"\n[store]\nkind = \"redis\"\n[service]\nkind = \"open\"\n\
             [[regions]]\ncidr = \"10.0.0.0/8\"\nregion = \"eu\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("WAVEGUIDE_CLUSTER_TOKEN", "from-env"),
                ("WAVEGUIDE_CLUSTER_HEARTBEAT_SECS", "2"),
                ("WAVEGUIDE_GRPC_LISTEN", "127.0.0.1:15052"),
                ("WAVEGUIDE_STORE_PREFIX", "test:"),
                ("WAVEGUIDE_LIMITS_POSTS_PER_MINUTE", "0"),
                ("WAVEGUIDE_CONFIG", "ignored.toml"),
                ("WAVEGUIDE_WEBRTC_UDP_PORT", "9000"),
            ]),
        )
        .unwrap();
        assert_eq!(config.cluster.token, "from-env");
        assert_eq!(config.cluster.node_expiry(), Duration::from_secs(6));
        assert_eq!(config.grpc.listen.port(), 15052);
        assert_eq!(config.store.kind, StoreKind::Redis);
        assert_eq!(config.store.prefix, "test:");
        assert_eq!(config.limits.posts_per_minute, 0, "0 turns the limit off");
        assert_eq!(config.limits.posts_burst, 100);
        assert_eq!(config.admin_token(), "from-env");
        let regions = config.validate().unwrap();
        assert_eq!(regions.region_of("10.9.9.9".parse().unwrap()), Some("eu"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = parse("[http]\nlisten_addr = \"0.0.0.0:9000\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = parse("[store]\nkind = \"etcd\"\n").unwrap_err().to_string();
        assert!(err.contains("etcd"), "{err}");
        let err = Config::load(None, env(&[("WAVEGUIDE_CLUSTER_TOKN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokn"), "{err}");
        let config =
            parse("[cluster]\ntoken = \"t\"\n[service]\nkind = \"open\"\n[[regions]]\ncidr = \"nope\"\nregion = \"eu\"\n")
                .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    /// The documented example must stay loadable, key for key.
    #[test]
    fn example_config_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/orchestrator.example.toml");
        let config = Config::load(Some(&path), std::iter::empty()).unwrap();
        config.validate().unwrap();
        assert_eq!(config.http.listen.port(), 8090);
        assert_eq!(config.grpc.listen.port(), 50052);
        assert!(!config.regions.is_empty());
        assert_eq!(config.admin_token(), "change-me-admin");
    }
}
