//! The orchestrator's Prometheus metrics: the recorder, the metric names and their help.
//!
//! - `waveguide_orchestrator_decisions_total{kind="whip"|"whep"|"relay", outcome=...}`: one per
//!   redirect request; outcome `redirect`, `unauthorized`, `forbidden`, `bad_request`,
//!   `service_unavailable`, `not_found`, `no_edge`, `error` or `rate_limited` (refused by
//!   `[limits]` before any decision).
//! - `waveguide_orchestrator_nodes`, `waveguide_orchestrator_streams`: live nodes and distinct
//!   live streams in the registry, refreshed by the sweeper and on every scrape.
//! - `waveguide_orchestrator_build_info{version, proto}`: always 1.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::node::Node;

const DECISIONS: &str = "waveguide_orchestrator_decisions_total";
const NODES: &str = "waveguide_orchestrator_nodes";
const STREAMS: &str = "waveguide_orchestrator_streams";
const BUILD_INFO: &str = "waveguide_orchestrator_build_info";

/// How often the recorder drains histogram buckets; the exporter requires it when it runs
/// without its own HTTP listener.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::describe_counter!(
        DECISIONS,
        "WHIP, WHEP and relay redirect requests, by outcome."
    );
    metrics::describe_gauge!(NODES, "Live nodes in the registry.");
    metrics::describe_gauge!(STREAMS, "Distinct live streams in the registry.");
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the running version and gRPC package."
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "proto" => waveguide_proto::PACKAGE,
    )
    .set(1.0);
    Ok(handle)
}

/// Counts one redirect decision.
pub fn decision(kind: &'static str, outcome: &'static str) {
    metrics::counter!(DECISIONS, "kind" => kind, "outcome" => outcome).increment(1);
}

/// Sets the node and stream gauges from the registry.
pub fn set_registry_gauges(nodes: &[Node]) {
    let streams: BTreeSet<&str> = nodes
        .iter()
        .flat_map(|node| node.streams.keys().map(String::as_str))
        .collect();
    // Counts far below 2^53: exact as f64.
    metrics::gauge!(NODES).set(nodes.len() as f64);
    metrics::gauge!(STREAMS).set(streams.len() as f64);
}
