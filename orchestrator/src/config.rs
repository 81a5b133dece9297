//! The orchestrator's configuration file (`--config FILE`, TOML).
//!
//! Owns the typed shape of the file and its loading; precedence between the file, environment
//! variables and flags is decided in `main`. Unknown keys are refused so a typo is reported
//! instead of silently ignored.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The HTTP address used when neither the file nor a flag sets one.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8090));

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` are served; [`DEFAULT_HTTP_LISTEN`] if unset.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The source (toml's message) names the offending key and line.
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.http.listen, None);
        assert_eq!(config.log.format, None);
    }

    #[test]
    fn reads_every_key() {
        let config =
            Config::parse("[http]\nlisten = \"0.0.0.0:9000\"\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(config.http.listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(config.log.format, Some(LogFormat::Json));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::parse("[http]\nlisten_addr = \"0.0.0.0:9000\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = Config::parse("[http]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
