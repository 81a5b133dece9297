//! The node's load as the orchestrator weighs it: viewers, publishers, bitrates, CPU, memory.

use super::node::NodeIdentity;
use std::time::Instant;
use waveguide_control::Engine;
use waveguide_control::stream::IngestProtocol;
use waveguide_proto::v1;

/// Samples process CPU between two calls.
#[derive(Debug)]
pub struct LoadSampler {
    last: Option<(Instant, u64)>,
    cores: f64,
    ticks_per_sec: f64,
}

impl Default for LoadSampler {
    fn default() -> Self {
        Self {
            last: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            // USER_HZ is 100 on every Linux ABI the edge runs on.
            ticks_per_sec: 100.0,
        }
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl LoadSampler {
    /// The load now. Egress is estimated as each stream's ingest bitrate times its viewers:
    /// video is forwarded, never re-encoded, so that is what leaves the node.
    pub fn sample(&mut self, engine: &Engine, identity: &NodeIdentity) -> v1::NodeLoad {
        let now = Instant::now();
        let cpu = match (cpu_ticks(), self.last) {
            (Some(ticks), Some((then, before))) => {
                let secs = now.duration_since(then).as_secs_f64();
                self.last = Some((now, ticks));
                if secs > 0.0 {
                    (ticks.saturating_sub(before) as f64 / self.ticks_per_sec / secs / self.cores)
                        .clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
            (Some(ticks), None) => {
                self.last = Some((now, ticks));
                0.0
            }
            (None, _) => 0.0,
        };
        // A saturated shard refuses new viewers: the orchestrator must see the node as that
        // much fuller, whatever the process's CPU share says (all shards saturated = full).
        let shards = engine.shard_loads();
        let saturated = shards.iter().filter(|(_, _, s)| *s).count();
        let cpu = cpu.max(saturated as f64 / shards.len().max(1) as f64);
        let statuses = engine.streams().statuses(now);
        let mut load = v1::NodeLoad {
            cpu,
            memory_bytes: resident_bytes(),
            capacity: Some(identity.capacity(engine)),
            draining: engine.limits().is_draining(),
            ..Default::default()
        };
        for s in &statuses {
            let bitrate: u64 = s.tracks.iter().map(|t| t.bitrate_bps).sum();
            let egress = bitrate * s.viewers as u64;
            load.viewers += s.viewers as u32;
            load.streams += 1;
            if s.state == "live" {
                load.publishers += u32::from(s.protocol != IngestProtocol::Relay);
            }
            load.relay_pulls += u32::from(s.protocol == IngestProtocol::Relay);
            load.ingress_bps += bitrate;
            load.egress_bps += egress;
            load.per_stream.push(v1::StreamLoad {
                name: s.name.clone(),
                viewers: s.viewers as u32,
                egress_bps: egress,
            });
        }
        load
    }
}
