//! `PipelineService` on the edge: flows of media between entities.
//!
//! The flows this node has are read from the engine, not kept apart from it:
//!
//! - `viewer:<session>`: a stream delivered to one viewer session (every WebRTC viewer is one);
//! - `relay:<stream>`: a stream this node pulls from another edge (protocol `relay`).
//!
//! A viewer flow's delivery belongs to the engine (`Engine::set_delivery`): `StopFlow` pauses
//! it with the connection kept, `StartFlow` resumes it at the newest cached keyframe, and
//! `AdjustQuality` caps it (bitrate, audio only). Another edge pulling a stream from this one is
//! a viewer session too, so the same calls pause and cap delivery to a relay. `GetFlowStatus`
//! reads the session's counters from its shard.
//!
//! A `relay:` flow is this node's pull from upstream: `ConnectEntities` starts one from a given
//! WHEP URL, `DisconnectEntities` ends it. Its delivery is the upstream's to pause or cap (on
//! the upstream's `viewer:` flow for this node); here those calls are `FAILED_PRECONDITION`.

use super::NodeState;
use super::entity::model;
use super::entity::start_relay_pull;
use std::time::{Instant, SystemTime};
use tonic::{Request, Response, Status};
use tracing::info;
use waveguide_control::media::TrackKind;
use waveguide_control::stream::{IngestProtocol, StreamStatus};
use waveguide_control::{Delivery, SessionKind, SessionState, SessionStats};
use waveguide_outputs::record::RecordError;
use waveguide_proto::prost_types;
use waveguide_proto::v1::pipeline_service_server::PipelineService;
use waveguide_proto::v1::{self, EntityKind, FlowState, flow_endpoint::Endpoint};

/// The service.
pub struct Pipelines {
    state: NodeState,
}

/// A flow id, parsed.
enum FlowId {
    /// Delivery of a stream to the viewer session.
    Viewer(String),
    /// The relay pull feeding the stream.
    Relay(String),
}

impl FlowId {
    fn parse(id: &str) -> Result<FlowId, Status> {
        match id.split_once(':') {
            Some(("viewer", session)) if !session.is_empty() => {
                Ok(FlowId::Viewer(session.to_owned()))
            }
            Some(("relay", stream)) if !stream.is_empty() => Ok(FlowId::Relay(stream.to_owned())),
            _ => Err(Status::invalid_argument(format!(
                "flow id `{id}` is neither `viewer:<session id>` nor `relay:<stream>`"
            ))),
        }
    }
}

fn local(kind: EntityKind, id: &str) -> v1::FlowEndpoint {
    v1::FlowEndpoint {
        endpoint: Some(Endpoint::Local(model::entity_ref(kind, id))),
    }
}

/// The sum of the stream's track bitrates (what its publisher sends, measured at ingest).
fn stream_bitrate(s: &StreamStatus) -> u64 {
    s.tracks.iter().map(|t| t.bitrate_bps).sum()
}

impl Pipelines {
    pub(super) fn new(state: NodeState) -> Self {
        Self { state }
    }

