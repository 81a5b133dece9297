//! The gRPC server on `[grpc] listen`: `waveguide.v1.EventService`, `grpc.health.v1.Health`
//! and server reflection (v1 and v1alpha, describing `waveguide.v1` and the health service).
//!
//! Authentication: every `waveguide.v1` call and every reflection call must carry
//! `authorization: Bearer <cluster token>`, else `UNAUTHENTICATED`. `grpc.health.v1.Health`
//! is deliberately left open: Kubernetes gRPC probes (and most load balancers) cannot send
//! metadata, and the health answer reveals nothing. Its overall status (service `""`) and
//! `waveguide.v1.EventService` are `SERVING` only while the node registry is reachable
//! (`main` flips them).

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use waveguide_control::cluster::bearer_matches;
use waveguide_proto::v1;
use waveguide_proto::v1::event_service_server::{EventService, EventServiceServer};

use crate::events::Events;

/// The name the health service reports EventService under.
pub const EVENT_SERVICE_NAME: &str =
    <EventServiceServer<Events> as tonic::server::NamedService>::NAME;

/// Checks `authorization: Bearer <cluster token>` (constant time).
#[derive(Clone)]
pub struct ClusterAuth {
    token: Arc<str>,
}

impl ClusterAuth {
    pub fn new(token: &str) -> Self {
        Self {
            token: Arc::from(token),
        }
    }
}

impl Interceptor for ClusterAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if bearer_matches(header, &self.token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or invalid `authorization: Bearer <cluster token>`",
            ))
        }
    }
}

/// Sets the health of the whole server and of EventService.
pub async fn set_serving(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(EVENT_SERVICE_NAME, status)
        .await;
}

/// Serves until `shutdown` resolves, then finishes in-flight calls. `health` comes from
/// `tonic_health::server::health_reporter()`, whose reporter the caller keeps to flip status.
pub async fn serve<H: Health>(
    listener: TcpListener,
    events: impl EventService,
    health: HealthServer<H>,
    cluster_token: &str,
    tls: Option<tonic::transport::Identity>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let auth = ClusterAuth::new(cluster_token);
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut server = Server::builder();
    if let Some(identity) = tls {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    server
        .add_service(health)
        .add_service(EventServiceServer::with_interceptor(events, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
