//! The node's streams, tracks and sessions as `waveguide.v1` entities, built from what the
//! engine exposes (`Streams::statuses`, `Engine::sessions`). Shared by `EntityService` and
//! `PipelineService`.
//!
//! What the engine does not measure is left at its zero value (never estimated): per-track
//! bytes, keyframe times, NACK and PLI counts; per-session addresses, user agents, byte and drop
//! counters and RTT; a viewer session's protocol (WHEP and gRPC-signaled viewers are not told
//! apart by the engine).

use crate::cluster::node::{stream_info, timestamp};
use std::time::{Duration, Instant, SystemTime};
use tonic::Status;
use waveguide_control::stream::{IngestProtocol, StreamStatus};
use waveguide_control::{Engine, Error, SessionInfo, SessionKind, SessionState};
use waveguide_proto::prost_types::Timestamp;
use waveguide_proto::v1::{self, EntityKind, EntityRef, EntityState};

/// A reference to an entity.
pub(in crate::grpc) fn entity_ref(kind: EntityKind, id: &str) -> EntityRef {
    EntityRef {
        kind: kind as i32,
        id: id.to_owned(),
    }
}

/// The id of a stream's track: `<stream>/<track id>`.
pub(in crate::grpc) fn track_id(stream: &str, track: &str) -> String {
    format!("{stream}/{track}")
}

/// When something `age` old was created.
pub(in crate::grpc) fn created(now: SystemTime, age: Duration) -> Timestamp {
    timestamp(now.checked_sub(age).unwrap_or(now))
}

/// `live` streams are active; streams waiting for their publisher to come back are
/// reconnecting.
pub(in crate::grpc) fn stream_state(s: &StreamStatus) -> EntityState {
    if s.state == "live" {
        EntityState::Active
    } else {
        EntityState::Reconnecting
    }
}

/// Settings as they are in force: the engine has no per-stream viewer cap and no per-session
/// bitrate cap, so both are "none" (0). A relay pull's idle grace is the relay's configuration,
/// which this service is not given: unset.
fn settings() -> v1::EntitySettings {
    v1::EntitySettings {
        max_viewers: Some(0),
        max_bitrate_bps: Some(0),
        idle_grace: None,
    }
}

/// A stream.
pub(in crate::grpc) fn stream_entity(
    s: &StreamStatus,
    node_id: &str,
    now: SystemTime,
) -> v1::Entity {
    let info = stream_info(s, node_id, now);
    let relay = s.protocol == IngestProtocol::Relay;
    v1::Entity {
        r#ref: Some(entity_ref(EntityKind::Stream, &s.name)),
        parent: None,
        state: stream_state(s) as i32,
        created_at: info.started_at,
        settings: Some(settings()),
        detail: Some(v1::entity::Detail::Stream(v1::StreamEntity {
            info: Some(info),
            // RTMP and FTL publishers count here although they are not WebRTC sessions.
            publishers: u32::from(s.state == "live" && !relay),
            viewers: s.viewers as u32,
            relay_pulls: u32::from(relay),
        })),
    }
}

/// The tracks of a stream, with the ids `StreamInfo` gives them.
pub(in crate::grpc) fn track_entities(
    s: &StreamStatus,
    node_id: &str,
    now: SystemTime,
) -> Vec<v1::Entity> {
    let info = stream_info(s, node_id, now);
    info.tracks
        .into_iter()
        .zip(&s.tracks)
        .map(|(track, status)| v1::Entity {
            r#ref: Some(entity_ref(EntityKind::Track, &track_id(&s.name, &track.id))),
            parent: Some(entity_ref(EntityKind::Stream, &s.name)),
            state: stream_state(s) as i32,
            // Tracks live as long as their stream's current publisher; the stream's start is
            // the closest time the registry keeps.
            created_at: info.started_at,
            settings: Some(settings()),
            detail: Some(v1::entity::Detail::Track(v1::TrackEntity {
                track: Some(track),
                packets: status.packets,
                bytes: status.bytes,
                last_keyframe_at: status.last_keyframe_unix_ms.map(|ms| Timestamp {
                    seconds: (ms / 1000) as i64,
                    nanos: ((ms % 1000) * 1_000_000) as i32,
                }),
                nacks_received: status.nacks,
                plis_sent: status.keyframe_requests,
            })),
        })
        .collect()
}

