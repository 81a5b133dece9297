//! `waveguide-load`: load-tests a WHIP/WHEP server on loopback with one synthetic publisher
//! and many real WebRTC viewers. The work is in `waveguide_tests::load`; this is the CLI.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use reqwest::Url;
use std::path::PathBuf;
use std::time::Duration;
use waveguide_tests::load::{self, LoadConfig, SrtpChoice, VideoSpec, parse_duration};

/// Publish a synthetic H.264 + Opus stream over WHIP and watch it with N WHEP viewers (real
/// ICE, DTLS and SRTP), then print viewers connected, join time, loss, per-packet delay,
/// received bitrate, and the CPU of the server (--server-pid) and of this tool. Loopback
/// targets only.
#[derive(Debug, Parser)]
#[command(name = "waveguide-load", version)]
struct Args {
    /// WHIP endpoint to publish to, e.g. http://127.0.0.1:8080/whip/demo. Without it the
    /// viewers watch a stream published by someone else (and no delay is measured).
    #[arg(long)]
    whip: Option<Url>,
    /// Bearer token for WHIP (the stream key).
    #[arg(long, env = "WAVEGUIDE_LOAD_WHIP_TOKEN")]
    whip_token: Option<String>,
    /// WHEP endpoint to watch, e.g. http://127.0.0.1:8080/whep/demo.
    #[arg(long)]
    whep: Url,
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
    /// Worker threads for the viewers [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Process id of the server, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Annex-B H.264 file to send instead of the generated clip (must start with an IDR).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// SRTP profiles the peers offer.
    #[arg(long, value_enum, default_value_t = Srtp::Default)]
    srtp: Srtp,
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = LoadConfig::new(args.whip, args.whep, args.viewers, args.duration);
    config.whip_token = args.whip_token;
    config.whep_token = args.whep_token;
    config.ramp = args.ramp;
    config.video = VideoSpec {
        fps: args.fps,
        gop: (args.gop.as_secs_f64() * f64::from(args.fps)).round() as u32,
        bitrate_kbps: args.video_kbps,
        ..VideoSpec::default()
    };
    config.audio_kbps = args.audio_kbps;
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    config.server_pid = args.server_pid;
    config.clip = args.clip;
    config.socket_buffer = args.socket_buffer;
    config.verify_every = args.verify_every;
    config.srtp = match args.srtp {
        Srtp::Default => SrtpChoice::Default,
        Srtp::Gcm => SrtpChoice::Gcm,
        Srtp::Cm => SrtpChoice::Cm,
    };
    let report = load::run(&config).context("load run failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
