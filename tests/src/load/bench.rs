//! The benchmark (`waveguide-load bench`): the edge pinned to one core, the load tool on
//! another, viewers ramped in steps (a fresh edge and a fresh load run per step, so each step's
//! memory is its own), one table; then [the limit](super::limit) on the edge's core, and the
//! ratio. The last line of the output is one JSON object ([`BenchReport`]).
//!
//! With `--shards N` the edge runs N shards pinned to N cores and the tool to the others;
//! steps are viewers per edge core (a step of 400 is 1,600 viewers at N = 4), and the scaling
//! efficiency compares the result with a one-shard run's viewers per core.
//!
//! "Viewers per core" is the largest step in which every viewer joined, the steady window lost
//! less than 0.1 % of packets, and the edge's core was not saturated: the edge process used
//! less than `max_edge_cpu` of it and the core was busy less than [`SATURATED_CORE_PCT`] %
//! (kernel work for the edge and other processes included), so it kept the stream's pace
//! rather than queueing.

use super::clip::{Clip, ensure_clip};
use super::config::{LoadConfig, SrtpChoice, VideoSpec};
use super::error::LoadError;
use super::limit::{self, LimitPlan, LimitResult, SendMode};
use super::procstat::{Units, host_cpu, sample};
use super::report::Report;
use super::run::{progress, run};
use super::server::{EdgeSpec, KEY, STREAM, SpawnedEdge, allowed_cores, pin_current_thread_to};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest step.
pub const MAX_STEP: usize = 5_000;
/// A step whose edge core was busy this much (%) counts as saturated.
pub const SATURATED_CORE_PCT: f64 = 97.0;

/// What the benchmark does.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub edge: EdgeSpec,
    /// Cores of the load tool (the edge's are `edge.cores`); the first also drains the limit.
    pub tool_cores: Vec<usize>,
    /// Viewers per core of a one-shard run on this host, for the scaling efficiency of a
    /// several-shard run.
    pub single_shard_viewers_per_core: Option<usize>,
    pub steps: Vec<usize>,
    /// Length of each step's steady window.
    pub step_secs: Duration,
    /// Viewers started per second within a step.
    pub ramp: f64,
    pub video: VideoSpec,
    pub audio_kbps: u32,
    pub clip: Option<PathBuf>,
    pub srtp: SrtpChoice,
    pub threads: usize,
    pub verify_every: u32,
    /// A step whose edge used this share of its core or more is saturated.
    pub max_edge_cpu: f64,
    /// Limit send modes to measure; empty: no limit.
    pub limit_modes: Vec<SendMode>,
    pub limit_probe: Duration,
    pub limit_batch: usize,
    pub limit_max: usize,
    /// Before each step and the limit, wait up to this long for the rest of the host to use
    /// less than `quiet_cores` (a shared machine's builds and tests skew every figure).
    pub quiet_wait: Duration,
    pub quiet_cores: f64,
}

impl BenchPlan {
    pub fn new() -> Self {
        Self {
            edge: EdgeSpec::new(),
            tool_cores: Vec::new(),
            single_shard_viewers_per_core: None,
            steps: vec![100, 200, 300, 350, 400, 450, 500],
            step_secs: Duration::from_secs(8),
            ramp: 100.0,
            video: VideoSpec::default(),
            audio_kbps: 64,
            clip: None,
            srtp: SrtpChoice::Default,
            threads: 1,
            verify_every: 20,
            max_edge_cpu: 0.9,
            limit_modes: vec![SendMode::SendTo, SendMode::Sendmmsg],
            limit_probe: Duration::from_secs(2),
            limit_batch: 32,
            limit_max: 5_000,
            quiet_wait: Duration::ZERO,
            quiet_cores: 0.1,
        }
    }
}

impl Default for BenchPlan {
    fn default() -> Self {
        Self::new()
    }
}

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub viewers: usize,
    pub joined: usize,
    /// What the viewers received (SRTP datagrams' UDP payload), Mbit/s.
    pub egress_mbps: f64,
    pub packets_per_s: f64,
    /// The edge process's CPU (user + system, all threads), % of one core.
    pub edge_cpu_pct: Option<f64>,
    /// Busy share of the edge's core (kernel work done there for it included), %.
    pub edge_core_busy_pct: Option<f64>,
    pub cpu_us_per_packet: Option<f64>,
    pub loss_pct: f64,
    pub join_p50_ms: Option<f64>,
    pub join_p95_ms: Option<f64>,
    pub delay_p50_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    pub rss_per_viewer_kib: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    pub other_cpu_cores: Option<f64>,
    pub udp_rcvbuf_errors: Option<u64>,
    /// Whether the step counts for viewers per core.
    pub ok: bool,
    /// Why not, when it does not.
    pub note: String,
}

