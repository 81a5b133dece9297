//! `waveguide-edge`: one HTTP server (WHIP, WHEP, player, REST, metrics) and a small fixed set
//! of WebRTC UDP ports, wired around the control's engine.

mod api;
mod cluster;
mod config;
mod grpc;
mod recording;
mod router;

use anyhow::Context;
use clap::Parser;
use cluster::Stop;
use cluster::drain::Drain;
use cluster::node::{BoundAddrs, NodeIdentity};
use cluster::reporter::{self, ReporterHandle, Target};
use config::{EdgeConfig, LogFormat};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};
use waveguide_control::Engine;
use waveguide_control::http::SignalingState;
use waveguide_control::rate::RateLimit;
use waveguide_control::serve::{Tls, read_pem_pair, serve};
use waveguide_control::service::{Service, ServiceKind};
use waveguide_control::stream::Streams;
use waveguide_inputs::relay::{Relay, RelayConfig};
use waveguide_outputs::player::PlayerConfig;
use waveguide_outputs::record::Recordings;

const CONFIG_HELP: &str = "\
Config file keys (TOML; env WAVEGUIDE_<SECTION>_<KEY> overrides each; see deploy/edge.example.toml):
  [http]     listen (addr, 0.0.0.0:8080), public_url (base URL for Location), cors_origins ([] = any),
             tls_cert + tls_key (PEM paths: serve HTTPS), max_connections (8192; 0 = no cap),
             max_connections_per_ip (256; an IPv6 /64 is one client), header_read_timeout_secs (10)
  [webrtc]   udp_port (8189; shard i uses udp_port+i), shards (0 = one per core),
             public_ip (NAT 1:1 address advertised), bind_ips ([] = every interface address),
             ice_servers (STUN/TURN URLs sent in Link headers), direct_send (true),
             shard_max_pps (0 = measured: a shard saturates on busy time and lag)
  [service]  kind (\"open\" | \"static\" | \"webhook\"), [[service.streams]] name, key | key_sha256,
             ftl_channel; webhook: url, timeout_ms (2000), cache_ttl_secs (30)
  [viewers]  reconnect_grace_secs (15), queue_packets (4096), max_delay_ms (300; 0 = no bound)
  [ftl]      enabled (true), listen (0.0.0.0:8084), media_port (8085), max_connections (512),
             max_connections_per_ip (8), connect_timeout_secs (10)
  [rtmp]     enabled (true), listen (0.0.0.0:1935); publish to rtmp://HOST:1935/live/<stream key>;
             max_connections (512), max_connections_per_ip (8), publish_timeout_secs (10)
  [grpc]     enabled (true), listen (0.0.0.0:50051), public_url (derived from listen),
             tls_cert + tls_key (PEM paths: gRPC over TLS)
  [cluster]  token (gRPC auth both ways + redirect tickets; unset = standalone),
             ca_cert (PEM CA of an https:// orchestrator gRPC; unset = web PKI roots)
  [orchestrator] url (HTTP, for relay), grpc (EventService), heartbeat_secs (1)
  [node]     id (host name), region, public_url, roles ([\"ingest\", \"edge\"]),
             max_viewers (unset = no limit; 0 = relay pulls only), max_egress_mbps (0 = no limit),
             max_publishers (unset = no limit)
             drain_secs (30: on SIGTERM, sessions may run this long before they are closed)
  [relay]    enabled (true), idle_grace_secs (30)
  [limits]   posts_per_minute (600 WHIP/WHEP POSTs per client IP; 0 = off), posts_burst (100),
             signals_per_minute (120 gRPC Signal streams per client IP), signals_burst (30)
  [record]   enabled (false: record every stream), streams ([] names recorded when live),
             directory (\"recordings\"), segment_secs (600), keep_files (0 = all),
             max_age_secs (0 = forever), queue_fragments (64)
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
    let log = init_logging(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config, log))
}

/// The engine's dependencies log every unusual DTLS extension and state change at info/warn;
/// the edge reports what matters itself.
const DEFAULT_LOG_FILTER: &str = "info,rtc=warn,rtc_dtls=error,rtc_ice=warn,rtc_srtp=warn";

/// Installs the subscriber; returns the switch `ModuleService.Configure` changes the filter with.
fn init_logging(config: &EdgeConfig) -> grpc::LogReload {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            config.log.filter.as_deref().unwrap_or(DEFAULT_LOG_FILTER),
        )
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json())
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
    Arc::new(move |directives: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(directives)
            .map_err(|e| format!("log filter `{directives}`: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

async fn run(config: EdgeConfig, log: grpc::LogReload) -> anyhow::Result<()> {
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
    let mut service = Service::new(config.service.clone()).map_err(anyhow::Error::msg)?;
    let token = config.cluster.token.clone().filter(|t| !t.is_empty());
    if let Some(token) = &token {
        service = service.with_cluster_token(token);
    }
    let streams = Arc::new(Streams::default());
    let engine = Engine::start(&config.webrtc, &config.viewers, service, streams)
        .await
        .context("starting the WebRTC engine")?;
    engine.limits().set_max_viewers(config.node.max_viewers);
    engine
        .limits()
        .set_max_publishers(config.node.max_publishers);
    let state = SignalingState {
        engine: Arc::clone(&engine),
        public_url: config.http.public_url.clone(),
        tls: config.http.tls_cert.is_some(),
    };
    let player = PlayerConfig {
        whep_base: config
            .orchestrator
            .url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned()),
    };
    let post_limit =
        RateLimit::per_minute(config.limits.posts_per_minute, config.limits.posts_burst)
            .map(Arc::new);
    let admin = api::AdminToken::new(token.as_deref());
    let recordings = Recordings::start(Arc::clone(&engine), config.record.clone());
    let app = router::build(
        state,
        metrics,
        &config.http.cors_origins,
        player,
        post_limit,
        admin,
        Arc::clone(&recordings),
    );
    let http_tls = Tls::from_config(
        "http",
        config.http.tls_cert.as_deref(),
        config.http.tls_key.as_deref(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let grpc_tls = read_pem_pair(
        "grpc",
        config.grpc.tls_cert.as_deref(),
        config.grpc.tls_key.as_deref(),
    )
    .map_err(anyhow::Error::msg)?
    .map(|(cert, key)| tonic::transport::Identity::from_pem(cert, key));
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
        tokio::spawn(waveguide_inputs::rtmp::serve(
            rtmp,
            config.rtmp.clone(),
            Arc::clone(&engine),
        ));
    }
    let grpc_listener = if config.grpc.enabled {
        Some(
            tokio::net::TcpListener::bind(config.grpc.listen)
                .await
                .with_context(|| format!("binding gRPC {}", config.grpc.listen))?,
        )
    } else {
        None
    };
    let bound = BoundAddrs {
        http: listener.local_addr()?,
        grpc: grpc_listener.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let identity = NodeIdentity::new(&config, bound);
    let stop = Stop::default();
    let ca_cert_pem = match &config.cluster.ca_cert {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("[cluster] ca_cert {}", path.display()))?,
        ),
        None => None,
    };
    let reporter = start_reporter(
        &config,
        &engine,
        &identity,
        token.as_deref(),
        ca_cert_pem.clone(),
        &stop,
    )?;
    let relay = start_relay(
        &config,
        &engine,
        identity.id(),
        token.as_deref(),
        ca_cert_pem,
    );
    let drain = Drain {
        engine: Arc::clone(&engine),
        reporter: reporter.as_ref().map(|(h, _)| h.clone()),
        stop: stop.clone(),
    };
    let drain_grace = Duration::from_secs(config.node.drain_secs);
    if let Some(grpc_listener) = grpc_listener {
        if token.is_none() {
            warn!(
                "no [cluster] token: every waveguide.v1 gRPC call will be refused (health stays open)"
            );
        }
        let state = grpc::NodeState {
            engine: Arc::clone(&engine),
            identity: identity.clone(),
            reporter: reporter.as_ref().map(|(h, _)| h.clone()),
            stop: stop.clone(),
            log,
            drain: drain.clone(),
            default_grace: drain_grace,
            relay: relay.clone(),
            signal_limit: RateLimit::per_minute(
                config.limits.signals_per_minute,
                config.limits.signals_burst,
            )
            .map(Arc::new),
            started: Instant::now(),
            recordings: Arc::clone(&recordings),
        };
        let token = token.clone().unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = grpc::serve(grpc_listener, state, token, grpc_tls).await {
                tracing::error!("gRPC stopped: {e}");
            }
        });
    }
    announce(&config, &engine, listener.local_addr()?);
    info!(node = %identity.id(), "edge ready");
    // The first SIGTERM/SIGINT drains (what a rolling upgrade sends); a second one stops now.
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        drain.start("signal", drain_grace);
        shutdown_signal().await;
        warn!("second signal: stopping without waiting for the drain");
        signal_stop.stop();
    });
    let http_stop = stop.clone();
    serve(
        listener,
        app,
        http_tls,
        config.http.connection_limits(),
        async move { http_stop.stopped().await },
    )
    .await
    .context("HTTP server")?;
    if let Some((_, task)) = reporter {
        // The reporter says NodeDown on the same stop; give it a moment, never forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    info!("stopped");
    Ok(())
}

/// Starts reporting to the orchestrator when `[orchestrator] grpc` and `[cluster] token` are set.
fn start_reporter(
    config: &EdgeConfig,
    engine: &Arc<Engine>,
    identity: &NodeIdentity,
    token: Option<&str>,
    ca_cert_pem: Option<Vec<u8>>,
    stop: &Stop,
) -> anyhow::Result<Option<(ReporterHandle, tokio::task::JoinHandle<()>)>> {
    let Some(url) = config.orchestrator.grpc.clone() else {
        return Ok(None);
    };
    let Some(token) = token else {
        warn!("[orchestrator] grpc is set but [cluster] token is not: not reporting");
        return Ok(None);
    };
    let interval = Duration::from_secs_f64(config.orchestrator.heartbeat_secs.clamp(0.1, 60.0));
    let started = reporter::spawn(
        Arc::clone(engine),
        identity.clone(),
        token.to_owned(),
        ca_cert_pem,
        Target { url, interval },
        stop.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Some(started))
}

/// Lets viewers of a stream this edge lacks pull it from the edge that has it.
fn start_relay(
    config: &EdgeConfig,
    engine: &Arc<Engine>,
    node_id: &str,
    token: Option<&str>,
    ca_cert_pem: Option<Vec<u8>>,
) -> Option<Arc<Relay>> {
    let (true, Some(url), Some(token)) = (config.relay.enabled, &config.orchestrator.url, token)
    else {
        return None;
    };
    let bind_ip = config
        .webrtc
        .public_ip
        .filter(|ip| config.webrtc.bind_ips.is_empty() || config.webrtc.bind_ips.contains(ip))
        .or_else(|| config.webrtc.bind_ips.first().copied())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let relay = Relay::new(
        Arc::clone(engine),
        RelayConfig {
            orchestrator_url: url.trim_end_matches('/').to_owned(),
            cluster_token: token.to_owned(),
            node_id: node_id.to_owned(),
            idle_grace: Duration::from_secs(config.relay.idle_grace_secs),
            reconnect_grace: config.viewers.reconnect_grace(),
            bind_ip,
            ca_cert_pem,
        },
    );
    engine.set_upstream(relay.clone());
    info!(orchestrator = %url, "relay on: streams this edge lacks are pulled from other edges");
    Some(relay)
}

fn announce(config: &EdgeConfig, engine: &Engine, bound: SocketAddr) {
    let base = config.http.public_url.clone().unwrap_or_else(|| {
        let host = if bound.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            bound.ip().to_string()
        };
        let scheme = if config.http.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}:{}", bound.port())
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
