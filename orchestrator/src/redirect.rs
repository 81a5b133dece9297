//! WHIP and WHEP through the orchestrator: `POST /whip`, `POST /whip/{stream}` and
//! `POST /whep/{stream}` answer `307 Temporary Redirect` to the chosen edge.
//!
//! - WHIP: the stream key (`Authorization: Bearer <key>`) is checked with the Service first, so
//!   a bad key is refused here (401/403/503/400). The `Location` is always the named-stream
//!   form with a short-lived publish ticket, `{edge}/whip/{stream}?ticket=...`, because
//!   browsers and curl drop `Authorization` when a redirect changes host.
//! - WHEP (viewer): `{edge}/whep/{stream}`, no ticket.
//! - WHEP (relay): an edge asking where to pull a stream sends
//!   `Authorization: Bearer <cluster token>` and `?node=<its id>`, and is sent to
//!   `{holder}/whep/{stream}?ticket=<relay ticket>`.
//!
//! The request body (the SDP offer) is never read: the client re-sends it to the `Location`.
//! Nodes come from the shared [`crate::view`] (at most a second old); a stream it does not hold
//! is looked up in the store before the answer is `404`.
//! Owns the request-to-selection plumbing, the `Location` shape and the `kind` of each decision
//! counted (refusals of the per-client POST limit too); the choice itself is `select`'s.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use waveguide_control::cluster::{TicketKey, TicketScope, bearer_matches};
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::IngestProtocol;

use crate::error::Error;
use crate::http::HttpState;
use crate::node::Node;
use crate::region::client_ip;
use crate::select::{self, Refusal};
use crate::telemetry;

/// Query parameters of the redirect endpoints; others are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct RedirectQuery {
    /// Preferred region for a publisher, overriding the client-address lookup.
    pub region: Option<String>,
    /// The requesting node's id, for a relay pull.
    pub node: Option<String>,
}

/// `POST /whip`: the stream is the one the key resolves to.
pub async fn whip(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<RedirectQuery>,
    headers: HeaderMap,
) -> Response {
    decided("whip", publish(&state, None, peer, &query, &headers).await)
}

/// `POST /whip/{stream}`
pub async fn whip_named(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    Query(query): Query<RedirectQuery>,
    headers: HeaderMap,
) -> Response {
    decided(
        "whip",
        publish(&state, Some(&stream), peer, &query, &headers).await,
    )
}

/// `POST /whep/{stream}`: a viewer, or a relaying edge (`?node=` + cluster token).
pub async fn whep(
    State(state): State<HttpState>,
    Path(stream): Path<String>,
    Query(query): Query<RedirectQuery>,
    headers: HeaderMap,
) -> Response {
    match query.node.as_deref() {
        Some(requester) => decided("relay", relay(&state, &stream, requester, &headers).await),
        None => decided("whep", watch(&state, &stream).await),
    }
}

/// Counts a POST the per-client limit refused (`outcome="rate_limited"`) under the kind its
/// handler would have counted, so refusals sit next to the decisions they replaced.
pub fn count_rate_limited(request: &Request) {
    telemetry::decision(decision_kind(request.uri()), "rate_limited");
}

/// `whip`, `whep` or `relay`, read from the request the way the handlers route it.
fn decision_kind(uri: &Uri) -> &'static str {
    if uri.path().starts_with("/whip") {
        return "whip";
    }
    // The handler's own query parsing; a query it cannot parse never becomes a relay.
    match Query::<RedirectQuery>::try_from_uri(uri) {
        Ok(Query(RedirectQuery { node: Some(_), .. })) => "relay",
        _ => "whep",
    }
}

/// Counts the decision and turns it into the response.
fn decided(kind: &'static str, result: Result<String, Error>) -> Response {
    match result {
        Ok(location) => {
            telemetry::decision(kind, "redirect");
            redirect_to(&location)
        }
        Err(err) => {
            telemetry::decision(kind, err.outcome());
            tracing::debug!(kind, %err, "redirect refused");
            err.into_response()
        }
    }
}