    /// The flow `id` names now; `NOT_FOUND` when it is not (any more) on this node.
    async fn flow(&self, id: &FlowId) -> Result<v1::Flow, Status> {
        let engine = &self.state.engine;
        let node = self.state.identity.id();
        let now = SystemTime::now();
        match id {
            FlowId::Viewer(session) => {
                let (info, stream) = model::session(engine, session)
                    .filter(|(i, _)| i.kind == SessionKind::Viewer)
                    .ok_or_else(|| {
                        Status::not_found(format!("no viewer session `{session}` on this node"))
                    })?;
                // Ended between the two reads: the same NOT_FOUND as above.
                let stats = engine.session_stats(session).await.map_err(|_| {
                    Status::not_found(format!("no viewer session `{session}` on this node"))
                })?;
                let live = stream.as_ref().is_some_and(|s| s.state == "live");
                let (state, error) = match (info.state, live) {
                    (SessionState::Connecting, _) => (FlowState::Connecting, String::new()),
                    (SessionState::Connected, _) if stats.delivery.paused => {
                        (FlowState::Stopped, String::new())
                    }
                    (SessionState::Connected, true) => (FlowState::Flowing, String::new()),
                    (SessionState::Connected, false) => (
                        FlowState::Reconnecting,
                        "the stream's publisher is gone; the viewer is held for its return"
                            .to_owned(),
                    ),
                };
                let info_tracks = stream
                    .as_ref()
                    .map(|s| crate::cluster::node::stream_info(s, node, now).tracks)
                    .unwrap_or_default();
                let stream_bps = stream.as_ref().map(stream_bitrate).unwrap_or(0);
                Ok(v1::Flow {
                    id: format!("viewer:{session}"),
                    source: Some(local(EntityKind::Stream, &info.stream)),
                    sink: Some(local(EntityKind::Session, session)),
                    state: state as i32,
                    quality: Some(quality_cap(&stats.delivery)),
                    created_at: Some(model::created(now, info.age)),
                    // The engine keeps no time of a session's last state change.
                    state_since: None,
                    error,
                    packets: stats.packets_sent,
                    bytes: stats.bytes_sent,
                    packets_dropped: stats.packets_dropped,
                    bitrate_bps: delivered_bitrate(&stats, stream.as_ref(), stream_bps),
                    tracks: info_tracks,
                    packets_lost: stats.packets_lost,
                    rtt: stats
                        .rtt
                        .and_then(|d| prost_types::Duration::try_from(d).ok()),
                })
            }
            FlowId::Relay(name) => {
                let s = engine
                    .streams()
                    .status(name, Instant::now())
                    .filter(|s| s.protocol == IngestProtocol::Relay)
                    .ok_or_else(|| {
                        Status::not_found(format!("no relay-pulled stream `{name}` on this node"))
                    })?;
                let info = crate::cluster::node::stream_info(&s, node, now);
                let (state, error) = if s.state == "live" {
                    (FlowState::Flowing, String::new())
                } else {
                    (
                        FlowState::Reconnecting,
                        "lost the upstream; the relay reconnects through the orchestrator"
                            .to_owned(),
                    )
                };
                Ok(v1::Flow {
                    id: format!("relay:{name}"),
                    source: Some(v1::FlowEndpoint {
                        endpoint: Some(Endpoint::Remote(v1::RemoteStream {
                            // The relay does not expose which upstream edge it pulls from.
                            whep_url: String::new(),
                            node_id: String::new(),
                            stream: name.clone(),
                        })),
                    }),
                    sink: Some(local(EntityKind::Stream, name)),
                    state: state as i32,
                    quality: Some(v1::QualityCap::default()),
                    created_at: info.started_at,
                    state_since: None,
                    error,
                    // Received from the upstream by the current pull connection.
                    packets: s.tracks.iter().map(|t| t.packets).sum(),
                    bytes: 0,
                    packets_dropped: 0,
                    bitrate_bps: stream_bitrate(&s),
                    tracks: info.tracks,
                    // The pull's own connection is the relay's, outside the engine's sessions.
                    packets_lost: 0,
                    rtt: None,
                })
            }
        }
    }
}

