//! The edge's gRPC server: `ModuleService` (lifecycle: register, health, configure, drain),
//! `EntityService` (streams, tracks and sessions: list, status, kick), `PipelineService`
//! (flows: status, disconnect), `WebRtcSignaling` (publish and watch over a gRPC stream),
//! `grpc.health.v1.Health` and reflection, optionally over TLS.
//!
//! Every `waveguide.v1` call and reflection needs `authorization: Bearer <cluster token>`;
//! without it the answer is `UNAUTHENTICATED`. Health stays open: Kubernetes gRPC probes and
//! load balancers cannot send metadata, and it reveals nothing but SERVING/NOT_SERVING.

mod entity;
mod module;
mod pipeline;
mod signaling;

use crate::cluster::Stop;
use crate::cluster::drain::Drain;
use crate::cluster::node::NodeIdentity;
use crate::cluster::reporter::ReporterHandle;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;
use waveguide_control::Engine;
use waveguide_control::cluster::bearer_matches;
use waveguide_proto::v1::entity_service_server::EntityServiceServer;
use waveguide_proto::v1::module_service_server::ModuleServiceServer;

pub use module::LogReload;

/// Everything the services read or change.
#[derive(Clone)]
pub struct NodeState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Who this node is.
    pub identity: NodeIdentity,
    /// The reporter, when the node reports to an orchestrator.
    pub reporter: Option<ReporterHandle>,
    /// Stops the process (the gRPC server stops with it).
    pub stop: Stop,
    /// Drains the node (`Shutdown`).
    pub drain: Drain,
    /// Changes the log filter (`Configure.log_filter`).
    pub log: LogReload,
    /// Drain grace when `Shutdown` names none.
    pub default_grace: Duration,
    /// When the process started.
    pub started: Instant,
    /// The relay, when this edge has one (gRPC-created pulls).
    pub relay: Option<Arc<waveguide_inputs::relay::Relay>>,
    /// Per-IP rate of new `Signal` streams (`RESOURCE_EXHAUSTED` past it); `None`: no limit.
    pub signal_limit: Option<Arc<waveguide_control::rate::RateLimit>>,
    /// The node's recordings (`PipelineService.Record`).
    pub recordings: Arc<waveguide_outputs::record::Recordings>,
}

/// Rejects calls without the cluster token.
#[derive(Clone)]
struct ClusterAuth(Arc<str>);

impl tonic::service::Interceptor for ClusterAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if bearer_matches(header, &self.0) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "send `authorization: Bearer <cluster token>`",
            ))
        }
    }
}

/// Serves gRPC on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    state: NodeState,
    token: String,
    tls: Option<tonic::transport::Identity>,
) -> Result<(), tonic::transport::Error> {
    let auth = ClusterAuth(token.into());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ModuleServiceServer<module::Module>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(waveguide_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            // The descriptor sets are compiled in; failing here is a build defect.
            tracing::error!("gRPC reflection: {e}");
            e
        });
    let stop = state.stop.clone();
    let addr = listener.local_addr().ok();
    let mut server = Server::builder();
    if let Some(identity) = tls {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let mut router = server
        .add_service(health_service)
        .add_service(ModuleServiceServer::with_interceptor(
            module::Module::new(state.clone()),
            auth.clone(),
        ))
        .add_service(EntityServiceServer::with_interceptor(
            entity::Entities::new(state.clone()),
            auth.clone(),
        ))
        .add_service(
            waveguide_proto::v1::pipeline_service_server::PipelineServiceServer::with_interceptor(
                pipeline::Pipelines::new(state.clone()),
                auth.clone(),
            ),
        )
        .add_service(
            waveguide_proto::v1::web_rtc_signaling_server::WebRtcSignalingServer::with_interceptor(
                signaling::Signaling::new(state),
                auth.clone(),
            ),
        );
    if let Ok(reflection) = reflection {
        router = router.add_service(tonic::service::interceptor::InterceptedService::new(
            reflection, auth,
        ));
    }
    info!(grpc = ?addr, "gRPC serving ModuleService, EntityService, PipelineService, WebRtcSignaling, health, reflection");
    router
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            stop.stopped().await;
        })
        .await
}

/// The node's `HealthCheck` answer (ModuleService and WebRtcSignaling give the same one).
fn health(state: &NodeState) -> waveguide_proto::v1::HealthCheckResponse {
    use waveguide_proto::v1::ServingStatus;
    let draining = state.engine.limits().is_draining();
    let uptime = state.started.elapsed();
    waveguide_proto::v1::HealthCheckResponse {
        status: if draining {
            ServingStatus::Draining
        } else {
            ServingStatus::Serving
        } as i32,
        message: if draining {
            "draining: accepting no new sessions".into()
        } else {
            String::new()
        },
        uptime: Some(waveguide_proto::prost_types::Duration {
            seconds: uptime.as_secs() as i64,
            nanos: uptime.subsec_nanos() as i32,
        }),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// The current node identity with live limits.
fn node_info(state: &NodeState) -> waveguide_proto::v1::NodeInfo {
    state.identity.info(&state.engine)
}