fn redirect_to(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (
            StatusCode::TEMPORARY_REDIRECT,
            [
                (header::LOCATION, value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        // A node registered a public_url that cannot be a header; report it, do not panic.
        Err(_) => Error::NoEdge("request (the chosen edge's public_url is not a valid URL)")
            .into_response(),
    }
}

async fn publish(
    state: &HttpState,
    stream: Option<&str>,
    peer: SocketAddr,
    query: &RedirectQuery,
    headers: &HeaderMap,
) -> Result<String, Error> {
    let client = client_ip(headers, peer);
    let remote_addr = SocketAddr::new(client, if client == peer.ip() { peer.port() } else { 0 });
    let stream = state
        .service
        .authorize_publish(
            IngestProtocol::Whip,
            PublishRequest {
                stream,
                key: bearer_key(headers),
                remote_addr: Some(remote_addr),
                ticket: None,
            },
        )
        .await?;
    let region = query
        .region
        .as_deref()
        .filter(|r| !r.is_empty())
        .or_else(|| state.regions.region_of(client));
    let nodes = state.view.nodes().await?;
    let node = select::for_publisher(&nodes, &stream, region, state.freshness())
        .map_err(|_| Error::NoEdge("publisher"))?;
    tracing::info!(%stream, node = %node.info.id, client = %client, region = region.unwrap_or(""), "WHIP redirect");
    Ok(publish_location(
        node,
        &stream,
        &state.tickets,
        state.ticket_ttl,
        SystemTime::now(),
    ))
}

async fn watch(state: &HttpState, stream: &str) -> Result<String, Error> {
    check_stream_name(stream)?;
    let mut nodes = state.view.nodes().await?;
    let mut chosen = select::for_viewer(&nodes, stream, state.freshness());
    if matches!(chosen, Err(Refusal::StreamNotFound)) {
        // The view may predate the stream (another orchestrator recorded it): ask the store.
        nodes = state.view.fresh().await?;
        chosen = select::for_viewer(&nodes, stream, state.freshness());
    }
    let chosen = chosen.map_err(|refusal| match refusal {
        Refusal::StreamNotFound => Error::StreamNotFound(stream.to_owned()),
        Refusal::NoEdge => Error::NoEdge("viewer"),
    })?;
    tracing::debug!(%stream, node = %chosen.node.info.id, relays = chosen.relays, "WHEP redirect");
    Ok(format!("{}/whep/{stream}", chosen.node.info.public_url))
}

async fn relay(
    state: &HttpState,
    stream: &str,
    requester: &str,
    headers: &HeaderMap,
) -> Result<String, Error> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bearer_matches(authorization, &state.cluster_token) {
        return Err(Error::Unauthenticated);
    }
    check_stream_name(stream)?;
    let mut nodes = state.view.nodes().await?;
    let mut upstream = select::for_relay(&nodes, stream, requester, state.freshness());
    if matches!(upstream, Err(Refusal::StreamNotFound)) {
        nodes = state.view.fresh().await?;
        upstream = select::for_relay(&nodes, stream, requester, state.freshness());
    }
    let upstream = upstream.map_err(|refusal| match refusal {
        Refusal::StreamNotFound => Error::StreamNotFound(stream.to_owned()),
        Refusal::NoEdge => Error::NoEdge("relay pull"),
    })?;
    tracing::info!(%stream, node = %requester, upstream = %upstream.info.id, "relay redirect");
    Ok(relay_location(
        upstream,
        stream,
        &state.tickets,
        state.ticket_ttl,
        SystemTime::now(),
    ))
}

/// `{public_url}/whip/{stream}?ticket={publish ticket}`.
pub fn publish_location(
    node: &Node,
    stream: &str,
    tickets: &TicketKey,
    ttl: std::time::Duration,
    now: SystemTime,
) -> String {
    let ticket = tickets.sign(TicketScope::Publish, stream, ttl, now);
    format!("{}/whip/{stream}?ticket={ticket}", node.info.public_url)
}

/// `{public_url}/whep/{stream}?ticket={relay ticket}`.
pub fn relay_location(
    node: &Node,
    stream: &str,
    tickets: &TicketKey,
    ttl: std::time::Duration,
    now: SystemTime,
) -> String {
    let ticket = tickets.sign(TicketScope::Relay, stream, ttl, now);
    format!("{}/whep/{stream}?ticket={ticket}", node.info.public_url)
}

/// The key of `Authorization: Bearer <key>`, if sent.
fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|key| !key.is_empty())
}

/// Stream names go into URLs: the same rule as the edges (`[A-Za-z0-9._-]`, 1–128 bytes).
fn check_stream_name(stream: &str) -> Result<(), Error> {
    let valid = !stream.is_empty()
        && stream.len() <= 128
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "`{stream}` is not a stream name ([A-Za-z0-9._-], at most 128 bytes)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeInfo;
    use std::time::Duration;

    fn edge(url: &str) -> Node {
        Node::announced(
            NodeInfo {
                id: "edge-a".into(),
                public_url: url.into(),
                ..NodeInfo::default()
            },
            [],
            0,
            0,
        )
    }

    #[test]
    fn locations_carry_a_ticket_the_edges_accept() {
        let key = TicketKey::new("cluster-secret");
        let now = SystemTime::now();
        let node = edge("http://127.0.0.1:18081");
        let location = publish_location(&node, "demo", &key, Duration::from_secs(60), now);
        let ticket = location
            .strip_prefix("http://127.0.0.1:18081/whip/demo?ticket=")
            .unwrap_or_else(|| panic!("unexpected Location {location}"));
        assert!(
            ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"~-._".contains(&b)),
            "{ticket}"
        );
        key.verify_for(ticket, TicketScope::Publish, "demo", now)
            .unwrap();
        assert!(
            key.verify_for(ticket, TicketScope::Relay, "demo", now)
                .is_err()
        );

        let location = relay_location(&node, "demo", &key, Duration::from_secs(60), now);
        let ticket = location
            .strip_prefix("http://127.0.0.1:18081/whep/demo?ticket=")
            .unwrap_or_else(|| panic!("unexpected Location {location}"));
        key.verify_for(ticket, TicketScope::Relay, "demo", now)
            .unwrap();
        // Expired after its TTL; another cluster's key refuses it.
        assert!(key.verify(ticket, now + Duration::from_secs(61)).is_err());
        assert!(TicketKey::new("other").verify(ticket, now).is_err());
    }

    #[test]
    fn rate_limited_posts_count_under_their_handlers_kind() {
        let kind = |uri: &str| decision_kind(&uri.parse().unwrap());
        assert_eq!(kind("/whip"), "whip");
        assert_eq!(kind("/whip/demo?region=eu"), "whip");
        assert_eq!(kind("/whep/demo"), "whep");
        assert_eq!(kind("/whep/demo?node=edge-b"), "relay");
        assert_eq!(kind("/whep/demo?region=eu&node="), "relay");
    }

    #[test]
    fn bearer_keys_and_stream_names() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_key(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer  k3y ".parse().unwrap());
        assert_eq!(bearer_key(&headers), Some("k3y"));
        headers.insert(header::AUTHORIZATION, "Basic k3y".parse().unwrap());
        assert_eq!(bearer_key(&headers), None);
        assert!(check_stream_name("demo-1.x_y").is_ok());
        assert!(check_stream_name("a/b").is_err());
        assert!(check_stream_name("").is_err());
    }
}