/// The benchmark's result; printed as the last line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub viewers_per_core: usize,
    pub limit_viewers_per_core: Option<usize>,
    pub limit_ratio: Option<f64>,
    /// The same limit with `sendmmsg` batching.
    pub limit_sendmmsg_viewers_per_core: Option<usize>,
    /// Figures of the step at `viewers_per_core` (of the first step when none qualified).
    pub loss_pct: f64,
    pub join_p95_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    pub rss_per_viewer_kib: Option<f64>,
    pub cpu_us_per_packet: Option<f64>,
    /// Viewers the edge's core would carry at 100 % CPU, from the best step's µs per packet.
    pub viewers_per_core_at_full_cpu: Option<usize>,
    pub video_kbps: u32,
    pub shards: u16,
    /// Cores the edge was pinned to (one per shard).
    pub edge_cores: usize,
    /// `viewers_per_core` over that of one shard on one core (`--single-shard-viewers`):
    /// 1.0 is linear scaling.
    pub scaling_efficiency: Option<f64>,
    /// The edge's `[webrtc] direct_send`.
    pub direct_send: bool,
    pub other_cpu_cores_max: Option<f64>,
    pub steps: Vec<Step>,
    pub limit: Vec<LimitResult>,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn step_of(plan: &BenchPlan, viewers: usize, r: &Report) -> Step {
    let edge_cores = plan.edge.cores.len().max(1) as f64;
    // Per core of the edge: the process's CPU and its cores' busy share, averaged.
    let edge_cpu_per_core = r.server_cpu_cores.map(|c| c / edge_cores);
    let busy: Vec<f64> = plan
        .edge
        .cores
        .iter()
        .filter_map(|&c| r.core_busy.get(c).copied())
        .collect();
    let core_busy =
        (!busy.is_empty()).then(|| round1(busy.iter().sum::<f64>() / busy.len() as f64 * 100.0));
    let edge_cpu = r.server_cpu_cores;
    let us = edge_cpu
        .filter(|_| r.rx_packets_per_s > 0.0)
        .map(|c| (c * 1e6 / r.rx_packets_per_s * 100.0).round() / 100.0);
    let mut notes = Vec::new();
    if r.viewers_joined < viewers {
        notes.push(format!("{} of {viewers} joined", r.viewers_joined));
    }
    if r.loss_pct_window >= limit::MAX_LOSS_PCT {
        notes.push("loss".to_owned());
    }
    if edge_cpu_per_core.is_none_or(|c| c >= plan.max_edge_cpu) {
        notes.push("edge saturated".to_owned());
    } else if core_busy.is_some_and(|b| b >= SATURATED_CORE_PCT) {
        // The edge's core was full, of the edge's kernel work or of other processes: the
        // edge could not have taken more, whatever its own CPU says.
        notes.push("edge core saturated".to_owned());
    }
    if r.tool_cpu_cores.is_some_and(|c| c >= 0.95) {
        notes.push("tool saturated".to_owned());
    }
    let ok = notes.iter().all(|n| n == "tool saturated");
    Step {
        viewers,
        joined: r.viewers_joined,
        egress_mbps: round1(r.rx_mbps),
        packets_per_s: r.rx_packets_per_s,
        edge_cpu_pct: edge_cpu_per_core.map(|c| round1(c * 100.0)),
        edge_core_busy_pct: core_busy,
        cpu_us_per_packet: us,
        loss_pct: r.loss_pct_window,
        join_p50_ms: r.join_ms_p50,
        join_p95_ms: r.join_ms_p95,
        delay_p50_ms: r.delay_ms_p50,
        delay_p99_ms: r.delay_ms_p99,
        rss_per_viewer_kib: r.server_rss_kib_per_viewer.map(round1),
        tool_cpu_pct: r.tool_cpu_cores.map(|c| round1(c * 100.0)),
        other_cpu_cores: r.other_cpu_cores,
        udp_rcvbuf_errors: r.udp_rcvbuf_errors,
        ok,
        note: notes.join(", "),
    }
}

