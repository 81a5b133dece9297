//! `EntityService` on the edge, the part the cluster uses today: streams listed and inspected,
//! and a stream ended on an operator's word (the orchestrator's admin `DELETE`). Tracks and
//! sessions as entities, relay pulls created ahead of viewers and per-entity settings answer
//! `UNIMPLEMENTED` with what to use instead.

use super::NodeState;
use crate::cluster::node::stream_info;
use std::time::{Instant, SystemTime};
use tonic::{Request, Response, Status};
use tracing::info;
use waveguide_control::stream::{IngestProtocol, StreamStatus};
use waveguide_proto::v1::entity_service_server::EntityService;
use waveguide_proto::v1::{
    self, CreateEntityRequest, CreateEntityResponse, DestroyEntityRequest, DestroyEntityResponse,
    EntityKind, EntityRef, EntityState, GetEntityStatusRequest, GetEntityStatusResponse,
    ListEntitiesRequest, ListEntitiesResponse,
};

/// The service.
pub struct Entities {
    state: NodeState,
}

impl Entities {
    pub(super) fn new(state: NodeState) -> Self {
        Self { state }
    }

    fn entity(&self, s: &StreamStatus) -> v1::Entity {
        let info = stream_info(s, self.state.identity.id(), SystemTime::now());
        let relay = s.protocol == IngestProtocol::Relay;
        v1::Entity {
            r#ref: Some(EntityRef {
                kind: EntityKind::Stream as i32,
                id: s.name.clone(),
            }),
            parent: None,
            state: if s.state == "live" {
                EntityState::Active
            } else {
                EntityState::Reconnecting
            } as i32,
            created_at: info.started_at,
            settings: None,
            detail: Some(v1::entity::Detail::Stream(v1::StreamEntity {
                info: Some(info),
                publishers: u32::from(s.state == "live" && !relay),
                viewers: s.viewers as u32,
                relay_pulls: u32::from(relay),
            })),
        }
    }

    fn stream_ref(r: Option<EntityRef>) -> Result<String, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("ref is required"))?;
        match EntityKind::try_from(r.kind) {
            Ok(EntityKind::Stream) => Ok(r.id),
            Ok(EntityKind::Track) => Err(Status::invalid_argument(
                "a track cannot be destroyed or inspected alone; use its stream",
            )),
            _ => Err(Status::unimplemented(
                "session entities are not served over gRPC yet; DELETE the WHIP/WHEP session URL",
            )),
        }
    }
}

#[tonic::async_trait]
impl EntityService for Entities {
    async fn list_entities(
        &self,
        request: Request<ListEntitiesRequest>,
    ) -> Result<Response<ListEntitiesResponse>, Status> {
        let r = request.into_inner();
        let kind = EntityKind::try_from(r.kind).unwrap_or(EntityKind::Unspecified);
        let entities = if matches!(kind, EntityKind::Unspecified | EntityKind::Stream) {
            self.state
                .engine
                .streams()
                .statuses(Instant::now())
                .iter()
                .filter(|s| r.stream.is_empty() || s.name == r.stream)
                .map(|s| self.entity(s))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(ListEntitiesResponse {
            entities,
            next_page_token: String::new(),
        }))
    }

    async fn get_entity_status(
        &self,
        request: Request<GetEntityStatusRequest>,
    ) -> Result<Response<GetEntityStatusResponse>, Status> {
        let name = Self::stream_ref(request.into_inner().r#ref)?;
        let status = self
            .state
            .engine
            .streams()
            .status(&name, Instant::now())
            .ok_or_else(|| Status::not_found(format!("no stream `{name}` on this node")))?;
        Ok(Response::new(GetEntityStatusResponse {
            entity: Some(self.entity(&status)),
        }))
    }

    async fn destroy_entity(
        &self,
        request: Request<DestroyEntityRequest>,
    ) -> Result<Response<DestroyEntityResponse>, Status> {
        let r = request.into_inner();
        let name = Self::stream_ref(r.r#ref)?;
        let reason = if r.reason.is_empty() {
            "destroyed over gRPC".to_owned()
        } else {
            r.reason
        };
        self.state
            .engine
            .kick(&name, &reason)
            .map_err(|_| Status::not_found(format!("no stream `{name}` on this node")))?;
        info!(stream = %name, %reason, "stream ended over gRPC");
        Ok(Response::new(DestroyEntityResponse {}))
    }

    async fn create_entity(
        &self,
        _request: Request<CreateEntityRequest>,
    ) -> Result<Response<CreateEntityResponse>, Status> {
        Err(Status::unimplemented(
            "relay pulls start on a viewer's WHEP request; creating them ahead is not built yet",
        ))
    }

    async fn configure_entity(
        &self,
        _request: Request<v1::ConfigureEntityRequest>,
    ) -> Result<Response<v1::ConfigureEntityResponse>, Status> {
        Err(Status::unimplemented(
            "per-entity settings are not built yet; use ModuleService.Configure for node limits",
        ))
    }
}
