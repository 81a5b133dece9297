//! Waveguide's orchestrator: sends every WHIP publisher and WHEP viewer to the best edge with a
//! `307`, keeps the registry of edges and the streams each holds (in memory or Redis), serves
//! the REST API, and implements the gRPC `EventService` that edges report to.
//!
//! Layout, one concern per module:
//! - `config`: the TOML file and its environment overrides.
//! - `node`: the registry's record of a node (serde mirrors of the `waveguide.v1` messages).
//! - `store`: the registry, `memory` or `redis`, with expiry.
//! - `select`: the selection policy (pure functions).
//! - `region`: client address → region.
//! - `events`, `grpc`: the `EventService` and the gRPC server (auth, health, reflection).
//! - `node_client`: calls into the nodes' `ModuleService` / `EntityService`.
//! - `probe`, `sweeper`, `readiness`: the background tasks.
//! - `http`, `redirect`, `api`, `openapi`: the HTTP server; `view`: the list of nodes it reads,
//!   at most a second old.
//! - `error`, `telemetry`: the error type and the metrics.
//!
//! [`Orchestrator::start`] wires them; the binary (`main.rs`) adds flags, logging and signals.

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod node;
pub mod node_client;
pub mod openapi;
pub mod probe;
pub mod readiness;
pub mod redirect;
pub mod region;
pub mod select;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use waveguide_control::cluster::TicketKey;
use waveguide_control::rate::RateLimit;
use waveguide_control::serve::{Tls, read_pem_pair, serve};
use waveguide_control::service::{Service, ServiceKind};

use crate::config::Config;
use crate::events::Events;
use crate::http::HttpState;
use crate::node_client::NodeClients;
use crate::readiness::Readiness;
use crate::store::Store;

/// How long the first store ping may take before the orchestrator reports ready anyway
/// (readiness stays 503 until the store answers).
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running orchestrator: both servers and the background tasks.
pub struct Orchestrator {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub readiness: Readiness,
    shutdown: watch::Sender<bool>,
    servers: JoinSet<(&'static str, anyhow::Result<()>)>,
    background: JoinSet<()>,
}

impl Orchestrator {
    /// Validates `config`, binds both listeners and starts serving. `metrics` renders
    /// `/metrics` (the binary installs the global recorder; tests pass a local handle).
    pub async fn start(config: Config, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let regions = config.validate()?;
        // `validate` refused a config without `[service]`; never fall back to `open` here.
        let service_config = config
            .service
            .clone()
            .context("[service] kind is required")?;
        let service =
            Service::new(service_config).map_err(|err| anyhow::anyhow!("[service]: {err}"))?;
        announce_service(&service);
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
        };
        let ca_cert_pem = match &config.cluster.ca_cert {
            Some(path) => Some(read(path, "[cluster] ca_cert")?),
            None => None,
        };
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
        let clients = Arc::new(
            NodeClients::new(&config.cluster.token, ca_cert_pem).map_err(anyhow::Error::msg)?,
        );
        let store = Store::open(&config.store, config.cluster.node_expiry())
            .with_context(|| format!("cannot open the {} store", config.store.kind.as_str()))?;

        let http_listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let grpc_listener = TcpListener::bind(config.grpc.listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc.listen))?;
        let http_addr = http_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;

        let readiness = Readiness::default();
        let (shutdown, _) = watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        grpc::set_serving(&health_reporter, false).await;

        let events = Events {
            store: store.clone(),
            clients: Arc::clone(&clients),
            heartbeat: config.cluster.heartbeat(),
            registrar_id: registrar_id(grpc_addr),
        };
        let token = config.cluster.token.clone();
        let grpc_shutdown = stopped(shutdown.subscribe());
        let mut servers = JoinSet::new();
        servers.spawn(async move {
            let served = grpc::serve(
                grpc_listener,
                events,
                health_service,
                &token,
                grpc_tls,
                grpc_shutdown,
            )
            .await
            .context("gRPC server failed");
            ("gRPC", served)
        });
        readiness.set_grpc_listening(true);

