//! The orchestrator's record of one node: who it is ([`NodeInfo`], from `NodeUp`), how loaded it
//! is ([`NodeLoad`], from the heartbeat), which streams it holds ([`StreamLocation`]) and what the
//! orchestrator observed about it (healthy, draining, last event sequence, last heartbeat).
//!
//! Owns these serde types (what the store keeps, in memory or as JSON in Redis) and their
//! conversion from the `waveguide.v1` messages. The prost types are never stored directly:
//! these mirror them with stable JSON names. Owns no I/O.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use waveguide_proto::v1;

/// One node as the orchestrator knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub info: NodeInfo,
    pub load: NodeLoad,
    /// Every stream the node holds, by name (relayed ones included).
    pub streams: BTreeMap<String, StreamLocation>,
    /// Accepts no new publishers or viewers.
    pub draining: bool,
    /// The last health probe answered SERVING or DRAINING (true until a probe says otherwise).
    pub healthy: bool,
    /// The sequence of the last event applied.
    pub last_sequence: u64,
    /// Events were missed: every answer asks the node to re-send `NodeUp` until it does.
    pub resync_required: bool,
    /// When the last heartbeat (or `NodeUp`) arrived, in Unix milliseconds.
    pub last_seen_ms: u64,
}

impl Node {
    /// A fresh record from `NodeUp`: healthy, not draining, seen now.
    pub fn announced(
        info: NodeInfo,
        streams: impl IntoIterator<Item = StreamLocation>,
        sequence: u64,
        now_ms: u64,
    ) -> Self {
        Self {
            info,
            load: NodeLoad::default(),
            streams: streams
                .into_iter()
                .map(|stream| (stream.name.clone(), stream))
                .collect(),
            draining: false,
            healthy: true,
            last_sequence: sequence,
            resync_required: false,
            last_seen_ms: now_ms,
        }
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    pub fn has(&self, capability: Capability) -> bool {
        self.info.capabilities.contains(&capability)
    }

    /// Whether the last heartbeat is younger than `max_age_ms`.
    pub fn is_fresh(&self, now_ms: u64, max_age_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) < max_age_ms
    }

    /// `"ingest"` when it takes any ingest protocol, `"edge"` when it serves WHEP viewers.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.info.capabilities.iter().any(|c| c.is_ingest()) {
            roles.push("ingest");
        }
        if self.has(Capability::EgressWhep) {
            roles.push("edge");
        }
        roles
    }

    /// Whether the node holds `stream` with its publisher (not as a relay).
    pub fn is_origin_of(&self, stream: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|s| s.protocol != Protocol::Relay)
    }

    /// Decides what to do with an event numbered `sequence` and records it.
    pub fn accept_sequence(&mut self, sequence: u64) -> SequenceVerdict {
        if sequence == 0 {
            // An unnumbered event: nothing to order it by.
            return SequenceVerdict::Apply;
        }
        if sequence <= self.last_sequence {
            return SequenceVerdict::Duplicate;
        }
        let gap = sequence > self.last_sequence + 1;
        self.last_sequence = sequence;
        if gap {
            self.resync_required = true;
            SequenceVerdict::Gap
        } else {
            SequenceVerdict::Apply
        }
    }

    /// Applies a heartbeat: the load, per-stream viewers, capacity changes, the drain flag.
    pub fn apply_load(&mut self, load: &v1::NodeLoad, last_event_sequence: u64, now_ms: u64) {
        self.last_seen_ms = now_ms;
        self.load = NodeLoad::from(load);
        if let Some(capacity) = &load.capacity {
            self.info.capacity = Capacity::from(capacity);
        }
        if load.draining {
            self.draining = true;
        }
        for per_stream in &load.per_stream {
            if let Some(stream) = self.streams.get_mut(&per_stream.name) {
                stream.viewers = per_stream.viewers;
            }
        }
        if last_event_sequence > self.last_sequence {
            // The node sent events this orchestrator never applied.
            self.resync_required = true;
        }
    }
}

/// What [`Node::accept_sequence`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// The next event (or an unnumbered one): apply it.
    Apply,
    /// Already applied (a retry): accept without applying again.
    Duplicate,
    /// Events were missed: apply this one and ask for a resync.
    Gap,
}

