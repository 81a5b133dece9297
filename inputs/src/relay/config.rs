//! What the relay needs to know: where the orchestrator is, how this node proves it belongs to
//! the cluster, and how long pulls live without viewers or without an upstream.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// How long a pull outlives its last local viewer, unless configured.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(30);
/// How long a lost upstream is retried, unless configured. Matches the engine's default
/// reconnect grace, for which it holds the viewers of a stream whose publisher vanished.
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(15);

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The orchestrator's HTTP base URL, e.g. `http://127.0.0.1:18090`: the relay asks it
    /// where a stream is (`POST {url}/whep/{stream}?node={node_id}`).
    pub orchestrator_url: String,
    /// The cluster secret, sent as `Authorization: Bearer …` to the orchestrator and to the
    /// upstream edge. Never logged.
    pub cluster_token: String,
    /// This node's id, so the orchestrator does not send the pull back here.
    pub node_id: String,
    /// How long a pull lives on after its last local viewer left.
    pub idle_grace: Duration,
    /// How long a lost upstream is retried before the stream is left to expire.
    pub reconnect_grace: Duration,
    /// The local address of the relay's UDP sockets, e.g. `127.0.0.1`: one the upstream
    /// edges can reach. An unspecified address (`0.0.0.0`) binds every interface and
    /// announces the first non-loopback IPv4 address as the ICE host candidate.
    pub bind_ip: IpAddr,
    /// PEM CA certificate(s) trusted for an `https://` orchestrator or upstream edge, besides
    /// the public web PKI roots.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl RelayConfig {
    /// Settings with the default graces, binding to loopback.
    pub fn new(
        orchestrator_url: impl Into<String>,
        cluster_token: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Self {
        Self {
            orchestrator_url: orchestrator_url.into(),
            cluster_token: cluster_token.into(),
            node_id: node_id.into(),
            idle_grace: DEFAULT_IDLE_GRACE,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ca_cert_pem: None,
        }
    }
}