/// The protocol of a WebRTC publisher session: its stream's, when that is a WebRTC ingest.
fn publisher_protocol(stream: Option<&StreamStatus>) -> v1::Protocol {
    match stream.map(|s| s.protocol) {
        Some(IngestProtocol::Whip) => v1::Protocol::Whip,
        Some(IngestProtocol::Signaling) => v1::Protocol::GrpcSignaling,
        _ => v1::Protocol::Unspecified,
    }
}

/// A WebRTC session (publisher or viewer). `stream` is its stream's status, when live.
pub(in crate::grpc) fn session_entity(
    info: &SessionInfo,
    stream: Option<&StreamStatus>,
    now: SystemTime,
) -> v1::Entity {
    let (role, protocol) = match info.kind {
        SessionKind::Publisher => (v1::SessionRole::Publisher, publisher_protocol(stream)),
        // Another edge pulling the stream: a viewer here, serving the relay there.
        SessionKind::Viewer if info.relay_pull => (v1::SessionRole::Viewer, v1::Protocol::Relay),
        // The engine does not record whether a viewer came over WHEP or gRPC signaling.
        SessionKind::Viewer => (v1::SessionRole::Viewer, v1::Protocol::Unspecified),
    };
    v1::Entity {
        r#ref: Some(entity_ref(EntityKind::Session, &info.session)),
        parent: Some(entity_ref(EntityKind::Stream, &info.stream)),
        state: session_state(info.state) as i32,
        created_at: Some(created(now, info.age)),
        settings: Some(settings()),
        detail: Some(v1::entity::Detail::Session(v1::SessionEntity {
            role: role as i32,
            protocol: protocol as i32,
            stream: info.stream.clone(),
            // Counters and address come from the session's shard (EntityService fills them).
            remote_addr: String::new(),
            user_agent: String::new(),
            bytes_in: 0,
            bytes_out: 0,
            packets_dropped: 0,
            rtt: None,
            upstream_url: String::new(),
        })),
    }
}

/// A session's engine state as an entity state.
pub(in crate::grpc) fn session_state(state: SessionState) -> EntityState {
    match state {
        SessionState::Connecting => EntityState::Starting,
        SessionState::Connected => EntityState::Active,
    }
}

/// Every entity of `kind` (`Unspecified`: all) belonging to `stream` (empty: all), sorted by
/// kind, then id.
pub(in crate::grpc) fn entities(
    engine: &Engine,
    node_id: &str,
    kind: EntityKind,
    stream: &str,
) -> Vec<v1::Entity> {
    let now = SystemTime::now();
    let statuses: Vec<StreamStatus> = engine
        .streams()
        .statuses(Instant::now())
        .into_iter()
        .filter(|s| stream.is_empty() || s.name == stream)
        .collect();
    let wants = |k: EntityKind| kind == EntityKind::Unspecified || kind == k;
    let mut out = Vec::new();
    if wants(EntityKind::Stream) {
        out.extend(statuses.iter().map(|s| stream_entity(s, node_id, now)));
    }
    if wants(EntityKind::Track) {
        for s in &statuses {
            out.extend(track_entities(s, node_id, now));
        }
    }
    if wants(EntityKind::Session) {
        out.extend(
            engine
                .sessions()
                .iter()
                .filter(|i| stream.is_empty() || i.stream == stream)
                .map(|i| session_entity(i, statuses.iter().find(|s| s.name == i.stream), now)),
        );
    }
    out.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    out
}

/// Where an entity sorts in a listing: kind, then id.
pub(in crate::grpc) fn sort_key(e: &v1::Entity) -> (i32, &str) {
    e.r#ref
        .as_ref()
        .map(|r| (r.kind, r.id.as_str()))
        .unwrap_or((0, ""))
}

/// One session by id, with its stream's status.
pub(in crate::grpc) fn session(
    engine: &Engine,
    id: &str,
) -> Option<(SessionInfo, Option<StreamStatus>)> {
    let info = engine.session(id)?;
    let stream = engine.streams().status(&info.stream, Instant::now());
    Some((info, stream))
}

/// An engine error as a gRPC status.
pub(in crate::grpc) fn status_of(e: Error) -> Status {
    let message = e.to_string();
    match e.http_status() {
        400 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::already_exists(message),
        412 => Status::failed_precondition(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}