#[tonic::async_trait]
impl PipelineService for Pipelines {
    async fn connect_entities(
        &self,
        request: Request<v1::ConnectEntitiesRequest>,
    ) -> Result<Response<v1::ConnectEntitiesResponse>, Status> {
        let r = request.into_inner();
        let source = r
            .source
            .and_then(|e| e.endpoint)
            .ok_or_else(|| Status::invalid_argument("source is required"))?;
        let sink = r
            .sink
            .and_then(|e| e.endpoint)
            .ok_or_else(|| Status::invalid_argument("sink is required"))?;
        match (source, sink) {
            (Endpoint::Remote(remote), Endpoint::Local(sink))
                if sink.kind == EntityKind::Stream as i32 =>
            {
                if !remote.stream.is_empty() && remote.stream != sink.id {
                    return Err(Status::invalid_argument(
                        "a relay serves the stream under its own name: source.remote.stream and \
                         sink.local.id must match",
                    ));
                }
                start_relay_pull(&self.state, &sink.id, &remote.whep_url).await?;
                let flow = self.flow(&FlowId::Relay(sink.id.clone())).await?;
                Ok(Response::new(v1::ConnectEntitiesResponse {
                    flow: Some(flow),
                }))
            }
            (Endpoint::Local(_), Endpoint::Local(sink))
                if sink.kind == EntityKind::Session as i32 =>
            {
                Err(Status::invalid_argument(
                    "a viewer's flow is made by its own WHEP POST or Signal offer; once it is, \
                     it exists as flow `viewer:<session id>`",
                ))
            }
            _ => Err(Status::invalid_argument(
                "the flows a caller creates are relay links: source a remote stream, sink a \
                 local stream",
            )),
        }
    }

    async fn disconnect_entities(
        &self,
        request: Request<v1::DisconnectEntitiesRequest>,
    ) -> Result<Response<v1::DisconnectEntitiesResponse>, Status> {
        let r = request.into_inner();
        let id = FlowId::parse(&r.flow_id)?;
        // NOT_FOUND unless the flow exists now, as the flow it claims to be.
        self.flow(&id).await?;
        let reason = if r.reason.is_empty() {
            "disconnected over gRPC".to_owned()
        } else {
            r.reason
        };
        match id {
            FlowId::Viewer(session) => {
                self.state
                    .engine
                    .end_session(&session)
                    .map_err(model::status_of)?;
                info!(%session, %reason, "viewer flow disconnected over gRPC");
            }
            FlowId::Relay(stream) => {
                self.state
                    .engine
                    .kick(&stream, &reason)
                    .map_err(model::status_of)?;
                info!(%stream, %reason, "relay link disconnected over gRPC");
            }
        }
        Ok(Response::new(v1::DisconnectEntitiesResponse {}))
    }

    async fn start_flow(
        &self,
        request: Request<v1::StartFlowRequest>,
    ) -> Result<Response<v1::StartFlowResponse>, Status> {
        let id = FlowId::parse(&request.into_inner().flow_id)?;
        let flow = self
            .change_delivery(&id, |d| Delivery { paused: false, ..d })
            .await?;
        Ok(Response::new(v1::StartFlowResponse { flow: Some(flow) }))
    }

    async fn stop_flow(
        &self,
        request: Request<v1::StopFlowRequest>,
    ) -> Result<Response<v1::StopFlowResponse>, Status> {
        let id = FlowId::parse(&request.into_inner().flow_id)?;
        let flow = self
            .change_delivery(&id, |d| Delivery { paused: true, ..d })
            .await?;
        Ok(Response::new(v1::StopFlowResponse { flow: Some(flow) }))
    }

    async fn get_flow_status(
        &self,
        request: Request<v1::GetFlowStatusRequest>,
    ) -> Result<Response<v1::GetFlowStatusResponse>, Status> {
        let flow = self
            .flow(&FlowId::parse(&request.into_inner().flow_id)?)
            .await?;
        Ok(Response::new(v1::GetFlowStatusResponse {
            flow: Some(flow),
        }))
    }

    async fn record(
        &self,
        request: Request<v1::RecordRequest>,
    ) -> Result<Response<v1::RecordResponse>, Status> {
        let r = request.into_inner();
        let recordings = &self.state.recordings;
        let view = if r.start {
            recordings.start_recording(&r.stream, "grpc")
        } else {
            recordings.stop_recording(&r.stream)
        }
        .map_err(|e| {
            let message = e.to_string();
            match e {
                RecordError::NotLive(_) | RecordError::NotRecording(_) => {
                    Status::not_found(message)
                }
                RecordError::AlreadyRecording(_) => Status::already_exists(message),
                RecordError::BadName(_) => Status::invalid_argument(message),
                RecordError::Codec { .. } => Status::failed_precondition(message),
                _ => Status::internal(message),
            }
        })?;
        info!(stream = %r.stream, start = r.start, "recording changed over gRPC");
        Ok(Response::new(v1::RecordResponse {
            state: view.state.as_str().to_owned(),
            error: view.error.unwrap_or_default(),
            file: view.file.unwrap_or_default(),
            bytes: view.bytes,
        }))
    }

