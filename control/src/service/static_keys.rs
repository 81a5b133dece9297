//! Keys kept in the config file, in clear or as SHA-256 hashes, compared in constant time.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One `[[service.streams]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamKeyEntry {
    /// Public stream name, used in `/whep/{name}` and `/watch/{name}`.
    pub name: String,
    /// The key in clear.
    #[serde(default)]
    pub(super) key: Option<String>,
    /// Lower-case hex SHA-256 of the key, for configs that must not hold the key itself.
    #[serde(default)]
    pub(super) key_sha256: Option<String>,
    /// FTL channel id of this stream.
    #[serde(default)]
    pub ftl_channel: Option<u32>,
}

// Keys must never reach a log line, so Debug shows only the name.
impl std::fmt::Debug for StreamKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamKeyEntry")
            .field("name", &self.name)
            .field("ftl_channel", &self.ftl_channel)
            .finish_non_exhaustive()
    }
}

impl StreamKeyEntry {
    /// An entry with a clear key (tests and programmatic configs).
    pub fn with_key(name: &str, key: &str) -> Self {
        Self {
            name: name.to_owned(),
            key: Some(key.to_owned()),
            key_sha256: None,
            ftl_channel: None,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || !crate::stream::is_valid_name(&self.name) {
            return Err(format!(
                "service.streams: invalid stream name {:?} (letters, digits, '-', '_', '.', at most 128)",
                self.name
            ));
        }
        match (&self.key, &self.key_sha256) {
            (Some(k), None) if !k.is_empty() => Ok(()),
            (None, Some(h)) if h.len() == 64 && hex::decode(h).is_ok() => Ok(()),
            (None, Some(_)) => Err(format!(
                "service.streams `{}`: key_sha256 must be 64 hex digits",
                self.name
            )),
            _ => Err(format!(
                "service.streams `{}`: set exactly one of key, key_sha256",
                self.name
            )),
        }
    }

    /// The key in clear, when the config holds it so.
    pub(crate) fn clear_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether `presented` is this entry's key, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        match (&self.key, &self.key_sha256) {
            (Some(key), _) => {
                // Compare hashes so the comparison length does not depend on the secret's length.
                let a = Sha256::digest(key.as_bytes());
                let b = Sha256::digest(presented.as_bytes());
                a.ct_eq(&b).into()
            }
            (None, Some(hash)) => {
                let Ok(expected) = hex::decode(hash) else {
                    return false;
                };
                let got = Sha256::digest(presented.as_bytes());
                expected.as_slice().ct_eq(got.as_slice()).into()
            }
            (None, None) => false,
        }
    }
}
