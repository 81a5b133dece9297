//! `[rtmp]` in the edge's config file.

use serde::Deserialize;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

/// `[rtmp]`: where OBS and ffmpeg publish (`rtmp://HOST:1935/live/<stream key>`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Listen address of the RTMP server.
    pub listen: SocketAddr,
    /// Whether the RTMP server runs.
    pub enabled: bool,
    /// Connections served at once; more are closed at accept.
    pub max_connections: NonZeroUsize,
    /// Connections served at once from one client address (IPv6: one /64).
    pub max_connections_per_ip: NonZeroUsize,
    /// Seconds from accept until the stream key must have been accepted (`publish`): the
    /// handshake, `connect` and `publish` together, however slowly the bytes arrive.
    pub publish_timeout_secs: NonZeroU64,
}

impl RtmpConfig {
    /// [`Self::publish_timeout_secs`] as a duration.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_secs(self.publish_timeout_secs.get())
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            enabled: true,
            max_connections: NonZeroUsize::new(512).expect("512 is not zero"),
            max_connections_per_ip: NonZeroUsize::new(8).expect("8 is not zero"),
            publish_timeout_secs: NonZeroU64::new(10).expect("10 is not zero"),
        }
    }
}
