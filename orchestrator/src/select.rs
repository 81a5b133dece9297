//! Selection: which node a publisher, a viewer or a relaying edge is sent to. Pure functions
//! over the registry's [`Node`] records; no I/O.
//!
//! The policy:
//!
//! - **Load score** of a node = the largest of `viewers / max_viewers`,
//!   `egress_bps / max_egress_bps` and `cpu` (0.0–1.0), from its last heartbeat; a zero capacity
//!   field means "no limit" and its term is left out. A node has **headroom** while its score
//!   is below 1.0.
//! - A node is **eligible** only when it is healthy (its last `HealthCheck` answered), not
//!   draining and fresh (heard from within three heartbeats). Others get nothing new.
//! - **WHIP** (publish): if an eligible WHIP-ingest node already holds the stream's publisher,
//!   there (the edge answers a duplicate itself). Otherwise among eligible nodes with
//!   `CAPABILITY_INGEST_WHIP` and headroom, those in the client's region (`?region=`, else the
//!   `[[regions]]` network of the client address) if any, else all; least score first.
//! - **WHEP** (watch stream S): among eligible nodes with `CAPABILITY_EGRESS_WHEP` that already
//!   hold S and have headroom, the least loaded; else the least loaded eligible node with
//!   `CAPABILITY_EGRESS_WHEP` + `CAPABILITY_RELAY` and headroom, which pulls S from a holder.
//!   `404` when no node holds S at all, `503` when S exists but no node can serve it.
//! - **Relay** (an edge asks where to pull S from): the holders of S other than the asking
//!   node, whatever their capabilities, that are healthy, fresh and not draining; relay pulls
//!   are not held to `max_viewers`, so the score leaves the viewers term out.
//! - Ties are broken by node id, so every orchestrator answers the same for the same registry.

use std::cmp::Ordering;

use crate::node::{Capability, Node};

/// When a record is fresh enough to send work to.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub now_ms: u64,
    pub max_age_ms: u64,
}

/// Why nothing was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No node holds the stream.
    StreamNotFound,
    /// The stream exists (or a publisher could come), but no node can take the work now.
    NoEdge,
}

/// Where a viewer goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewerSelection<'a> {
    pub node: &'a Node,
    /// The node does not hold the stream yet and will pull it from another edge.
    pub relays: bool,
}

/// The node's load score (see the module docs).
pub fn load_score(node: &Node) -> f64 {
    score(node, true)
}

/// The score without the viewers term, for relay pulls.
pub fn relay_score(node: &Node) -> f64 {
    score(node, false)
}

fn score(node: &Node, count_viewers: bool) -> f64 {
    let capacity = &node.info.capacity;
    let load = &node.load;
    let mut score = load.cpu;
    if count_viewers && capacity.max_viewers > 0 {
        score = score.max(f64::from(load.viewers) / f64::from(capacity.max_viewers));
    }
    if capacity.max_egress_bps > 0 {
        // Precision lost above 2^53 bps does not matter for a ratio.
        let ratio = load.egress_bps as f64 / capacity.max_egress_bps as f64;
        score = score.max(ratio);
    }
    score
}

pub fn has_headroom(node: &Node) -> bool {
    load_score(node) < 1.0
}

/// Healthy, not draining and fresh.
pub fn is_eligible(node: &Node, freshness: Freshness) -> bool {
    node.healthy && !node.draining && node.is_fresh(freshness.now_ms, freshness.max_age_ms)
}

/// Least score first, then node id.
fn by_score(scorer: fn(&Node) -> f64) -> impl Fn(&&Node, &&Node) -> Ordering {
    move |a, b| {
        scorer(a)
            .total_cmp(&scorer(b))
            .then_with(|| a.info.id.cmp(&b.info.id))
    }
}

/// The edge a WHIP publisher of `stream` is sent to.
pub fn for_publisher<'a>(
    nodes: &'a [Node],
    stream: &str,
    region: Option<&str>,
    freshness: Freshness,
) -> Result<&'a Node, Refusal> {
    let can_ingest =
        |node: &&Node| is_eligible(node, freshness) && node.has(Capability::IngestWhip);
    if let Some(current) = nodes
        .iter()
        .filter(can_ingest)
        .filter(|node| node.is_origin_of(stream))
        .min_by(by_score(load_score))
    {
        return Ok(current);
    }
    let candidates: Vec<&Node> = nodes
        .iter()
        .filter(can_ingest)
        .filter(|node| has_headroom(node))
        .collect();
    let in_region = |node: &&&Node| region.is_some_and(|r| node.info.region == r);
    let pool: Vec<&Node> = if candidates.iter().any(|n| in_region(&n)) {
        candidates.into_iter().filter(|n| in_region(&n)).collect()
    } else {
        candidates
    };
    pool.into_iter()
        .min_by(by_score(load_score))
        .ok_or(Refusal::NoEdge)
}

