//! `EntityService` on the edge: streams, their tracks and the WebRTC sessions on them
//! (publishers and viewers) as entities.
//!
//! - `ListEntities` filters by kind and stream and pages over the list sorted by kind, then id.
//! - `GetEntityStatus` reads one entity; `DestroyEntity` ends a stream (`Engine::kick`) or one
//!   session (`Engine::end_session`: that peer only, the others keep their media).
//! - `CreateEntity` starts a relay pull from a given upstream WHEP URL.
//! - `ConfigureEntity` sets a stream's viewer ceiling on this node and a viewer session's
//!   bitrate cap. A pull's idle grace (fixed by `[relay] idle_grace_secs`) and a publisher's
//!   bitrate (no bandwidth feedback is sent to publishers) answer `UNIMPLEMENTED`.
//! - Session entities carry their shard's counters: remote address, bytes, drops, RTT.
//!
//! RTMP and FTL publishers are not WebRTC sessions: they show in their stream's `publishers`
//! count, not as session entities. A relay pull shows as its stream's `relay_pulls`.

pub(super) mod model;

use super::NodeState;
use std::time::{Instant, SystemTime};
use tonic::{Request, Response, Status};
use tracing::info;
use waveguide_control::Delivery;
use waveguide_proto::v1::entity_service_server::EntityService;
use waveguide_proto::v1::{
    self, CreateEntityRequest, CreateEntityResponse, DestroyEntityRequest, DestroyEntityResponse,
    EntityKind, EntityRef, GetEntityStatusRequest, GetEntityStatusResponse, ListEntitiesRequest,
    ListEntitiesResponse,
};

/// Entities per page when the caller names no page size.
const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page served.
const MAX_PAGE_SIZE: usize = 1000;

/// The service.
pub struct Entities {
    state: NodeState,
}

/// What a reference names, checked.
enum Target {
    Stream(String),
    Track { stream: String, track: String },
    Session(String),
}

impl Entities {
    pub(super) fn new(state: NodeState) -> Self {
        Self { state }
    }

    fn target(r: Option<EntityRef>) -> Result<Target, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("ref is required"))?;
        if r.id.is_empty() {
            return Err(Status::invalid_argument("ref.id is required"));
        }
        match EntityKind::try_from(r.kind) {
            Ok(EntityKind::Stream) => Ok(Target::Stream(r.id)),
            Ok(EntityKind::Track) => {
                let (stream, track) = r.id.split_once('/').ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "track id `{}` is not `<stream>/<track id>`",
                        r.id
                    ))
                })?;
                Ok(Target::Track {
                    stream: stream.to_owned(),
                    track: track.to_owned(),
                })
            }
            Ok(EntityKind::Session) => Ok(Target::Session(r.id)),
            _ => Err(Status::invalid_argument(
                "ref.kind must be STREAM, TRACK or SESSION",
            )),
        }
    }

    /// Adds what the registry listing does not hold: a stream's viewer ceiling, a session's
    /// counters (asked of its shard) and cap.
    async fn complete(&self, e: &mut v1::Entity) {
        let engine = &self.state.engine;
        let Some(r) = e.r#ref.as_ref() else {
            return;
        };
        let settings = e.settings.get_or_insert_with(Default::default);
        match EntityKind::try_from(r.kind) {
            Ok(EntityKind::Stream) => {
                settings.max_viewers = Some(engine.limits().stream_max_viewers(&r.id).unwrap_or(0));
            }
            Ok(EntityKind::Session) => {
                let Ok(stats) = engine.session_stats(&r.id).await else {
                    return;
                };
                settings.max_bitrate_bps = Some(stats.delivery.max_bitrate_bps.unwrap_or(0));
                if let Some(v1::entity::Detail::Session(s)) = e.detail.as_mut() {
                    s.remote_addr = stats.remote_addr.map(|a| a.to_string()).unwrap_or_default();
                    s.bytes_in = stats.bytes_received;
                    s.bytes_out = stats.bytes_sent;
                    s.packets_dropped = stats.packets_dropped;
                    s.rtt = stats
                        .rtt
                        .and_then(|d| waveguide_proto::prost_types::Duration::try_from(d).ok());
                }
            }
            _ => {}
        }
    }

    /// The entity `target` names now; `NOT_FOUND` when it is not (any more) on this node.
    fn lookup(&self, target: &Target) -> Result<v1::Entity, Status> {
        let engine = &self.state.engine;
        let node = self.state.identity.id();
        let now = SystemTime::now();
        match target {
            Target::Stream(name) => engine
                .streams()
                .status(name, Instant::now())
                .map(|s| model::stream_entity(&s, node, now))
                .ok_or_else(|| Status::not_found(format!("no stream `{name}` on this node"))),
            Target::Track { stream, track } => {
                let id = model::track_id(stream, track);
                engine
                    .streams()
                    .status(stream, Instant::now())
                    .and_then(|s| {
                        model::track_entities(&s, node, now)
                            .into_iter()
                            .find(|e| e.r#ref.as_ref().is_some_and(|r| r.id == id))
                    })
                    .ok_or_else(|| Status::not_found(format!("no track `{id}` on this node")))
            }
            Target::Session(id) => model::session(engine, id)
                .map(|(info, stream)| model::session_entity(&info, stream.as_ref(), now))
                .ok_or_else(|| Status::not_found(format!("no session `{id}` on this node"))),
        }
    }
}

