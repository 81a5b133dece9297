//! `waveguide-edge`: one HTTP server (WHIP, WHEP, player, REST, metrics) and a small fixed set
//! of WebRTC UDP ports, wired around the control's engine.

mod api;
mod config;
mod router;

use anyhow::Context;
use clap::Parser;
use config::{EdgeConfig, LogFormat};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};
use waveguide_control::Engine;
use waveguide_control::http::SignalingState;
use waveguide_control::service::{Service, ServiceKind};
use waveguide_control::stream::Streams;

const CONFIG_HELP: &str = "\
Config file keys (TOML; env WAVEGUIDE_<SECTION>_<KEY> overrides each; see deploy/edge.example.toml):
  [http]     listen (addr, 0.0.0.0:8080), public_url (base URL for Location), cors_origins ([] = any)
  [webrtc]   udp_port (8189; shard i uses udp_port+i), shards (0 = one per core),
             public_ip (NAT 1:1 address advertised), bind_ips ([] = every interface address),
             ice_servers (STUN/TURN URLs sent in Link headers)
  [service]  kind (\"open\" | \"static\" | \"webhook\"), [[service.streams]] name, key | key_sha256,
             ftl_channel; webhook: url, timeout_ms (2000), cache_ttl_secs (30)
  [viewers]  reconnect_grace_secs (15), queue_packets (4096)
  [ftl]      enabled (true), listen (0.0.0.0:8084), media_port (8085)
  [rtmp]     enabled (true), listen (0.0.0.0:1935); publish to rtmp://HOST:1935/live/<stream key>
  [log]      format (\"text\" | \"json\"), filter (tracing filter; RUST_LOG wins)";

/// Waveguide edge node: publish over WHIP, watch over WHEP.
///
/// Every config key can also be set by an environment variable named
/// WAVEGUIDE_<SECTION>_<KEY>, e.g. WAVEGUIDE_WEBRTC_PUBLIC_IP=203.0.113.7.
#[derive(Debug, Parser)]
#[command(name = "waveguide-edge", version, after_help = CONFIG_HELP)]
struct Cli {
    /// TOML config file (see deploy/edge.example.toml). Without one, an open local edge runs.
    #[arg(long, env = "WAVEGUIDE_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address (overrides http.listen), e.g. 127.0.0.1:8080.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// First WebRTC UDP port (overrides webrtc.udp_port); shard i uses port + i.
    #[arg(long)]
    udp_port: Option<u16>,
    /// Log as JSON lines (overrides log.format).
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(http) = cli.http {
        config.http.listen = http;
    }
    if let Some(port) = cli.udp_port {
        config.webrtc.udp_port = port;
    }
    if cli.log_json {
        config.log.format = LogFormat::Json;
    }
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config))
}

/// The engine's dependencies log every unusual DTLS extension and state change at info/warn;
/// the edge reports what matters itself.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_dtls=error,rtc_ice=warn,rtc_srtp=warn";

fn init_logging(config: &EdgeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            config.log.filter.as_deref().unwrap_or(DEFAULT_LOG_FILTER),
        )
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(config: EdgeConfig) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("waveguide_join_seconds".into()),
            &[
                0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
            ],
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let service = Service::new(config.service.clone()).map_err(anyhow::Error::msg)?;
    let streams = Arc::new(Streams::default());
    let engine = Engine::start(&config.webrtc, &config.viewers, service, streams)
        .await
        .context("starting the WebRTC engine")?;
    let state = SignalingState {
        engine: Arc::clone(&engine),
        public_url: config.http.public_url.clone(),
    };
    let app = router::build(state, metrics, &config.http.cors_origins);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding HTTP {}", config.http.listen))?;
    if config.ftl.enabled {
        let ftl = tokio::net::TcpListener::bind(config.ftl.listen)
            .await
            .with_context(|| format!("binding FTL {}", config.ftl.listen))?;
        let (ftl_config, ftl_engine) = (config.ftl.clone(), Arc::clone(&engine));
        tokio::spawn(async move {
            if let Err(e) = waveguide_inputs::ftl::serve(ftl, ftl_config, ftl_engine).await {
                tracing::error!("FTL stopped: {e}");
            }
        });
    }
    if config.rtmp.enabled {
        let rtmp = tokio::net::TcpListener::bind(config.rtmp.listen)
            .await
            .with_context(|| format!("binding RTMP {}", config.rtmp.listen))?;
        tokio::spawn(waveguide_inputs::rtmp::serve(rtmp, Arc::clone(&engine)));
    }
    announce(&config, &engine, listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("HTTP server")?;
    info!("stopped");
    Ok(())
}

fn announce(config: &EdgeConfig, engine: &Engine, bound: SocketAddr) {
    let base = config.http.public_url.clone().unwrap_or_else(|| {
        let host = if bound.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            bound.ip().to_string()
        };
        format!("http://{host}:{}", bound.port())
    });
    info!("player:       {base}/");
    info!("publish page: {base}/publish");
    info!("WHIP (OBS):   {base}/whip   (Bearer Token = stream key)");
    info!("WHEP:         {base}/whep/<stream>");
    if config.rtmp.enabled {
        let host = match config.rtmp.listen.ip() {
            ip if ip.is_unspecified() => base
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split([':', '/']).next())
                .unwrap_or("localhost")
                .to_owned(),
            ip => ip.to_string(),
        };
        let port = config.rtmp.listen.port();
        info!("RTMP (OBS/ffmpeg): rtmp://{host}:{port}/live/<stream key>");
    }
    if config.ftl.enabled {
        info!(
            "FTL:          control {} (ftl_app -s \"<channel>-<key>\"), media UDP {}",
            config.ftl.listen, config.ftl.media_port
        );
    }
    info!(
        "WebRTC UDP:   ports {}..={}",
        config.webrtc.udp_port,
        config.webrtc.udp_port as usize + engine_shards(config) - 1
    );
    match engine.service().kind() {
        ServiceKind::Open => warn!(
            "AUTH IS OPEN: anyone who reaches this node can publish any stream. Set [service] kind = \"static\" or \"webhook\" for keys."
        ),
        ServiceKind::Static => info!(
            "auth: static keys for {} stream(s)",
            engine.service().streams().len()
        ),
        ServiceKind::Webhook => info!(
            "auth: webhook {}",
            config.service.url.as_deref().unwrap_or("?")
        ),
    }
}

fn engine_shards(config: &EdgeConfig) -> usize {
    if config.webrtc.shards > 0 {
        config.webrtc.shards
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}
