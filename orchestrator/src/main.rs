//! `waveguide-orchestrator`: flags, logging and the process lifecycle around
//! [`waveguide_orchestrator::Orchestrator`]. Shuts down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use waveguide_orchestrator::Orchestrator;
use waveguide_orchestrator::config::{CONFIG_HELP, Config, LogFormat};

/// Waveguide orchestrator: redirects WHIP publishers and WHEP viewers to the best edge, keeps
/// the node registry and receives the edges' gRPC events.
///
/// Flags override environment variables (WAVEGUIDE_<SECTION>_<KEY>, e.g.
/// WAVEGUIDE_CLUSTER_TOKEN=...), which override the config file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(name = "waveguide-orchestrator", version, about, after_help = CONFIG_HELP)]
struct Args {
    /// TOML config file (see deploy/orchestrator.example.toml).
    #[arg(long, env = "WAVEGUIDE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// HTTP listen address [default: 0.0.0.0:8090]; overrides `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,

    /// gRPC listen address [default: 0.0.0.0:50052]; overrides `grpc.listen`.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<SocketAddr>,

    /// Log format [default: text]; overrides `log.format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    if let Some(grpc) = args.grpc {
        config.grpc.listen = grpc;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    // Refuse a config that cannot run before anything starts, with the reason.
    config.validate()?;
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let metrics = waveguide_orchestrator::telemetry::install()?;
            let orchestrator = Orchestrator::start(config, metrics).await?;
            orchestrator.run_until(shutdown_signal()).await?;
            tracing::info!("stopped");
            Ok(())
        })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(config.log.filter.as_deref().unwrap_or("info"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
