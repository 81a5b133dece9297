//! Building blocks of the cluster tests: an orchestrator's fixed addresses and config, an edge
//! configured as a cluster member, and polls for what the orchestrator's REST API shows.

use crate::edge::http_client;
use crate::ffmpeg::Ffmpeg;
use crate::{EdgeProcess, poll_until, ports};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The cluster token every process of a test shares.
pub const TOKEN: &str = "cluster-secret";
/// How long the cluster may take to converge after a change (the bound).
pub const CONVERGE: Duration = Duration::from_secs(10);
/// How often polls look.
pub const POLL: Duration = Duration::from_millis(100);

/// Stream `demo`, key `demo-key`, on the orchestrator and every edge.
pub const SERVICE: &str =
    "[service]\nkind = \"static\"\n[[service.streams]]\nname = \"demo\"\nkey = \"demo-key\"\n";

/// The ports an orchestrator is reached at, fixed before it starts so edges can be told.
#[derive(Clone, Copy)]
pub struct OrchestratorAddr {
    /// HTTP port.
    pub http: u16,
    /// gRPC port.
    pub grpc: u16,
}

impl Default for OrchestratorAddr {
    fn default() -> Self {
        Self::new()
    }
}

impl OrchestratorAddr {
    /// Two free ports.
    pub fn new() -> Self {
        Self {
            http: ports::free_port(),
            grpc: ports::free_port(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

pub fn orchestrator_config(addr: OrchestratorAddr, redis: Option<&str>) -> String {
    let store = match redis {
        Some(url) => format!("[store]\nkind = \"redis\"\nurl = \"{url}\"\n"),
        None => "[store]\nkind = \"memory\"\n".to_owned(),
    };
    format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\n[cluster]\ntoken = \"{TOKEN}\"\n{store}{SERVICE}",
        addr.http, addr.grpc
    )
}

/// An edge of the cluster: `roles` as in `[node] roles`; an ingest-only edge takes no end
/// viewers (`max_viewers = 0`), so viewers must land elsewhere and come through a relay.
pub fn start_edge(id: &str, roles: &[&str], orchestrator: OrchestratorAddr) -> EdgeProcess {
    let http = ports::free_port();
    let ingest_only = roles == ["ingest"];
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\
         [cluster]\ntoken = \"{TOKEN}\"\n\
         [orchestrator]\nurl = \"http://127.0.0.1:{}\"\ngrpc = \"http://127.0.0.1:{}\"\n\
         [node]\nid = \"{id}\"\nregion = \"eu\"\npublic_url = \"http://127.0.0.1:{http}\"\nroles = [{}]\ndrain_secs = 5\n{}\
         [viewers]\nreconnect_grace_secs = 20\n{SERVICE}",
        orchestrator.http,
        orchestrator.grpc,
        roles.join(", "),
        if ingest_only { "max_viewers = 0\n" } else { "" },
    );
    EdgeProcess::start_member(&config)
}

pub fn get_json(url: &str) -> Option<Value> {
    let r = http_client().get(url).send().ok()?;
    (r.status() == 200).then(|| r.json().ok()).flatten()
}

pub fn node_ids(orchestrator: &OrchestratorAddr) -> Vec<String> {
    let mut ids: Vec<String> = get_json(&orchestrator.url("/api/v1/nodes"))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

pub fn wait_nodes(orchestrator: &OrchestratorAddr, want: &[&str]) -> Duration {
    let start = Instant::now();
    poll_until(
        &format!("orchestrator lists exactly {want:?}"),
        CONVERGE,
        POLL,
        || (node_ids(orchestrator) == want).then_some(()),
    );
    start.elapsed()
}

/// `GET /api/v1/streams/{name}` once its origin is `origin`.
pub fn wait_stream_origin(orchestrator: &OrchestratorAddr, name: &str, origin: &str) -> Value {
    poll_until(
        &format!("stream {name} with origin {origin}"),
        CONVERGE,
        POLL,
        || {
            get_json(&orchestrator.url(&format!("/api/v1/streams/{name}")))
                .filter(|s| s["origin"] == origin)
        },
    )
}

pub fn rtmp_publish(edge: &EdgeProcess, seconds: u32) -> Ffmpeg {
    let url = format!("rtmp://127.0.0.1:{}/live/demo-key", edge.rtmp_port());
    Ffmpeg::publish(
        &url,
        seconds,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-bf",
            "0",
            "-g",
            "30",
        ],
        &["-c:a", "aac"],
    )
}

/// POSTs a stub offer to an orchestrator's redirect endpoint `url` (with `Bearer key` when
/// given), without following: the status and the `Location` (empty when there is none).
pub fn redirect(url: &str, key: Option<&str>) -> (u16, String) {
    let mut request = http_client()
        .post(url)
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n");
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let response = request.send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), location)
}
