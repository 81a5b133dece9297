//! `waveguide.v1.EventService`: what edges tell the orchestrator, applied to the registry.
//!
//! Semantics (see `events.proto`):
//! - `NodeUp` replaces everything known about the node (info, streams; healthy, not draining)
//!   and, in a background task, calls the node's `ModuleService.RegisterModule` to confirm it
//!   and to ask for heartbeats at `[cluster] heartbeat_secs`.
//! - Any other event for a node the registry does not hold is `FAILED_PRECONDITION` (send
//!   `NodeUp` first). Events are ordered by `sequence`: a retry (a sequence already applied) is
//!   accepted and not applied again; a gap is applied and answered with `resync_required`.
//! - `ReportStatus` records the load and refreshes the node's expiry. An unknown node, or one
//!   whose `last_event_sequence` is past the last applied event, is answered with
//!   `resync_required = true` (until it sends `NodeUp`).
//! - `ReportMetrics` is accepted and not stored.
//!
//! Authentication happens before these handlers (see `grpc`).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use waveguide_proto::v1;
use waveguide_proto::v1::event::Event as EventKind;
use waveguide_proto::v1::event_service_server::EventService;

use crate::error::Error;
use crate::node::{Node, NodeInfo, SequenceVerdict, StreamLocation, now_ms};
use crate::node_client::{NodeClients, proto_duration};
use crate::store::{Heartbeat, Store};

pub struct Events {
    pub store: Store,
    pub clients: Arc<NodeClients>,
    /// The heartbeat interval asked of nodes.
    pub heartbeat: Duration,
    /// Names this orchestrator in the nodes' logs (`RegisterModule.registrar_id`).
    pub registrar_id: String,
}

impl Events {
    async fn node_up(&self, event: &v1::Event, up: &v1::NodeUp) -> Result<bool, Error> {
        let info = up
            .node
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("NodeUp without node".to_owned()))?;
        let mut info = NodeInfo::from(info);
        if info.id.is_empty() {
            info.id.clone_from(&event.node_id);
        }
        if info.id.is_empty() || (!event.node_id.is_empty() && event.node_id != info.id) {
            return Err(Error::InvalidArgument(
                "NodeUp needs node.node_id, equal to the event's node_id".to_owned(),
            ));
        }
        let streams: Vec<StreamLocation> = up
            .streams
            .iter()
            .filter(|s| !s.name.is_empty())
            .map(StreamLocation::from)
            .collect();
        let known = self.store.node(&info.id).await?.is_some();
        tracing::info!(
            node = %info.id,
            region = %info.region,
            public_url = %info.public_url,
            grpc_url = %info.grpc_url,
            streams = streams.len(),
            "node {}",
            if known { "re-announced" } else { "up" }
        );
        let node = Node::announced(info.clone(), streams, event.sequence, now_ms());
        self.store.put_node(node).await?;
        self.confirm_registration(info);
        Ok(false)
    }

    /// Calls `RegisterModule` on the node in the background.
    fn confirm_registration(&self, info: NodeInfo) {
        let clients = Arc::clone(&self.clients);
        let store = self.store.clone();
        let heartbeat = self.heartbeat;
        let registrar_id = self.registrar_id.clone();
        tokio::spawn(async move {
            match clients.register(&info, &registrar_id, heartbeat).await {
                Ok(answer) => {
                    tracing::info!(
                        node = %info.id,
                        streams = answer.streams.len(),
                        draining = answer.draining,
                        "node registered"
                    );
                    if answer.draining
                        && let Err(err) = store.set_draining(&info.id, true).await
                    {
                        tracing::warn!(node = %info.id, %err, "cannot record the drain");
                    }
                }
                Err(err) => tracing::warn!(node = %info.id, %err, "RegisterModule failed"),
            }
        });
    }

    /// Applies a non-`NodeUp` event; returns whether a resync is required.
    async fn node_event(&self, event: &v1::Event, kind: &EventKind) -> Result<bool, Error> {
        let id = event.node_id.as_str();
        if id.is_empty() {
            return Err(Error::InvalidArgument("event without node_id".to_owned()));
        }
        if let EventKind::NodeDown(down) = kind {
            let known = self.store.remove_node(id).await?;
            if !known {
                return Err(Error::UnknownNode(id.to_owned()));
            }
            tracing::info!(node = id, reason = %down.reason, "node down");
            return Ok(false);
        }
        let stream = match kind {
            EventKind::StreamStarted(v1::StreamStarted { stream })
            | EventKind::StreamUpdated(v1::StreamUpdated { stream }) => {
                let stream = stream
                    .as_ref()
                    .filter(|s| !s.name.is_empty())
                    .ok_or_else(|| {
                        Error::InvalidArgument("stream event without a stream name".into())
                    })?;
                Some(StreamLocation::from(stream))
            }
            EventKind::StreamEnded(ended) if ended.name.is_empty() => {
                return Err(Error::InvalidArgument("StreamEnded without a name".into()));
            }
            _ => None,
        };
        let sequence = event.sequence;
        let applied = self
            .store
            .update_node(id, |node| {
                let verdict = node.accept_sequence(sequence);
                if verdict != SequenceVerdict::Duplicate {
                    match kind {
                        EventKind::NodeDraining(_) => node.draining = true,
                        EventKind::StreamStarted(_) | EventKind::StreamUpdated(_) => {
                            if let Some(stream) = &stream {
                                node.streams.insert(stream.name.clone(), stream.clone());
                            }
                        }
                        EventKind::StreamEnded(ended) => {
                            node.streams.remove(&ended.name);
                        }
                        EventKind::NodeUp(_) | EventKind::NodeDown(_) => {}
                    }
                }
                (verdict, node.resync_required)
            })
            .await?;
        let Some((verdict, resync_required)) = applied else {
            return Err(Error::UnknownNode(id.to_owned()));
        };
        match kind {
            EventKind::NodeDraining(draining) => {
                tracing::info!(node = id, reason = %draining.reason, "node draining");
            }
            EventKind::StreamStarted(_) => {
                if let Some(stream) = &stream {
                    tracing::info!(node = id, stream = %stream.name, protocol = ?stream.protocol, "stream started");
                }
            }
            EventKind::StreamEnded(ended) => {
                tracing::info!(node = id, stream = %ended.name, reason = ended.reason, "stream ended");
            }
            _ => {}
        }
        if verdict == SequenceVerdict::Gap {
            tracing::warn!(
                node = id,
                sequence,
                "events missed: asking the node to resync"
            );
        }
        Ok(resync_required)
    }
}