/// Waits (up to `plan.quiet_wait`, in one-second looks) until the host outside this process
/// uses less than `plan.quiet_cores`; says what it saw.
fn wait_quiet(plan: &BenchPlan) {
    if plan.quiet_wait.is_zero() {
        return;
    }
    let units = Units::of_host();
    let deadline = Instant::now() + plan.quiet_wait;
    let mut other = f64::NAN;
    loop {
        let (h0, s0) = (host_cpu(), sample(None));
        std::thread::sleep(Duration::from_secs(1));
        let (h1, s1) = (host_cpu(), sample(None));
        if let (Some(h0), Some(h1), Some(s0), Some(s1)) = (h0, h1, s0, s1) {
            let host = h1.busy.saturating_sub(h0.busy) as f64
                / units.ticks_per_second as f64
                / s1.at.duration_since(s0.at).as_secs_f64();
            other = (host - units.cores(&s0, &s1)).max(0.0);
            if other < plan.quiet_cores {
                return;
            }
        }
        if Instant::now() >= deadline {
            progress(format_args!(
                "bench: the host is not quiet ({other:.2} cores used by others); going on"
            ));
            return;
        }
    }
}

fn run_step(plan: &BenchPlan, viewers: usize, clip: &std::path::Path) -> Result<Step, LoadError> {
    wait_quiet(plan);
    let edge = SpawnedEdge::start(&plan.edge)?;
    progress(format_args!(
        "bench: step {viewers} viewers, edge pid {} (log {})",
        edge.pid(),
        edge.log_path().display()
    ));
    let ramp = super::schedule::ramp_length(viewers, plan.ramp);
    let mut config = LoadConfig::new(
        Some(edge.url(&format!("/whip/{STREAM}"))),
        edge.url(&format!("/whep/{STREAM}")),
        viewers,
        // The run's steady window opens one second after the last viewer started.
        ramp + Duration::from_secs(1) + plan.step_secs,
    );
    config.whip_token = Some(KEY.to_owned());
    config.ramp = plan.ramp;
    config.video = plan.video;
    config.audio_kbps = plan.audio_kbps;
    config.threads = plan.threads;
    config.server_pid = Some(edge.pid());
    config.clip = Some(clip.to_owned());
    config.srtp = plan.srtp;
    config.verify_every = plan.verify_every;
    let report = run(&config)?;
    Ok(step_of(plan, viewers, &report))
}

/// Runs the benchmark. Pins the calling thread (and so every thread it starts) to the tool's
/// core first.
pub fn bench(plan: &BenchPlan) -> Result<BenchReport, LoadError> {
    if plan.steps.is_empty() || plan.steps.iter().any(|&s| s == 0 || s > MAX_STEP) {
        return Err(LoadError::Config(format!(
            "--steps must be 1..={MAX_STEP} each"
        )));
    }
    if plan.step_secs < Duration::from_secs(2) || plan.step_secs > Duration::from_secs(600) {
        return Err(LoadError::Config(
            "--step-secs must be 2 s to 10 min".into(),
        ));
    }
    let cores = allowed_cores();
    for &core in plan.edge.cores.iter().chain(&plan.tool_cores) {
        if !cores.contains(&core) {
            return Err(LoadError::Config(format!(
                "core {core} is not available (allowed: {cores:?})"
            )));
        }
    }
    if !plan.tool_cores.is_empty() {
        pin_current_thread_to(&plan.tool_cores)?;
    }
    let clip_path = match &plan.clip {
        Some(p) => p.clone(),
        None => ensure_clip(&plan.video, &crate::target_dir().join("waveguide-load"))?,
    };
    let mut steps = Vec::new();
    for &per_core in &plan.steps {
        let viewers = per_core * plan.edge.cores.len().max(1);
        let step = run_step(plan, viewers, &clip_path)?;
        progress(format_args!(
            "bench: {viewers} viewers: {} Mbps, edge CPU {:?} %, loss {} %, join p95 {:?} ms, \
             delay p99 {:?} ms{}",
            step.egress_mbps,
            step.edge_cpu_pct,
            step.loss_pct,
            step.join_p95_ms,
            step.delay_p99_ms,
            if step.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", step.note)
            }
        ));
        steps.push(step);
    }
    let best = steps.iter().filter(|s| s.ok).max_by_key(|s| s.viewers);
    let shown = best.or(steps.first());
    let at_full = steps
        .iter()
        .filter(|s| s.ok)
        .filter_map(|s| Some((s.cpu_us_per_packet?, s.packets_per_s / s.viewers as f64)))
        .map(|(us, pps)| (1e6 / us / pps) as usize)
        .max();

    let mut limits = Vec::new();
    if !plan.limit_modes.is_empty() {
        let clip = Arc::new(Clip::load(&clip_path)?);
        let gop_secs = f64::from(plan.video.gop) / f64::from(plan.video.fps.max(1));
        // A whole number of GOPs, at least the asked length.
        let gops = (plan.limit_probe.as_secs_f64() / gop_secs).ceil().max(1.0);
        let limit_plan = LimitPlan {
            clip,
            fps: plan.video.fps,
            audio_kbps: plan.audio_kbps,
            sender_core: plan.edge.cores.first().copied(),
            drain_core: plan.tool_cores.first().copied(),
            probe: Duration::from_secs_f64(gops * gop_secs),
            max_receivers: plan.limit_max,
            batch: plan.limit_batch,
        };
        progress(format_args!(
            "bench: the limit on core {:?}, {:.1} s probes",
            plan.edge.cores.first(),
            limit_plan.probe.as_secs_f64()
        ));
        wait_quiet(plan);
        limits = limit::measure(&limit_plan, &plan.limit_modes)?;
    }
    // Steps count viewers of the whole edge; per core is per shard's core.
    let edge_cores = plan.edge.cores.len().max(1);
    let viewers_per_core = best.map_or(0, |s| s.viewers / edge_cores);
    let limit_of = |mode| limits.iter().find(|l| l.mode == mode).map(|l| l.viewers);
    let limit_viewers = limit_of(SendMode::SendTo);
    Ok(BenchReport {
        viewers_per_core,
        limit_viewers_per_core: limit_viewers,
        limit_ratio: limit_viewers
            .filter(|&l| l > 0)
            .map(|l| (viewers_per_core as f64 / l as f64 * 1000.0).round() / 1000.0),
        limit_sendmmsg_viewers_per_core: limit_of(SendMode::Sendmmsg),
        loss_pct: shown.map_or(0.0, |s| s.loss_pct),
        join_p95_ms: shown.and_then(|s| s.join_p95_ms),
        delay_p99_ms: shown.and_then(|s| s.delay_p99_ms),
        rss_per_viewer_kib: shown.and_then(|s| s.rss_per_viewer_kib),
        cpu_us_per_packet: shown.and_then(|s| s.cpu_us_per_packet),
        viewers_per_core_at_full_cpu: at_full,
        video_kbps: plan.video.bitrate_kbps,
        shards: plan.edge.shards,
        edge_cores,
        scaling_efficiency: plan
            .single_shard_viewers_per_core
            .filter(|&one| one > 0)
            .map(|one| (viewers_per_core as f64 / one as f64 * 1000.0).round() / 1000.0),
        direct_send: plan.edge.direct_send,
        other_cpu_cores_max: steps
            .iter()
            .filter_map(|s| s.other_cpu_cores)
            .reduce(f64::max),
        steps,
        limit: limits,
    })
}

