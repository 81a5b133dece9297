//! `waveguide-load`: load-tests a WHIP/WHEP server on loopback with one synthetic publisher
//! and many real WebRTC viewers. The work is in `waveguide_tests::load`; this is the CLI.
//!
//! - `waveguide-load --whep URL …`: one load run against a running server.
//! - `waveguide-load bench`: starts the edge itself, pinned, ramps viewers, measures the limit.
//! - `waveguide-load churn`: join/leave cycles; the server's RSS and fds before and after.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use std::path::PathBuf;
use std::time::Duration;
use waveguide_tests::load::bench::{self, BenchPlan};
use waveguide_tests::load::churn::{self, ChurnPlan};
use waveguide_tests::load::limit::SendMode;
use waveguide_tests::load::server::{EdgeSpec, KEY, STREAM, SpawnedEdge};
use waveguide_tests::load::{self, LoadConfig, SrtpChoice, VideoSpec, parse_duration};

/// Publish a synthetic H.264 + Opus stream over WHIP and watch it with N WHEP viewers (real
/// ICE, DTLS and SRTP), then print viewers connected, join time, loss, per-packet delay,
/// received bitrate, and the CPU of the server (--server-pid) and of this tool. Loopback
/// targets only. Subcommands: `bench` (the benchmark) and `churn` (join/leave cycles).
#[derive(Debug, Parser)]
#[command(
    name = "waveguide-load",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The benchmark: the edge pinned to one core, viewers ramped in steps, the limit, the ratio.
    ///
    /// Starts the edge (target/release/waveguide-edge, or --edge-bin; shards = 1, static key
    /// demo/demo-key, no POST rate limit, no gRPC/RTMP/FTL) pinned to --edge-core, runs the
    /// viewers on --tool-core, ramps them in steps (a fresh edge per step) and prints one
    /// table: viewers, egress Mbps, packets/s, edge CPU %, busy % of the edge's core, CPU µs
    /// per packet, loss %, join p50/p95, added delay p50/p99, edge RSS per viewer.
    ///
    /// Then the limit: on the edge's core, a bare loop that SRTP-protects the same stream
    /// (AES-128-GCM with rtc's SRTP, as the edge negotiates) per receiver and sends it with
    /// one sendto per packet per viewer (as the edge does; and batched with sendmmsg) to plain
    /// loopback UDP sockets drained on the tool's core; the highest receiver count that keeps
    /// the stream's pace with < 0.1 % loss is the limit.
    ///
    /// "Viewers per core" (edge) is the largest step in which every viewer joined, the steady
    /// window lost < 0.1 % of packets, and the edge's core was not saturated: the edge used
    /// less than --max-edge-cpu of it and the core was busy < 97 % (its kernel work and other
    /// processes included). The last line of the output is one JSON object: viewers_per_core,
    /// limit_viewers_per_core, limit_ratio, loss_pct, join_p95_ms, delay_p99_ms,
    /// rss_per_viewer_kib, and the detail (every step, every limit probe).
    Bench(BenchArgs),
    /// Join/leave churn: the server's RSS and open fds before and after N viewers came and went.
    ///
    /// Viewers join (WHEP POST, ICE, DTLS, first complete keyframe) and
    /// leave (DELETE) a few at a time; the server's RSS (/proc/PID/statm) and open fds
    /// (/proc/PID/fd) after a warm-up and at the end, and their growth. Without --whep it
    /// starts an edge itself (as `bench` does, unpinned).
    Churn(ChurnArgs),
}

/// The synthetic stream.
#[derive(Debug, Args)]
struct MediaArgs {
    /// Video bitrate of the generated clip, kbit/s.
    #[arg(long, default_value_t = 2_500)]
    video_kbps: u32,
    /// Video frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Keyframe interval (e.g. 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    gop: Duration,
    /// Opus bitrate, kbit/s (sets the size of the dummy 20 ms frames).
    #[arg(long, default_value_t = 64)]
    audio_kbps: u32,
    /// Annex-B H.264 file to send instead of the generated clip (must start with an IDR).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// SRTP profiles the peers offer.
    #[arg(long, value_enum, default_value_t = Srtp::Default)]
    srtp: Srtp,
    /// Spread each frame's packets at this multiple of the video bitrate, as a WebRTC
    /// sender's pacer does (libwebrtc: 2.5); delay is still timed from each packet's send.
    /// Unset: each frame at once.
    #[arg(long)]
    pace: Option<f64>,
}

impl MediaArgs {
    fn video(&self) -> VideoSpec {
        VideoSpec {
            fps: self.fps,
            gop: (self.gop.as_secs_f64() * f64::from(self.fps)).round() as u32,
            bitrate_kbps: self.video_kbps,
            pacing: self.pace,
            ..VideoSpec::default()
        }
    }