/// The edge a WHEP viewer of `stream` is sent to.
pub fn for_viewer<'a>(
    nodes: &'a [Node],
    stream: &str,
    freshness: Freshness,
) -> Result<ViewerSelection<'a>, Refusal> {
    if !nodes.iter().any(|node| node.streams.contains_key(stream)) {
        return Err(Refusal::StreamNotFound);
    }
    let can_serve = |node: &&Node| {
        is_eligible(node, freshness) && node.has(Capability::EgressWhep) && has_headroom(node)
    };
    if let Some(holder) = nodes
        .iter()
        .filter(can_serve)
        .filter(|node| node.streams.contains_key(stream))
        .min_by(by_score(load_score))
    {
        return Ok(ViewerSelection {
            node: holder,
            relays: false,
        });
    }
    nodes
        .iter()
        .filter(can_serve)
        .filter(|node| node.has(Capability::Relay))
        .min_by(by_score(load_score))
        .map(|node| ViewerSelection { node, relays: true })
        .ok_or(Refusal::NoEdge)
}

/// The edge `requester` pulls `stream` from.
pub fn for_relay<'a>(
    nodes: &'a [Node],
    stream: &str,
    requester: &str,
    freshness: Freshness,
) -> Result<&'a Node, Refusal> {
    let holders: Vec<&Node> = nodes
        .iter()
        .filter(|node| node.info.id != requester && node.streams.contains_key(stream))
        .collect();
    if holders.is_empty() {
        return Err(Refusal::StreamNotFound);
    }
    holders
        .into_iter()
        .filter(|node| is_eligible(node, freshness))
        .min_by(by_score(relay_score))
        .ok_or(Refusal::NoEdge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Capacity, NodeInfo, NodeLoad, Protocol, StreamLocation};

    const NOW: Freshness = Freshness {
        now_ms: 10_000,
        max_age_ms: 3_000,
    };

    fn node(id: &str, region: &str, capabilities: &[Capability]) -> Node {
        let mut node = Node::announced(
            NodeInfo {
                id: id.into(),
                region: region.into(),
                public_url: format!("http://{id}"),
                capabilities: capabilities.to_vec(),
                capacity: Capacity {
                    max_viewers: 100,
                    max_egress_bps: 1_000_000,
                    ..Capacity::default()
                },
                ..NodeInfo::default()
            },
            [],
            0,
            NOW.now_ms,
        );
        node.load = NodeLoad::default();
        node
    }

    fn ingest(id: &str, region: &str) -> Node {
        node(
            id,
            region,
            &[Capability::IngestWhip, Capability::IngestRtmp],
        )
    }

    fn edge(id: &str) -> Node {
        node(id, "eu", &[Capability::EgressWhep, Capability::Relay])
    }

    fn with_viewers(mut node: Node, viewers: u32) -> Node {
        node.load.viewers = viewers;
        node
    }

    fn holding(mut node: Node, stream: &str, protocol: Protocol) -> Node {
        node.streams.insert(
            stream.into(),
            StreamLocation {
                name: stream.into(),
                protocol,
                tracks: Vec::new(),
                viewers: 0,
                started_at_ms: 0,
                origin_node_id: String::new(),
            },
        );
        node
    }

    fn id(result: Result<&Node, Refusal>) -> Result<&str, Refusal> {
        result.map(|n| n.info.id.as_str())
    }

    #[test]
    fn score_is_the_worst_term_and_zero_capacity_means_no_limit() {
        let mut n = edge("a");
        n.load.viewers = 50;
        n.load.egress_bps = 250_000;
        n.load.cpu = 0.1;
        assert!((load_score(&n) - 0.5).abs() < 1e-9);
        assert!((relay_score(&n) - 0.25).abs() < 1e-9);
        n.info.capacity = Capacity::default();
        assert!((load_score(&n) - 0.1).abs() < 1e-9);
        n.load.cpu = 1.0;
        assert!(!has_headroom(&n));
    }

    #[test]
    fn whip_prefers_the_client_region_then_the_least_loaded() {
        let nodes = vec![
            with_viewers(ingest("a", "eu"), 50),
            with_viewers(ingest("b", "eu"), 10),
            with_viewers(ingest("c", "us"), 0),
            edge("d"),
        ];
        assert_eq!(id(for_publisher(&nodes, "s", Some("eu"), NOW)), Ok("b"));
        assert_eq!(id(for_publisher(&nodes, "s", Some("us"), NOW)), Ok("c"));
        // An unknown region or none: the least loaded anywhere.
        assert_eq!(id(for_publisher(&nodes, "s", Some("ap"), NOW)), Ok("c"));
        assert_eq!(id(for_publisher(&nodes, "s", None, NOW)), Ok("c"));
    }

    #[test]
    fn whip_ties_break_by_id_and_full_regions_spill_over() {
        let nodes = vec![
            ingest("z", "eu"),
            ingest("m", "eu"),
            with_viewers(ingest("a", "us"), 100),
        ];
        assert_eq!(id(for_publisher(&nodes, "s", Some("eu"), NOW)), Ok("m"));
        let full = vec![with_viewers(ingest("a", "eu"), 100), ingest("b", "us")];
        assert_eq!(id(for_publisher(&full, "s", Some("eu"), NOW)), Ok("b"));
        let none = vec![with_viewers(ingest("a", "eu"), 100), edge("e")];
        assert_eq!(
            id(for_publisher(&none, "s", None, NOW)),
            Err(Refusal::NoEdge)
        );
    }

    #[test]
    fn whip_goes_back_to_the_node_holding_the_publisher() {
        let nodes = vec![
            ingest("a", "eu"),
            holding(with_viewers(ingest("b", "eu"), 99), "s", Protocol::Whip),
        ];
        assert_eq!(id(for_publisher(&nodes, "s", Some("eu"), NOW)), Ok("b"));
        assert_eq!(id(for_publisher(&nodes, "other", Some("eu"), NOW)), Ok("a"));
    }

    #[test]
    fn draining_unhealthy_and_stale_nodes_get_nothing_new() {
        let mut draining = ingest("a", "eu");
        draining.draining = true;
        let mut unhealthy = ingest("b", "eu");
        unhealthy.healthy = false;
        let mut stale = ingest("c", "eu");
        stale.last_seen_ms = NOW.now_ms - NOW.max_age_ms;
        let busy = with_viewers(ingest("d", "us"), 90);
        let nodes = vec![draining, unhealthy, stale, busy];
        assert_eq!(id(for_publisher(&nodes, "s", Some("eu"), NOW)), Ok("d"));

        let mut holder = holding(edge("e"), "s", Protocol::Whip);
        holder.draining = true;
        let nodes = vec![holder.clone()];
        assert_eq!(for_viewer(&nodes, "s", NOW), Err(Refusal::NoEdge));
        assert_eq!(
            for_relay(&nodes, "s", "x", NOW).map(|n| n.id()),
            Err(Refusal::NoEdge)
        );
    }

    #[test]
    fn whep_goes_to_the_least_loaded_holder_else_a_relaying_edge() {
        let origin = holding(ingest("origin", "eu"), "s", Protocol::Whip);
        let nodes = vec![
            origin.clone(),
            holding(with_viewers(edge("b"), 60), "s", Protocol::Relay),
            holding(with_viewers(edge("c"), 20), "s", Protocol::Relay),
            edge("d"),
        ];
        let chosen = for_viewer(&nodes, "s", NOW).unwrap();
        assert_eq!((chosen.node.id(), chosen.relays), ("c", false));

        // The holders are full: the least loaded relay-capable edge, which will pull.
        let nodes = vec![
            origin.clone(),
            holding(with_viewers(edge("b"), 100), "s", Protocol::Relay),
            with_viewers(edge("d"), 30),
            with_viewers(edge("e"), 10),
            node("f", "eu", &[Capability::EgressWhep]),
        ];
        let chosen = for_viewer(&nodes, "s", NOW).unwrap();
        assert_eq!((chosen.node.id(), chosen.relays), ("e", true));

        assert_eq!(
            for_viewer(&nodes, "missing", NOW),
            Err(Refusal::StreamNotFound)
        );
        let only_origin = vec![origin];
        assert_eq!(for_viewer(&only_origin, "s", NOW), Err(Refusal::NoEdge));
    }

    #[test]
    fn relay_excludes_the_requester_and_ignores_viewer_limits() {
        let nodes = vec![
            holding(
                with_viewers(ingest("origin", "eu"), 500),
                "s",
                Protocol::Whip,
            ),
            holding(edge("b"), "s", Protocol::Relay),
        ];
        // The origin is past max_viewers but relay pulls do not count against it; "b" asks.
        assert_eq!(id(for_relay(&nodes, "s", "b", NOW)), Ok("origin"));
        // Only the requester holds it: nobody to pull from.
        assert_eq!(
            id(for_relay(&nodes[1..], "s", "b", NOW)),
            Err(Refusal::StreamNotFound)
        );
        let mut busy_cpu = nodes.clone();
        busy_cpu[0].load.cpu = 0.9;
        assert_eq!(id(for_relay(&busy_cpu, "s", "c", NOW)), Ok("b"));
    }
}