/// Who a node is and how to reach it (`waveguide.v1.NodeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    pub zone: String,
    /// Base URL for publishers and viewers, without a trailing slash.
    pub public_url: String,
    pub grpc_url: String,
    pub rtmp_url: String,
    pub capabilities: Vec<Capability>,
    pub capacity: Capacity,
    pub version: String,
    pub labels: BTreeMap<String, String>,
}

impl From<&v1::NodeInfo> for NodeInfo {
    fn from(info: &v1::NodeInfo) -> Self {
        let mut capabilities: Vec<Capability> = info
            .capabilities
            .iter()
            .filter_map(|&c| Capability::from_proto(c))
            .collect();
        capabilities.sort_unstable();
        capabilities.dedup();
        Self {
            id: info.node_id.clone(),
            region: info.region.clone(),
            zone: info.zone.clone(),
            public_url: info.public_url.trim_end_matches('/').to_owned(),
            grpc_url: info.grpc_url.clone(),
            rtmp_url: info.rtmp_url.clone(),
            capabilities,
            capacity: info
                .capacity
                .as_ref()
                .map(Capacity::from)
                .unwrap_or_default(),
            version: info.version.clone(),
            labels: info
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// What a node can do (`waveguide.v1.Capability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    IngestWhip,
    IngestRtmp,
    IngestFtl,
    EgressWhep,
    Relay,
    Signaling,
}

impl Capability {
    /// The capability of a proto enum value; `None` for unspecified or unknown values.
    pub fn from_proto(value: i32) -> Option<Self> {
        match v1::Capability::try_from(value).ok()? {
            v1::Capability::Unspecified => None,
            v1::Capability::IngestWhip => Some(Self::IngestWhip),
            v1::Capability::IngestRtmp => Some(Self::IngestRtmp),
            v1::Capability::IngestFtl => Some(Self::IngestFtl),
            v1::Capability::EgressWhep => Some(Self::EgressWhep),
            v1::Capability::Relay => Some(Self::Relay),
            v1::Capability::Signaling => Some(Self::Signaling),
        }
    }

    pub fn is_ingest(self) -> bool {
        matches!(self, Self::IngestWhip | Self::IngestRtmp | Self::IngestFtl)
    }
}

/// Configured ceilings; a zero field means "no limit" (`waveguide.v1.Capacity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub max_viewers: u32,
    pub max_egress_bps: u64,
    pub max_streams: u32,
    pub max_publishers: u32,
}

impl From<&v1::Capacity> for Capacity {
    fn from(c: &v1::Capacity) -> Self {
        Self {
            max_viewers: c.max_viewers,
            max_egress_bps: c.max_egress_bps,
            max_streams: c.max_streams,
            max_publishers: c.max_publishers,
        }
    }
}

/// A node's load at its last heartbeat (`waveguide.v1.NodeLoad`, without the per-stream part,
/// which is folded into [`StreamLocation::viewers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub viewers: u32,
    pub publishers: u32,
    pub streams: u32,
    pub relay_pulls: u32,
    pub egress_bps: u64,
    pub ingress_bps: u64,
    /// Fraction of all cores, 0.0 to 1.0.
    pub cpu: f64,
    pub memory_bytes: u64,
}

impl From<&v1::NodeLoad> for NodeLoad {
    fn from(l: &v1::NodeLoad) -> Self {
        Self {
            viewers: l.viewers,
            publishers: l.publishers,
            streams: l.streams,
            relay_pulls: l.relay_pulls,
            egress_bps: l.egress_bps,
            ingress_bps: l.ingress_bps,
            cpu: if l.cpu.is_finite() {
                l.cpu.max(0.0)
            } else {
                0.0
            },
            memory_bytes: l.memory_bytes,
        }
    }
}

/// How a stream reaches a node (`waveguide.v1.Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Unspecified,
    Whip,
    Rtmp,
    Ftl,
    Whep,
    /// Pulled from another edge.
    Relay,
    GrpcSignaling,
}

impl Protocol {
    pub fn from_proto(value: i32) -> Self {
        match v1::Protocol::try_from(value) {
            Ok(v1::Protocol::Whip) => Self::Whip,
            Ok(v1::Protocol::Rtmp) => Self::Rtmp,
            Ok(v1::Protocol::Ftl) => Self::Ftl,
            Ok(v1::Protocol::Whep) => Self::Whep,
            Ok(v1::Protocol::Relay) => Self::Relay,
            Ok(v1::Protocol::GrpcSignaling) => Self::GrpcSignaling,
            Ok(v1::Protocol::Unspecified) | Err(_) => Self::Unspecified,
        }
    }
}

