//! `waveguide-orchestrator`: the seed of Waveguide's orchestrator.
//!
//! The orchestrator this grows into answers WHIP and WHEP POSTs with a `307` to the best edge,
//! keeps the registry of edges and where each stream is, serves the REST API and implements the
//! gRPC `EventService` of [`waveguide_proto`]. Today it is only a well-behaved process: it reads
//! its config, serves `GET /healthz`, `GET /readyz` and `GET /metrics`, and shuts down
//! gracefully on SIGINT/SIGTERM.
//!
//! Layout: `main.rs` (flags, logging, lifecycle), `config.rs` (the TOML file), `http.rs` (routes).

mod config;
mod http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{Config, DEFAULT_HTTP_LISTEN, LogFormat};
use crate::http::{HttpState, Readiness};

/// Waveguide orchestrator (seed): health, readiness and metrics endpoints.
///
/// Flags override the config file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see deploy/orchestrator.example.toml).
    #[arg(long, env = "WAVEGUIDE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// HTTP listen address [default: 127.0.0.1:8090]; overrides `http.listen`.
    #[arg(long, env = "WAVEGUIDE_HTTP_LISTEN", value_name = "ADDR")]
    http: Option<SocketAddr>,

    /// Log format [default: text]; overrides `log.format`. The filter comes from RUST_LOG.
    #[arg(long, env = "WAVEGUIDE_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

/// How often the metrics recorder drains histogram buckets; the exporter requires it when it
/// runs without its own HTTP listener.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    init_logging(args.log_format.or(config.log.format).unwrap_or_default());

    let listen = args
        .http
        .or(config.http.listen)
        .unwrap_or(DEFAULT_HTTP_LISTEN);

    let metrics = install_metrics()?;
    let readiness = Readiness::default();
    let app = http::router(HttpState {
        metrics,
        readiness: readiness.clone(),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?;
    tracing::info!(
        http = %listener.local_addr()?,
        version = env!("CARGO_PKG_VERSION"),
        "orchestrator (seed) serving /healthz, /readyz, /metrics"
    );

    readiness.set(true);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            readiness.set(false);
            tracing::info!("shutting down");
        })
        .await
        .context("HTTP server failed")?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::describe_gauge!(
        "waveguide_orchestrator_build_info",
        "Always 1; the labels name the running version and gRPC package."
    );
    metrics::gauge!(
        "waveguide_orchestrator_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "proto" => waveguide_proto::PACKAGE,
    )
    .set(1.0);
    Ok(handle)
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what Docker and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