    async fn adjust_quality(
        &self,
        request: Request<v1::AdjustQualityRequest>,
    ) -> Result<Response<v1::AdjustQualityResponse>, Status> {
        let r = request.into_inner();
        let id = FlowId::parse(&r.flow_id)?;
        let cap = r.quality.unwrap_or_default();
        if cap.max_height != 0 || cap.max_framerate != 0 {
            // Checked before the flow: the answer is the same for every flow on this node.
            return Err(Status::invalid_argument(
                "max_height and max_framerate choose among simulcast layers, and publishers \
                 here send one layer; cap with max_bitrate_bps or audio_only",
            ));
        }
        let flow = self
            .change_delivery(&id, |d| Delivery {
                paused: d.paused,
                max_bitrate_bps: Some(cap.max_bitrate_bps).filter(|&b| b != 0),
                audio_only: cap.audio_only,
            })
            .await?;
        Ok(Response::new(v1::AdjustQualityResponse {
            flow: Some(flow),
        }))
    }
}

impl Pipelines {
    /// Changes a viewer flow's delivery and answers the flow as it is then.
    async fn change_delivery(
        &self,
        id: &FlowId,
        change: impl FnOnce(Delivery) -> Delivery,
    ) -> Result<v1::Flow, Status> {
        self.flow(id).await?;
        let session = match id {
            FlowId::Viewer(session) => session,
            FlowId::Relay(stream) => {
                return Err(Status::failed_precondition(format!(
                    "`relay:{stream}` is this node's pull from upstream: pause or cap it on the \
                     upstream edge, where it is a `viewer:` flow (the upstream's GetPeers or \
                     ListEntities shows it as a relay pull)"
                )));
            }
        };
        let engine = &self.state.engine;
        let now = engine
            .session(session)
            .map(|s| s.delivery)
            .unwrap_or_default();
        let next = change(now);
        engine
            .set_delivery(session, next)
            .map_err(model::status_of)?;
        info!(%session, ?next, "viewer flow delivery changed over gRPC");
        self.flow(id).await
    }
}

/// A delivery as the flow's quality cap.
fn quality_cap(d: &Delivery) -> v1::QualityCap {
    v1::QualityCap {
        max_bitrate_bps: d.max_bitrate_bps.unwrap_or(0),
        max_height: 0,
        max_framerate: 0,
        audio_only: d.audio_only,
    }
}

/// What the viewer is sent now: nothing while paused, the audio while video is held, else the
/// stream's ingest rate.
fn delivered_bitrate(stats: &SessionStats, stream: Option<&StreamStatus>, all: u64) -> u64 {
    if stats.delivery.paused {
        return 0;
    }
    if stats.video_held {
        return stream
            .map(|s| {
                s.tracks
                    .iter()
                    .filter(|t| t.kind == TrackKind::Audio)
                    .map(|t| t.bitrate_bps)
                    .sum()
            })
            .unwrap_or(0);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::FlowId;

    #[test]
    fn flow_ids_parse() {
        assert!(matches!(FlowId::parse("viewer:abc"), Ok(FlowId::Viewer(s)) if s == "abc"));
        assert!(matches!(FlowId::parse("relay:demo"), Ok(FlowId::Relay(s)) if s == "demo"));
        assert!(FlowId::parse("viewer:").is_err());
        assert!(FlowId::parse("demo").is_err());
        assert!(FlowId::parse("other:x").is_err());
    }
}