/// One stream held by one node (`waveguide.v1.StreamInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLocation {
    pub name: String,
    pub protocol: Protocol,
    pub tracks: Vec<Track>,
    /// Viewers of the stream on this node.
    pub viewers: u32,
    /// Unix milliseconds; 0 when the node did not say.
    pub started_at_ms: u64,
    /// The node holding the publisher, as the reporting node says.
    pub origin_node_id: String,
}

impl From<&v1::StreamInfo> for StreamLocation {
    fn from(s: &v1::StreamInfo) -> Self {
        Self {
            name: s.name.clone(),
            protocol: Protocol::from_proto(s.protocol),
            tracks: s.tracks.iter().map(Track::from).collect(),
            viewers: s.viewers,
            started_at_ms: s.started_at.as_ref().map_or(0, timestamp_ms),
            origin_node_id: s.origin_node_id.clone(),
        }
    }
}

/// One media track (`waveguide.v1.Track`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub id: String,
    /// `"video"`, `"audio"` or `"unspecified"`.
    pub kind: String,
    pub codec: String,
    pub clock_rate: u32,
    pub fmtp: String,
    pub bitrate_bps: u64,
    pub width: u32,
    pub height: u32,
    pub framerate: f64,
    pub channels: u32,
}

impl From<&v1::Track> for Track {
    fn from(t: &v1::Track) -> Self {
        let kind = match v1::TrackKind::try_from(t.kind) {
            Ok(v1::TrackKind::Video) => "video",
            Ok(v1::TrackKind::Audio) => "audio",
            Ok(v1::TrackKind::Unspecified) | Err(_) => "unspecified",
        };
        Self {
            id: t.id.clone(),
            kind: kind.to_owned(),
            codec: t.codec.clone(),
            clock_rate: t.clock_rate,
            fmtp: t.fmtp.clone(),
            bitrate_bps: t.bitrate_bps,
            width: t.width,
            height: t.height,
            framerate: if t.framerate.is_finite() {
                t.framerate
            } else {
                0.0
            },
            channels: t.channels,
        }
    }
}

/// `at` as Unix milliseconds (0 before the epoch).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, as Unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn timestamp_ms(t: &prost_types::Timestamp) -> u64 {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let millis = u64::try_from(t.nanos / 1_000_000).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node::announced(
            NodeInfo {
                id: "a".into(),
                ..NodeInfo::default()
            },
            [],
            5,
            1000,
        )
    }

    #[test]
    fn sequence_applies_next_skips_retries_and_flags_gaps() {
        let mut n = node();
        assert_eq!(n.accept_sequence(6), SequenceVerdict::Apply);
        assert_eq!(n.accept_sequence(6), SequenceVerdict::Duplicate);
        assert_eq!(n.accept_sequence(3), SequenceVerdict::Duplicate);
        assert!(!n.resync_required);
        assert_eq!(n.accept_sequence(9), SequenceVerdict::Gap);
        assert!(n.resync_required);
        assert_eq!(n.accept_sequence(0), SequenceVerdict::Apply);
    }

    #[test]
    fn heartbeat_ahead_of_applied_events_asks_for_resync() {
        let mut n = node();
        n.apply_load(&v1::NodeLoad::default(), 5, 2000);
        assert!(!n.resync_required);
        assert_eq!(n.last_seen_ms, 2000);
        n.apply_load(&v1::NodeLoad::default(), 7, 3000);
        assert!(n.resync_required);
    }

    #[test]
    fn converts_node_info_and_derives_roles() {
        let info = v1::NodeInfo {
            node_id: "edge-a".into(),
            public_url: "http://127.0.0.1:8081/".into(),
            capabilities: vec![
                v1::Capability::EgressWhep as i32,
                v1::Capability::IngestRtmp as i32,
                v1::Capability::IngestWhip as i32,
                99,
            ],
            ..v1::NodeInfo::default()
        };
        let n = Node::announced(NodeInfo::from(&info), [], 0, 0);
        assert_eq!(n.info.public_url, "http://127.0.0.1:8081");
        assert_eq!(
            n.info.capabilities,
            vec![
                Capability::IngestWhip,
                Capability::IngestRtmp,
                Capability::EgressWhep
            ]
        );
        assert_eq!(n.roles(), vec!["ingest", "edge"]);
    }
}