impl BenchReport {
    /// The step table, the limit, and the verdict (without the JSON line).
    pub fn table(&self) -> String {
        let o = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v}"));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| viewers | egress Mbps | packets/s | edge CPU % | core busy % | CPU µs/packet | \
             loss % | join p50 / p95 ms | delay p50 / p99 ms | RSS KiB/viewer | tool CPU % | \
             other CPU | note |"
        );
        let _ = writeln!(
            out,
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} |",
                s.viewers,
                s.egress_mbps,
                s.packets_per_s,
                o(s.edge_cpu_pct),
                o(s.edge_core_busy_pct),
                o(s.cpu_us_per_packet),
                s.loss_pct,
                o(s.join_p50_ms),
                o(s.join_p95_ms),
                o(s.delay_p50_ms),
                o(s.delay_p99_ms),
                o(s.rss_per_viewer_kib),
                o(s.tool_cpu_pct),
                o(s.other_cpu_cores),
                if s.ok && s.note.is_empty() {
                    "ok"
                } else {
                    &s.note
                },
            );
        }
        let _ = writeln!(out);
        for l in &self.limit {
            let _ = writeln!(
                out,
                "limit ({}, AES-128-GCM SRTP, one core): {} viewers = {} packets/s, {} Mbps; \
                 {} µs per packet unpaced",
                l.mode, l.viewers, l.packets_per_s, l.mbps, l.us_per_packet
            );
        }
        let _ = writeln!(
            out,
            "viewers per core: edge {} (shards = {} on {} cores, direct_send = {}, {} kbps video), limit {} → ratio {}",
            self.viewers_per_core,
            self.shards,
            self.edge_cores,
            self.direct_send,
            self.video_kbps,
            self.limit_viewers_per_core
                .map_or("-".to_owned(), |v| v.to_string()),
            o(self.limit_ratio)
        );
        if let Some(full) = self.viewers_per_core_at_full_cpu {
            let _ = writeln!(
                out,
                "edge at 100 % of its core, from its CPU µs per packet: about {full} viewers"
            );
        }
        if let Some(e) = self.scaling_efficiency {
            let _ = writeln!(out, "scaling efficiency against one shard on one core: {e}");
        }
        let _ = writeln!(
            out,
            "other CPU on the host (max over steps): {} cores",
            o(self.other_cpu_cores_max)
        );
        out
    }

    /// The JSON line: the headline figures, then the detail.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