        let state = HttpState {
            store: store.clone(),
            view: view::RegistryView::new(store.clone()),
            service: Arc::new(service),
            tickets: TicketKey::new(&config.cluster.token),
            ticket_ttl: config.cluster.ticket_ttl(),
            cluster_token: Arc::from(config.cluster.token.as_str()),
            admin_token: Arc::from(config.admin_token()),
            regions: Arc::new(regions),
            clients: Arc::clone(&clients),
            metrics,
            readiness: readiness.clone(),
        };
        let post_limit =
            RateLimit::per_minute(config.limits.posts_per_minute, config.limits.posts_burst)
                .map(Arc::new);
        let app = http::router(state, &config.http.cors_origins, post_limit);
        let http_shutdown = stopped(shutdown.subscribe());
        let connection_limits = config.http.connection_limits();
        servers.spawn(async move {
            let served = serve(
                http_listener,
                app,
                http_tls,
                connection_limits,
                http_shutdown,
            )
            .await
            .context("HTTP server failed");
            ("HTTP", served)
        });

        let mut background = JoinSet::new();
        background.spawn(readiness::watch_store(
            store.clone(),
            readiness.clone(),
            health_reporter,
        ));
        background.spawn(sweeper::run(store.clone(), config.cluster.heartbeat()));
        background.spawn(probe::run(store.clone(), clients));

        // Wait briefly for the store so "ready" means ready in the common case.
        let first_ping = tokio::time::timeout(FIRST_PING_TIMEOUT, async {
            while !readiness.store_reachable() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if first_ping.is_err() {
            tracing::warn!(
                store = config.store.kind.as_str(),
                "node registry not reachable yet: /readyz answers 503 until it is"
            );
        }
        tracing::info!(
            http = %http_addr,
            grpc = %grpc_addr,
            store = config.store.kind.as_str(),
            heartbeat_secs = config.cluster.heartbeat_secs,
            version = env!("CARGO_PKG_VERSION"),
            "orchestrator ready"
        );
        Ok(Self {
            http_addr,
            grpc_addr,
            readiness,
            shutdown,
            servers,
            background,
        })
    }

    /// Serves until `signal` resolves (or a server fails), then shuts down gracefully: readiness
    /// turns 503, both servers finish in-flight requests (at most [`SHUTDOWN_GRACE`]), and the
    /// background tasks end. Returns the first server error.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(signal);
        let mut result = Ok(());
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let grace_over = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut signal, if deadline.is_none() => {
                    tracing::info!("shutting down");
                    deadline = Some(self.stop());
                }
                joined = self.servers.join_next() => {
                    let Some(joined) = joined else { break };
                    let failure = match joined {
                        Ok((_, Ok(()))) if deadline.is_some() => None,
                        Ok((name, Ok(()))) => Some(anyhow::anyhow!("{name} server stopped unexpectedly")),
                        Ok((_, Err(err))) => Some(err),
                        Err(join) => Some(anyhow::anyhow!("server task failed: {join}")),
                    };
                    if let Some(err) = failure {
                        tracing::error!("{err:#}");
                        if result.is_ok() {
                            result = Err(err);
                        }
                        if deadline.is_none() {
                            deadline = Some(self.stop());
                        }
                    }
                }
                () = grace_over => {
                    tracing::warn!("servers did not stop within {SHUTDOWN_GRACE:?}; closing");
                    self.servers.abort_all();
                    break;
                }
            }
        }
        self.background.abort_all();
        result
    }

    /// Stops taking work; returns when the grace period ends.
    fn stop(&self) -> tokio::time::Instant {
        self.readiness.set_stopping();
        self.shutdown.send_replace(true);
        tokio::time::Instant::now() + SHUTDOWN_GRACE
    }
}

/// Says who may publish; `open` loudly, in the edge's words: an orchestrator signs the
/// publish tickets edges accept before their own key check, so `open` here opens every edge.
fn announce_service(service: &Service) {
    match service.kind() {
        ServiceKind::Open => tracing::warn!(
            "AUTH IS OPEN: anyone who reaches this orchestrator gets a publish ticket for any \
             stream, and every edge of the cluster accepts it. Set [service] kind = \"static\" \
             or \"webhook\" with the edges' keys."
        ),
        ServiceKind::Static => tracing::info!(
            "auth: static keys for {} stream(s)",
            service.streams().len()
        ),
        ServiceKind::Webhook => tracing::info!("auth: webhook"),
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Names this orchestrator in the nodes' logs.
fn registrar_id(grpc_addr: SocketAddr) -> String {
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() => format!("waveguide-orchestrator@{host}"),
        _ => format!("waveguide-orchestrator@{grpc_addr}"),
    }
}