/// A page token: the hex of `<kind>:<id>` of the last entity of the previous page. Pages are
/// keyed by position in the sorted list, so entities that come and go between pages neither
/// repeat nor shift the rest.
fn page_token(e: &v1::Entity) -> String {
    let (kind, id) = model::sort_key(e);
    format!("{kind}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_page_token(token: &str) -> Result<(i32, String), Status> {
    let invalid = || Status::invalid_argument("page_token is not one this node issued");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (kind, id) = text.split_once(':').ok_or_else(invalid)?;
    Ok((kind.parse().map_err(|_| invalid())?, id.to_owned()))
}

/// One page of the sorted `all`, after `token`, and the token of the next page.
fn page(
    all: Vec<v1::Entity>,
    page_size: u32,
    token: &str,
) -> Result<(Vec<v1::Entity>, String), Status> {
    let size = match page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let after = if token.is_empty() {
        None
    } else {
        Some(parse_page_token(token)?)
    };
    let mut rest = all.into_iter().filter(|e| match &after {
        Some((kind, id)) => model::sort_key(e) > (*kind, id.as_str()),
        None => true,
    });
    let entities: Vec<v1::Entity> = rest.by_ref().take(size).collect();
    let next = match (rest.next(), entities.last()) {
        (Some(_), Some(last)) => page_token(last),
        _ => String::new(),
    };
    Ok((entities, next))
}

#[tonic::async_trait]
impl EntityService for Entities {
    async fn list_entities(
        &self,
        request: Request<ListEntitiesRequest>,
    ) -> Result<Response<ListEntitiesResponse>, Status> {
        let r = request.into_inner();
        let kind = EntityKind::try_from(r.kind)
            .map_err(|_| Status::invalid_argument(format!("unknown entity kind {}", r.kind)))?;
        let all = model::entities(
            &self.state.engine,
            self.state.identity.id(),
            kind,
            &r.stream,
        );
        let (mut entities, next_page_token) = page(all, r.page_size, &r.page_token)?;
        for e in &mut entities {
            self.complete(e).await;
        }
        Ok(Response::new(ListEntitiesResponse {
            entities,
            next_page_token,
        }))
    }

    async fn get_entity_status(
        &self,
        request: Request<GetEntityStatusRequest>,
    ) -> Result<Response<GetEntityStatusResponse>, Status> {
        let target = Self::target(request.into_inner().r#ref)?;
        let mut entity = self.lookup(&target)?;
        self.complete(&mut entity).await;
        Ok(Response::new(GetEntityStatusResponse {
            entity: Some(entity),
        }))
    }

    async fn destroy_entity(
        &self,
        request: Request<DestroyEntityRequest>,
    ) -> Result<Response<DestroyEntityResponse>, Status> {
        let r = request.into_inner();
        let target = Self::target(r.r#ref)?;
        let reason = if r.reason.is_empty() {
            "destroyed over gRPC".to_owned()
        } else {
            r.reason
        };
        match target {
            Target::Stream(name) => {
                self.state
                    .engine
                    .kick(&name, &reason)
                    .map_err(|_| Status::not_found(format!("no stream `{name}` on this node")))?;
                info!(stream = %name, %reason, "stream ended over gRPC");
            }
            Target::Track { .. } => {
                return Err(Status::invalid_argument(
                    "a track cannot be destroyed alone; destroy its stream",
                ));
            }
            Target::Session(id) => {
                let stream = model::session(&self.state.engine, &id).map(|(i, _)| i.stream);
                self.state
                    .engine
                    .end_session(&id)
                    .map_err(model::status_of)?;
                info!(session = %id, stream = ?stream, %reason, "session ended over gRPC");
            }
        }
        Ok(Response::new(DestroyEntityResponse {}))
    }

    async fn create_entity(
        &self,
        request: Request<CreateEntityRequest>,
    ) -> Result<Response<CreateEntityResponse>, Status> {
        let spec = match request.into_inner().spec {
            Some(v1::create_entity_request::Spec::RelayPull(spec)) => spec,
            None => return Err(Status::invalid_argument("spec is required (relay_pull)")),
        };
        start_relay_pull(&self.state, &spec.stream, &spec.upstream_url).await?;
        let entity = self.lookup(&Target::Stream(spec.stream))?;
        Ok(Response::new(CreateEntityResponse {
            entity: Some(entity),
        }))
    }

    async fn configure_entity(
        &self,
        request: Request<v1::ConfigureEntityRequest>,
    ) -> Result<Response<v1::ConfigureEntityResponse>, Status> {
        let r = request.into_inner();
        let target = Self::target(r.r#ref)?;
        self.lookup(&target)?;
        let settings = r.settings.unwrap_or_default();
        let is_stream = matches!(target, Target::Stream(_));
        let is_session = matches!(target, Target::Session(_));
        if matches!(target, Target::Track { .. })
            && (settings.max_viewers.is_some()
                || settings.max_bitrate_bps.is_some()
                || settings.idle_grace.is_some())
        {
            return Err(Status::invalid_argument("tracks have no settings"));
        }
        if settings.max_viewers.is_some() && !is_stream {
            return Err(Status::invalid_argument("max_viewers applies to streams"));
        }
        if settings.max_bitrate_bps.is_some() && !is_session {
            return Err(Status::invalid_argument(
                "max_bitrate_bps applies to sessions",
            ));
        }
        if settings.idle_grace.is_some() && !is_stream {
            return Err(Status::invalid_argument(
                "idle_grace applies to relay-pulled streams",
            ));
        }
        if settings.idle_grace.is_some() {
            return Err(Status::unimplemented(
                "a relay pull's idle grace is fixed by [relay] idle_grace_secs; changing it per \
                 pull needs an API on the relay (waveguide_inputs::relay::Relay)",
            ));
        }
        let engine = &self.state.engine;
        if let (Target::Stream(name), Some(max)) = (&target, settings.max_viewers) {
            // Zero lifts the ceiling; viewers already watching stay.
            engine
                .limits()
                .set_stream_max_viewers(name, Some(max).filter(|&n| n != 0));
            info!(stream = %name, max, "stream viewer ceiling set over gRPC");
        }
        if let (Target::Session(id), Some(cap)) = (&target, settings.max_bitrate_bps) {
            let info = engine
                .session(id)
                .ok_or_else(|| Status::not_found(format!("no session `{id}` on this node")))?;
            if info.kind != waveguide_control::SessionKind::Viewer {
                if cap != 0 {
                    return Err(Status::unimplemented(
                        "a publisher's bitrate is its encoder's: the node sends publishers no \
                         bandwidth feedback (REMB/TWCC) to cap it with",
                    ));
                }
            } else {
                let delivery = Delivery {
                    max_bitrate_bps: Some(cap).filter(|&b| b != 0),
                    ..info.delivery
                };
                engine
                    .set_delivery(id, delivery)
                    .map_err(model::status_of)?;
            }
        }
        let mut entity = self.lookup(&target)?;
        self.complete(&mut entity).await;
        Ok(Response::new(v1::ConfigureEntityResponse {
            entity: Some(entity),
        }))
    }
}

/// Pulls `stream` from the WHEP endpoint `upstream_url` (CreateEntity, ConnectEntities):
/// checks the target, refuses a stream already here, and resolves once it is live.
pub(super) async fn start_relay_pull(
    state: &NodeState,
    stream: &str,
    upstream_url: &str,
) -> Result<(), Status> {
    check_relay_target(stream, upstream_url)?;
    if state
        .engine
        .streams()
        .status(stream, Instant::now())
        .is_some()
    {
        return Err(Status::already_exists(format!(
            "stream `{stream}` is already on this node"
        )));
    }
    let relay = state
        .relay
        .as_ref()
        .ok_or_else(|| Status::failed_precondition(NO_RELAY))?;
    relay
        .pull_from(stream, upstream_url)
        .await
        .map_err(model::status_of)
}

/// Why a relay pull cannot be created on this edge.
pub(super) const NO_RELAY: &str = "this edge has no relay: it needs [orchestrator] url and \
     [cluster] token (and [relay] enabled)";

/// Checks a relay pull's stream name and upstream URL.
pub(super) fn check_relay_target(stream: &str, upstream_url: &str) -> Result<(), Status> {
    if !waveguide_control::stream::is_valid_name(stream) {
        return Err(Status::invalid_argument(format!(
            "invalid stream name `{stream}` (letters, digits, '-', '_', '.', at most 128)"
        )));
    }
    let rest = upstream_url
        .strip_prefix("http://")
        .or_else(|| upstream_url.strip_prefix("https://"))
        .ok_or_else(|| {
            Status::invalid_argument("upstream_url must be an http:// or https:// WHEP URL")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Status::invalid_argument("upstream_url has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> v1::Entity {
        v1::Entity {
            r#ref: Some(model::entity_ref(EntityKind::Stream, id)),
            ..Default::default()
        }
    }

    #[test]
    fn pages_cover_the_list_once_in_order() {
        let all: Vec<v1::Entity> = ["a", "b", "c", "d", "e"].into_iter().map(stream).collect();
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let (page, next) = page(all.clone(), 2, &token).unwrap();
            seen.extend(page.iter().map(|e| e.r#ref.as_ref().unwrap().id.clone()));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        let (page1, next) = page(all.clone(), 0, "").unwrap();
        assert_eq!(page1.len(), 5);
        assert!(next.is_empty());
        assert!(page(all.clone(), 2, "zz").is_err());
        assert!(page(all, 2, "abc").is_err());
    }

    #[test]
    fn relay_targets_are_checked() {
        assert!(check_relay_target("demo", "http://edge-a:8080/whep/demo").is_ok());
        assert!(check_relay_target("bad/name", "http://edge-a/whep/x").is_err());
        assert!(check_relay_target("demo", "ftp://edge-a/whep/demo").is_err());
        assert!(check_relay_target("demo", "http:///whep").is_err());
    }
}
