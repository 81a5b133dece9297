//! Typed configuration of the parts the control owns: the WebRTC engine, the Service and
//! viewers. The edge embeds these in its own file format; defaults run a single local edge.

use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// `[webrtc]`: the engine's sockets, shards and advertised addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// First UDP port; shard `i` listens on `udp_port + i`.
    pub udp_port: u16,
    /// Number of shards; 0 means one per core.
    pub shards: usize,
    /// NAT 1:1 address advertised as the only candidate address when set.
    pub public_ip: Option<IpAddr>,
    /// Local addresses to bind media sockets to; empty means every local interface address.
    pub bind_ips: Vec<IpAddr>,
    /// STUN/TURN URLs handed to clients in `Link` headers.
    pub ice_servers: Vec<String>,
    /// Seal and send viewers' media in the shard once each viewer's SRTP key is proven, past
    /// the WebRTC library's write path (see `engine/direct.rs`); false keeps every packet on
    /// the library's path (slower, for comparison).
    pub direct_send: bool,
    /// Packets a second one shard may send before it counts as saturated and refuses new
    /// viewers; 0 leaves it to the shard's own measurement (busy time, lag).
    pub shard_max_pps: u64,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            udp_port: 8189,
            shards: 0,
            public_ip: None,
            bind_ips: Vec::new(),
            ice_servers: Vec::new(),
            direct_send: true,
            shard_max_pps: 0,
        }
    }
}

/// `[viewers]`: how viewers are held.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    /// How long viewers stay connected after their publisher vanished, waiting for it to return.
    pub reconnect_grace_secs: u64,
    /// Packets a shard may hold for its viewers before it drops (and counts) new ones.
    pub queue_packets: usize,
    /// No packet older than this (since the node received it) is sent to a viewer: a shard
    /// that falls behind skips its viewers' video to the next keyframe instead. 0: no bound.
    pub max_delay_ms: u64,
    /// Viewer sessions one client (an IPv4 address or IPv6 /64) may have answered and not yet
    /// connected; `429` past it. 0: no cap.
    pub max_connecting_per_ip: u32,
    /// Viewer sessions the node may have answered and not yet connected, from all clients;
    /// `503` past it. 0: no cap.
    pub max_connecting: u32,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        Self {
            reconnect_grace_secs: 15,
            queue_packets: 4096,
            max_delay_ms: 300,
            max_connecting_per_ip: 32,
            max_connecting: 1024,
        }
    }
}

impl ViewerConfig {
    /// The grace period as a duration.
    pub fn reconnect_grace(&self) -> Duration {
        Duration::from_secs(self.reconnect_grace_secs)
    }

    /// The delay bound as a duration; 0 in the file means no bound (an hour stands for it).
    pub fn max_delay(&self) -> Duration {
        match self.max_delay_ms {
            0 => Duration::from_secs(3600),
            ms => Duration::from_millis(ms),
        }
    }
}
