//! The REST API under `/api/v1` (JSON): the registry's nodes and streams, and the admin
//! actions (drain a node, end a stream), which need `Authorization: Bearer <admin token>`.
//!
//! Owns the JSON shapes ([`NodeView`], [`StreamView`]) and the admin flows; the OpenAPI
//! document describing them is `openapi`'s.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;
use crate::http::HttpState;
use crate::node::{Capability, Capacity, Node, NodeLoad, Protocol, Track};
use crate::select;

/// One node, as `GET /api/v1/nodes` lists it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub region: String,
    pub zone: String,
    pub public_url: String,
    pub grpc_url: String,
    pub rtmp_url: String,
    pub version: String,
    /// `"ingest"` (any ingest capability) and/or `"edge"` (serves WHEP viewers).
    pub roles: Vec<&'static str>,
    pub capabilities: Vec<Capability>,
    pub capacity: Capacity,
    pub load: NodeLoad,
    /// The selection load score (1.0 = full).
    pub score: f64,
    pub healthy: bool,
    pub draining: bool,
    /// Healthy, not draining and fresh: may be sent new work.
    pub eligible: bool,
    pub last_seen_ms_ago: u64,
    /// Names of the streams the node holds.
    pub streams: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl NodeView {
    fn new(node: &Node, freshness: select::Freshness) -> Self {
        Self {
            id: node.info.id.clone(),
            region: node.info.region.clone(),
            zone: node.info.zone.clone(),
            public_url: node.info.public_url.clone(),
            grpc_url: node.info.grpc_url.clone(),
            rtmp_url: node.info.rtmp_url.clone(),
            version: node.info.version.clone(),
            roles: node.roles(),
            capabilities: node.info.capabilities.clone(),
            capacity: node.info.capacity,
            load: node.load,
            score: select::load_score(node),
            healthy: node.healthy,
            draining: node.draining,
            eligible: select::is_eligible(node, freshness),
            last_seen_ms_ago: freshness.now_ms.saturating_sub(node.last_seen_ms),
            streams: node.streams.keys().cloned().collect(),
            labels: node.info.labels.clone(),
        }
    }
}

/// One stream across the cluster, as `GET /api/v1/streams` lists it.
#[derive(Debug, Serialize)]
pub struct StreamView {
    pub name: String,
    /// The node holding the publisher (a non-relay protocol), or null.
    pub origin: Option<String>,
    /// How the stream reaches its origin (`whip`, `rtmp`, `ftl`, ...), or null.
    pub protocol: Option<Protocol>,
    /// Nodes holding it as a relay pull.
    pub relays: Vec<String>,
    /// Viewers per node holding it.
    pub viewers: BTreeMap<String, u32>,
    pub total_viewers: u64,
    /// The tracks, as the origin (else any holder) reports them.
    pub tracks: Vec<Track>,
}

/// Every stream in `nodes`, by name.
pub fn stream_views(nodes: &[Node]) -> Vec<StreamView> {
    let mut views: BTreeMap<&str, StreamView> = BTreeMap::new();
    for node in nodes {
        for (name, held) in &node.streams {
            let view = views.entry(name).or_insert_with(|| StreamView {
                name: name.clone(),
                origin: None,
                protocol: None,
                relays: Vec::new(),
                viewers: BTreeMap::new(),
                total_viewers: 0,
                tracks: Vec::new(),
            });
            if held.protocol == Protocol::Relay {
                view.relays.push(node.info.id.clone());
                if view.tracks.is_empty() {
                    view.tracks.clone_from(&held.tracks);
                }
            } else if view.origin.is_none() {
                view.origin = Some(node.info.id.clone());
                view.protocol = Some(held.protocol);
                if !held.tracks.is_empty() {
                    view.tracks.clone_from(&held.tracks);
                }
            }
            view.viewers.insert(node.info.id.clone(), held.viewers);
            view.total_viewers += u64::from(held.viewers);
        }
    }
    views.into_values().collect()
}

/// `GET /api/v1/nodes`
pub async fn nodes(State(state): State<HttpState>) -> Result<Json<Vec<NodeView>>, Error> {
    let freshness = state.freshness();
    let nodes = state.view.nodes().await?;
    Ok(Json(
        nodes.iter().map(|n| NodeView::new(n, freshness)).collect(),
    ))
}

