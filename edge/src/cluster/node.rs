//! Who this node is, as the orchestrator sees it (`NodeInfo`), and its streams as `StreamInfo`.

use crate::config::{EdgeConfig, NodeRole};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use waveguide_control::Engine;
use waveguide_control::media::TrackKind;
use waveguide_control::stream::{IngestProtocol, StreamStatus};
use waveguide_proto::prost_types::Timestamp;
use waveguide_proto::v1;

/// The node's identity, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    info: v1::NodeInfo,
}

/// Bound addresses the identity derives URLs from when the config sets none.
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// HTTP.
    pub http: SocketAddr,
    /// gRPC, when served.
    pub grpc: Option<SocketAddr>,
}

fn url_of(scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}", addr.port())
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// A protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl NodeIdentity {
    /// The identity from the config and the addresses actually bound.
    pub fn new(config: &EdgeConfig, bound: BoundAddrs) -> Self {
        let roles = &config.node.roles;
        let mut capabilities = Vec::new();
        if roles.contains(&NodeRole::Ingest) {
            capabilities.push(v1::Capability::IngestWhip);
            if config.rtmp.enabled {
                capabilities.push(v1::Capability::IngestRtmp);
            }
            if config.ftl.enabled {
                capabilities.push(v1::Capability::IngestFtl);
            }
        }
        // `max_viewers = 0` means "no end viewers of its own": not a WHEP target.
        if roles.contains(&NodeRole::Edge) && config.node.max_viewers != Some(0) {
            capabilities.push(v1::Capability::EgressWhep);
            if config.relay.enabled {
                capabilities.push(v1::Capability::Relay);
            }
        }
        let public_url = config
            .node
            .public_url
            .clone()
            .or_else(|| config.http.public_url.clone())
            .unwrap_or_else(|| url_of(scheme(config.http.tls_cert.is_some()), bound.http));
        let grpc_url = config
            .grpc
            .public_url
            .clone()
            .or_else(|| {
                bound
                    .grpc
                    .map(|a| url_of(scheme(config.grpc.tls_cert.is_some()), a))
            })
            .unwrap_or_default();
        let rtmp_url = if config.rtmp.enabled && roles.contains(&NodeRole::Ingest) {
            let host = public_url
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split([':', '/']).next())
                .unwrap_or("localhost");
            format!("rtmp://{host}:{}/live", config.rtmp.listen.port())
        } else {
            String::new()
        };
        let id = config.node.id.clone().unwrap_or_else(host_name);
        Self {
            info: v1::NodeInfo {
                node_id: id,
                region: config.node.region.clone(),
                zone: String::new(),
                public_url: public_url.trim_end_matches('/').to_owned(),
                grpc_url,
                rtmp_url,
                capabilities: capabilities.into_iter().map(|c| c as i32).collect(),
                capacity: Some(v1::Capacity {
                    max_viewers: config.node.max_viewers.unwrap_or(0),
                    max_egress_bps: config.node.max_egress_mbps * 1_000_000,
                    max_streams: 0,
                    max_publishers: config.node.max_publishers.unwrap_or(0),
                }),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: Some(timestamp(SystemTime::now())),
                labels: Default::default(),
            },
        }
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.info.node_id
    }

    /// The `NodeInfo` with the capacity in force now.
    pub fn info(&self, engine: &Engine) -> v1::NodeInfo {
        let mut info = self.info.clone();
        if let Some(c) = &mut info.capacity {
            c.max_viewers = engine.limits().max_viewers().unwrap_or(0);
            c.max_publishers = engine.limits().max_publishers().unwrap_or(0);
        }
        info
    }

    /// The configured capacity (egress is not a run-time switch of the engine).
    pub fn capacity(&self, engine: &Engine) -> v1::Capacity {
        self.info(engine).capacity.unwrap_or_default()
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "edge".to_owned())
}

/// Every stream of the node as the cluster contract describes it.
pub fn stream_infos(engine: &Engine, node_id: &str) -> Vec<v1::StreamInfo> {
    let now = SystemTime::now();
    engine
        .streams()
        .statuses(std::time::Instant::now())
        .into_iter()
        .map(|s| stream_info(&s, node_id, now))
        .collect()
}

fn protocol(p: IngestProtocol) -> v1::Protocol {
    match p {
        IngestProtocol::Whip => v1::Protocol::Whip,
        IngestProtocol::Rtmp => v1::Protocol::Rtmp,
        IngestProtocol::Ftl => v1::Protocol::Ftl,
        IngestProtocol::Relay => v1::Protocol::Relay,
        IngestProtocol::Signaling => v1::Protocol::GrpcSignaling,
    }
}

/// One stream as `StreamInfo`. A relayed stream's origin is left empty: the orchestrator knows
/// which node holds the publisher.
pub fn stream_info(s: &StreamStatus, node_id: &str, now: SystemTime) -> v1::StreamInfo {
    let started = now
        .checked_sub(Duration::from_secs(s.uptime_secs))
        .unwrap_or(now);
    v1::StreamInfo {
        name: s.name.clone(),
        protocol: protocol(s.protocol) as i32,
        tracks: s
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| v1::Track {
                id: format!("{}{i}", t.codec.name().to_ascii_lowercase()),
                kind: match t.kind {
                    TrackKind::Audio => v1::TrackKind::Audio,
                    TrackKind::Video => v1::TrackKind::Video,
                } as i32,
                codec: t.codec.name().to_owned(),
                clock_rate: if t.kind == TrackKind::Audio {
                    48_000
                } else {
                    90_000
                },
                fmtp: t.fmtp.clone(),
                bitrate_bps: t.bitrate_bps,
                ..Default::default()
            })
            .collect(),
        viewers: s.viewers as u32,
        started_at: Some(timestamp(started)),
        origin_node_id: if s.protocol == IngestProtocol::Relay {
            String::new()
        } else {
            node_id.to_owned()
        },
    }
}