    fn srtp(&self) -> SrtpChoice {
        match self.srtp {
            Srtp::Default => SrtpChoice::Default,
            Srtp::Gcm => SrtpChoice::Gcm,
            Srtp::Cm => SrtpChoice::Cm,
        }
    }

    fn apply(&self, config: &mut LoadConfig) {
        config.video = self.video();
        config.audio_kbps = self.audio_kbps;
        config.clip = self.clip.clone();
        config.srtp = self.srtp();
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// WHIP endpoint to publish to, e.g. http://127.0.0.1:8080/whip/demo. Without it the
    /// viewers watch a stream published by someone else (and no delay is measured).
    #[arg(long)]
    whip: Option<Url>,
    /// Bearer token for WHIP (the stream key).
    #[arg(long, env = "WAVEGUIDE_LOAD_WHIP_TOKEN")]
    whip_token: Option<String>,
    /// WHEP endpoint to watch, e.g. http://127.0.0.1:8080/whep/demo (required without a
    /// subcommand).
    #[arg(long)]
    whep: Option<Url>,
    /// Bearer token for WHEP, if the server wants one.
    #[arg(long, env = "WAVEGUIDE_LOAD_WHEP_TOKEN")]
    whep_token: Option<String>,
    /// Number of viewers (at most 5000).
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// How long the viewers run, from the first one's start (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Viewers started per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    /// Worker threads for the viewers [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Process id of the server, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Receive buffer requested per viewer socket, bytes (capped by net.core.rmem_max).
    #[arg(long, default_value_t = 1 << 20)]
    socket_buffer: usize,
    /// After a viewer joined, decrypt, authenticate and time only one RTP packet in N; the
    /// others are counted (loss) from their clear header. 1 verifies every packet.
    #[arg(long, default_value_t = 1)]
    verify_every: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    media: MediaArgs,
}

#[derive(Debug, Args)]
struct EdgeArgs {
    /// The edge binary [default: <target>/release/waveguide-edge].
    #[arg(long)]
    edge_bin: Option<PathBuf>,
    /// `[webrtc] shards` of the edge.
    #[arg(long, default_value_t = 1)]
    shards: u16,
    /// Every packet through rtc's write path (`[webrtc] direct_send = false`), for comparison
    /// with the direct path.
    #[arg(long)]
    rtc_write_path: bool,
}

impl EdgeArgs {
    fn spec(&self) -> EdgeSpec {
        let mut spec = EdgeSpec::new();
        if let Some(bin) = &self.edge_bin {
            spec.bin = bin.clone();
        }
        spec.shards = self.shards;
        spec.direct_send = !self.rtc_write_path;
        spec
    }
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    edge: EdgeArgs,
    /// Core the edge is pinned to (and the limit loop runs on); with --shards N, the first of
    /// N consecutive cores.
    #[arg(long, default_value_t = 0)]
    edge_core: usize,
    /// The edge's cores, instead of --edge-core and the ones after it (they may overlap the
    /// tool's on a small host: the edge's CPU time is still its own).
    #[arg(long, value_delimiter = ',')]
    edge_cores: Vec<usize>,
    /// Core the load tool is pinned to (and the limit's receivers).
    #[arg(long, default_value_t = 1)]
    tool_core: usize,
    /// The tool's cores, instead of --tool-core.
    #[arg(long, value_delimiter = ',')]
    tool_cores: Vec<usize>,
    /// Viewers per core measured with one shard on this host: the JSON line then has the
    /// scaling efficiency viewers(N) / (N x viewers(1)).
    #[arg(long)]
    single_shard_viewers: Option<usize>,
    /// Viewer counts of the steps, per edge core; finer near the edge's limit, where the
    /// answer lies.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,400,500,550,600,650,700"
    )]
    steps: Vec<usize>,
    /// Steady window of each step (after the ramp and one second to settle).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    step_secs: Duration,
    /// Viewers started per second within a step.
    #[arg(long, default_value_t = 100.0)]
    ramp: f64,
    /// Viewer worker threads (on the tool's core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Decrypt, authenticate and time one RTP packet in N per viewer after its join (the
    /// rest are counted from their clear header), so one core can watch many viewers.
    #[arg(long, default_value_t = 20)]
    verify_every: u32,
    /// Edge CPU (% of its core) at or above which a step counts as saturated.
    #[arg(long, default_value_t = 90.0)]
    max_edge_cpu: f64,
    /// Skip the limit measurement.
    #[arg(long)]
    no_limit: bool,
    /// Measure the limit with one sendto per packet only (not also with sendmmsg).
    #[arg(long)]
    no_sendmmsg: bool,
    /// Media time of one limit probe (rounded up to whole GOPs).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    limit_probe: Duration,
    /// Datagrams per sendmmsg in the batched limit.
    #[arg(long, default_value_t = 32)]
    limit_batch: usize,
    /// Before each step and the limit, wait up to this long for the rest of the host to go
    /// quiet (other processes using < 0.1 core); 0 does not wait.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    quiet_wait: Duration,
    #[command(flatten)]
    media: MediaArgs,
}