/// `GET /api/v1/nodes/{id}`
pub async fn node(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, Error> {
    let node = state
        .store
        .node(&id)
        .await?
        .ok_or(Error::NodeNotFound(id))?;
    Ok(Json(NodeView::new(&node, state.freshness())))
}

/// `GET /api/v1/streams`
pub async fn streams(State(state): State<HttpState>) -> Result<Json<Vec<StreamView>>, Error> {
    let nodes = state.view.nodes().await?;
    Ok(Json(stream_views(&nodes)))
}

/// `GET /api/v1/streams/{name}`
pub async fn stream(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Result<Json<StreamView>, Error> {
    let nodes = state.view.nodes().await?;
    stream_views(&nodes)
        .into_iter()
        .find(|view| view.name == name)
        .map(Json)
        .ok_or(Error::StreamNotFound(name))
}

/// `POST /api/v1/nodes/{id}/drain` (admin)
pub async fn drain(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NodeView>, Error> {
    set_draining(&state, &id, &headers, true).await
}

/// `POST /api/v1/nodes/{id}/undrain` (admin)
pub async fn undrain(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<NodeView>, Error> {
    set_draining(&state, &id, &headers, false).await
}

/// Tells the node (`ModuleService.Configure`), then records it: a node that cannot be told
/// keeps its state (502).
async fn set_draining(
    state: &HttpState,
    id: &str,
    headers: &HeaderMap,
    draining: bool,
) -> Result<Json<NodeView>, Error> {
    state.require_admin(headers)?;
    let node = state
        .store
        .node(id)
        .await?
        .ok_or_else(|| Error::NodeNotFound(id.to_owned()))?;
    state.clients.set_draining(&node.info, draining).await?;
    state
        .store
        .set_draining(id, draining)
        .await?
        .ok_or_else(|| Error::NodeNotFound(id.to_owned()))?;
    tracing::info!(node = id, draining, "drain set by admin");
    let node = state
        .store
        .node(id)
        .await?
        .ok_or_else(|| Error::NodeNotFound(id.to_owned()))?;
    Ok(Json(NodeView::new(&node, state.freshness())))
}

/// `DELETE /api/v1/streams/{name}` (admin): ends the stream on its origin node
/// (`EntityService.DestroyEntity`); relays end when their upstream does. `204` when ended,
/// `404` when no node holds its publisher (or the origin says it is already gone).
pub async fn end_stream(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    state.require_admin(&headers)?;
    let nodes = state.view.fresh().await?;
    let origin = nodes
        .iter()
        .find(|node| node.is_origin_of(&name))
        .ok_or_else(|| Error::StreamNotFound(name.clone()))?;
    let ended = state
        .clients
        .end_stream(&origin.info, &name, "ended by admin")
        .await?;
    // The node reports StreamEnded too; forget it now so answers change at once.
    state.store.stream_ended(origin.id(), &name).await?;
    if ended {
        tracing::info!(stream = %name, node = %origin.info.id, "stream ended by admin");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Error::StreamNotFound(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeInfo, StreamLocation};

    fn holder(id: &str, stream: &str, protocol: Protocol, viewers: u32) -> Node {
        let held = StreamLocation {
            name: stream.into(),
            protocol,
            tracks: Vec::new(),
            viewers,
            started_at_ms: 0,
            origin_node_id: "a".into(),
        };
        Node::announced(
            NodeInfo {
                id: id.into(),
                ..NodeInfo::default()
            },
            [held],
            0,
            0,
        )
    }

    #[test]
    fn streams_show_origin_relays_and_viewers() {
        let nodes = vec![
            holder("a", "demo", Protocol::Whip, 1),
            holder("b", "demo", Protocol::Relay, 3),
            holder("c", "demo", Protocol::Relay, 0),
            holder("c2", "other", Protocol::Rtmp, 2),
        ];
        let views = stream_views(&nodes);
        assert_eq!(views.len(), 2);
        let demo = serde_json::to_value(&views[0]).unwrap();
        assert_eq!(
            demo,
            serde_json::json!({
                "name": "demo",
                "origin": "a",
                "protocol": "whip",
                "relays": ["b", "c"],
                "viewers": {"a": 1, "b": 3, "c": 0},
                "total_viewers": 4,
                "tracks": [],
            })
        );
        assert_eq!(views[1].origin.as_deref(), Some("c2"));
    }
}
