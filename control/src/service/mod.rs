//! The Service: who may publish which stream. Every input asks it before any media is accepted.
//!
//! Owns the key check and the stream name a key resolves to; owns no sockets and no sessions.
//! Keys are secrets: they are never logged and never leave this module.

mod static_keys;

use crate::error::{Error, Result};
use serde::Deserialize;
pub use static_keys::StreamKeyEntry;

/// `[service]` in the config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Which Service answers.
    #[serde(default)]
    pub kind: ServiceKind,
    /// Streams and their keys, for `static`.
    #[serde(default)]
    pub streams: Vec<StreamKeyEntry>,
}

/// The kinds of Service.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Anyone may publish anything: for local use only, and announced loudly at start.
    #[default]
    Open,
    /// Keys listed in the config file.
    Static,
}

/// What a publisher presents.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    /// The stream named in the URL, when the URL names one.
    pub stream: Option<&'a str>,
    /// The stream key (bearer token), when one was sent.
    pub key: Option<&'a str>,
}

/// Decides who may publish.
#[derive(Debug, Clone)]
pub struct Service {
    config: ServiceConfig,
}

impl Service {
    /// A Service from its config; checks the static entries are usable.
    pub fn new(config: ServiceConfig) -> std::result::Result<Self, String> {
        for entry in &config.streams {
            entry.validate()?;
        }
        if config.kind == ServiceKind::Static && config.streams.is_empty() {
            return Err("service.kind = \"static\" needs at least one [[service.streams]]".into());
        }
        Ok(Self { config })
    }

    /// Whether anyone may publish.
    pub fn is_open(&self) -> bool {
        self.config.kind == ServiceKind::Open
    }

    /// The configured stream entries (names and FTL channels; keys stay inside).
    pub fn streams(&self) -> &[StreamKeyEntry] {
        &self.config.streams
    }

    /// The stream and key of an FTL channel: FTL proves the key with an HMAC over a challenge,
    /// so the key itself is needed (a `key_sha256` entry cannot publish over FTL).
    pub fn ftl_channel(&self, channel: u32) -> Option<(String, String)> {
        self.config
            .streams
            .iter()
            .find(|e| e.ftl_channel == Some(channel))
            .and_then(|e| e.clear_key().map(|k| (e.name.clone(), k.to_owned())))
    }

    /// The public name of the stream this publisher may publish, or why not.
    pub fn authorize_publish(&self, request: PublishRequest<'_>) -> Result<String> {
        let key = request.key.filter(|k| !k.is_empty());
        match self.config.kind {
            ServiceKind::Open => match (request.stream, key) {
                (Some(stream), _) => Ok(stream.to_owned()),
                (None, Some(key)) => Ok(key.to_owned()),
                (None, None) => Err(Error::MissingKey),
            },
            ServiceKind::Static => {
                let key = key.ok_or(Error::MissingKey)?;
                let entry = self
                    .config
                    .streams
                    .iter()
                    .find(|entry| entry.matches(key))
                    .ok_or(Error::InvalidKey)?;
                match request.stream {
                    Some(stream) if stream != entry.name => Err(Error::InvalidKey),
                    _ => Ok(entry.name.clone()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
