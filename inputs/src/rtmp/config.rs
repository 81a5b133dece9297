//! `[rtmp]` in the edge's config file.

use serde::Deserialize;
use std::net::SocketAddr;

/// `[rtmp]`: where OBS and ffmpeg publish (`rtmp://HOST:1935/live/<stream key>`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Listen address of the RTMP server.
    pub listen: SocketAddr,
    /// Whether the RTMP server runs.
    pub enabled: bool,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            enabled: true,
        }
    }
}