#[derive(Debug, Args)]
struct ChurnArgs {
    /// WHIP endpoint to publish the stream to (with --whep). Without --whep an edge is
    /// started and published to.
    #[arg(long)]
    whip: Option<Url>,
    #[arg(long, env = "WAVEGUIDE_LOAD_WHIP_TOKEN")]
    whip_token: Option<String>,
    /// WHEP endpoint the viewers join.
    #[arg(long)]
    whep: Option<Url>,
    #[arg(long, env = "WAVEGUIDE_LOAD_WHEP_TOKEN")]
    whep_token: Option<String>,
    /// Process id of the server (its RSS and fds are the result).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Measured join/leave cycles.
    #[arg(long, default_value_t = 1_000)]
    cycles: usize,
    /// Cycles before the first sample.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Viewers in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Cycles started per second at most.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long a viewer may take to get its first keyframe.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    join_timeout: Duration,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    edge: EdgeArgs,
    #[command(flatten)]
    media: MediaArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Srtp {
    /// AES-GCM first, then AES-CM (browsers' order).
    Default,
    /// AES-128-GCM only.
    Gcm,
    /// AES-128-CM-HMAC-SHA1-80 only.
    Cm,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let Some(whep) = args.whep else {
        bail!("--whep is required (or use a subcommand: bench, churn; see --help)");
    };
    let mut config = LoadConfig::new(args.whip, whep, args.viewers, args.duration);
    config.whip_token = args.whip_token;
    config.whep_token = args.whep_token;
    config.ramp = args.ramp;
    args.media.apply(&mut config);
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    config.server_pid = args.server_pid;
    config.socket_buffer = args.socket_buffer;
    config.verify_every = args.verify_every;
    let report = load::run(&config).context("load run failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut plan = BenchPlan::new();
    plan.edge = args.edge.spec();
    let shards = usize::from(plan.edge.shards.max(1));
    plan.edge.cores = if args.edge_cores.is_empty() {
        (args.edge_core..args.edge_core + shards).collect()
    } else {
        args.edge_cores.clone()
    };
    plan.tool_cores = if args.tool_cores.is_empty() {
        vec![args.tool_core]
    } else {
        args.tool_cores.clone()
    };
    plan.single_shard_viewers_per_core = args.single_shard_viewers;
    plan.steps = args.steps;
    plan.step_secs = args.step_secs;
    plan.ramp = args.ramp;
    plan.video = args.media.video();
    plan.audio_kbps = args.media.audio_kbps;
    plan.clip = args.media.clip.clone();
    plan.srtp = args.media.srtp();
    plan.threads = args.threads;
    plan.verify_every = args.verify_every;
    plan.max_edge_cpu = args.max_edge_cpu / 100.0;
    plan.limit_modes = match (args.no_limit, args.no_sendmmsg) {
        (true, _) => vec![],
        (false, true) => vec![SendMode::SendTo],
        (false, false) => vec![SendMode::SendTo, SendMode::Sendmmsg],
    };
    plan.limit_probe = args.limit_probe;
    plan.limit_batch = args.limit_batch.clamp(1, 1024);
    plan.quiet_wait = args.quiet_wait.min(Duration::from_secs(600));
    let report = bench::bench(&plan).context("benchmark failed")?;
    print!("{}", report.table());
    println!("{}", report.json_line());
    Ok(())
}

fn churn(args: ChurnArgs) -> anyhow::Result<()> {
    // Without a target, an edge of our own (kept alive until the end of this function).
    let (edge, whip, whip_token, whep, pid) = match args.whep {
        Some(whep) => (None, args.whip, args.whip_token, whep, args.server_pid),
        None => {
            let edge = SpawnedEdge::start(&args.edge.spec()).context("start the edge")?;
            let whip = Some(edge.url(&format!("/whip/{STREAM}")));
            let whep = edge.url(&format!("/whep/{STREAM}"));
            let pid = Some(edge.pid());
            (Some(edge), whip, Some(KEY.to_owned()), whep, pid)
        }
    };
    let mut config = LoadConfig::new(whip, whep, 0, Duration::from_secs(1));
    config.whip_token = whip_token;
    config.whep_token = args.whep_token;
    config.server_pid = pid;
    config.threads = args.threads;
    args.media.apply(&mut config);
    let plan = ChurnPlan {
        load: config,
        cycles: args.cycles,
        warmup: args.warmup,
        concurrency: args.concurrency,
        rate: args.rate,
        join_timeout: args.join_timeout,
    };
    let report = churn::run(&plan).context("churn failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    drop(edge);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Churn(args)) => churn(args),
    }
}