#[tonic::async_trait]
impl EventService for Events {
    async fn report_event(
        &self,
        request: Request<v1::ReportEventRequest>,
    ) -> Result<Response<v1::ReportEventResponse>, Status> {
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("ReportEventRequest without event"))?;
        let kind = event
            .event
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("event without a kind"))?;
        let resync_required = match kind {
            EventKind::NodeUp(up) => self.node_up(&event, up).await?,
            other => self.node_event(&event, other).await?,
        };
        Ok(Response::new(v1::ReportEventResponse { resync_required }))
    }

    async fn report_status(
        &self,
        request: Request<v1::ReportStatusRequest>,
    ) -> Result<Response<v1::ReportStatusResponse>, Status> {
        let status = request.into_inner();
        if status.node_id.is_empty() {
            return Err(Status::invalid_argument("ReportStatus without node_id"));
        }
        let load = status.load.unwrap_or_default();
        let resync_required = match self
            .store
            .heartbeat(&status.node_id, &load, status.last_event_sequence)
            .await
            .map_err(Error::from)?
        {
            Heartbeat::Applied { resync_required } => resync_required,
            Heartbeat::UnknownNode => {
                tracing::debug!(node = %status.node_id, "heartbeat from an unknown node: resync");
                true
            }
        };
        Ok(Response::new(v1::ReportStatusResponse {
            resync_required,
            next_report_in: Some(proto_duration(self.heartbeat)),
        }))
    }

    async fn report_metrics(
        &self,
        request: Request<v1::ReportMetricsRequest>,
    ) -> Result<Response<v1::ReportMetricsResponse>, Status> {
        let metrics = request.into_inner();
        tracing::trace!(node = %metrics.node_id, samples = metrics.metrics.len(), "metrics report");
        Ok(Response::new(v1::ReportMetricsResponse {}))
    }
}
