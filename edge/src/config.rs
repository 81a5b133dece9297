//! The edge's configuration: one TOML file, every key overridable by a `WAVEGUIDE_<SECTION>_<KEY>`
//! environment variable, the common ones by flags. Unknown keys are an error that names them.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use waveguide_control::config::{ViewerConfig, WebRtcConfig};
use waveguide_control::service::ServiceConfig;
use waveguide_inputs::ftl::FtlConfig;
use waveguide_inputs::rtmp::RtmpConfig;

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
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: None,
            cors_origins: Vec::new(),
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
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file, an environment override or a flag is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Environment variables override keys: `WAVEGUIDE_WEBRTC_UDP_PORT=9000` sets `webrtc.udp_port`.
const ENV_PREFIX: &str = "WAVEGUIDE_";

/// Reads the file (if any), applies environment overrides, then checks every key.
pub fn load(
    path: Option<&std::path::Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<EdgeConfig, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("config file: {e}")))?;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let section = section.to_ascii_lowercase();
        if !matches!(
            section.as_str(),
            "http" | "webrtc" | "service" | "viewers" | "log" | "ftl" | "rtmp"
        ) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Invalid(format!("`{section}` must be a table")));
        };
        section_table.insert(key, env_value(&value));
    }
    EdgeConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| ConfigError::Invalid(format!("config: {e}")))
}

/// An environment value as TOML: numbers, booleans and arrays keep their type, anything else
/// is a string.
fn env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
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

    #[test]
    fn env_only_unknown_key_is_named() {
        let env = vec![("WAVEGUIDE_WEBRTC_UDP_PROT".to_owned(), "1".to_owned())];
        let err = load(None, env.into_iter()).unwrap_err().to_string();
        assert!(err.contains("udp_prot"), "{err}");
    }
}
