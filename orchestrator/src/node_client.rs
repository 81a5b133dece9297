//! Calls from the orchestrator into a node's gRPC services (`ModuleService`, `EntityService`),
//! authenticated with `authorization: Bearer <cluster token>`.
//!
//! Owns the channels (one lazily connected, reconnecting channel per node gRPC URL) and the
//! time limits of each call. Owns no decisions: callers say what to do with the answers.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use waveguide_proto::v1;
use waveguide_proto::v1::entity_service_client::EntityServiceClient;
use waveguide_proto::v1::module_service_client::ModuleServiceClient;

use crate::error::Error;
use crate::node::NodeInfo;

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a call other than `HealthCheck` may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a `HealthCheck` may take before the node counts as failing.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Channels kept at most; past it the cache starts over (nodes that changed URL leave entries).
const MAX_CHANNELS: usize = 4096;

/// The orchestrator's gRPC client side, shared by every task.
pub struct NodeClients {
    authorization: MetadataValue<tonic::metadata::Ascii>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Trusted for `https://` node URLs; `None`: the public web PKI roots.
    ca_cert_pem: Option<Vec<u8>>,
}

impl NodeClients {
    /// Fails when the token cannot be sent as gRPC metadata (not visible ASCII).
    pub fn new(cluster_token: &str, ca_cert_pem: Option<Vec<u8>>) -> Result<Self, String> {
        let authorization = MetadataValue::try_from(format!("Bearer {cluster_token}"))
            .map_err(|_| "cluster.token must be printable ASCII (it is sent as gRPC metadata)")?;
        Ok(Self {
            authorization,
            channels: Mutex::default(),
            ca_cert_pem,
        })
    }

    fn channel(&self, node: &NodeInfo) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&node.grpc_url) {
            return Ok(channel.clone());
        }
        let unreachable = |detail: String| Error::NodeUnreachable {
            node: node.id.clone(),
            detail,
        };
        let mut endpoint = Endpoint::from_shared(node.grpc_url.clone())
            .map_err(|err| unreachable(format!("grpc_url `{}`: {err}", node.grpc_url)))?;
        if node.grpc_url.starts_with("https://") {
            let tls = match &self.ca_cert_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|err| unreachable(format!("TLS for `{}`: {err}", node.grpc_url)))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(node.grpc_url.clone(), channel.clone());
        Ok(channel)
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request.set_timeout(timeout);
        request
    }

    /// Runs one call with a hard deadline (the gRPC timeout header alone needs a cooperating
    /// server) and maps failures to [`Error::NodeUnreachable`].
    async fn call<T>(
        node: &NodeInfo,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Error::NodeUnreachable {
                node: node.id.clone(),
                detail: format!("{:?}: {}", status.code(), status.message()),
            }),
            Err(_) => Err(Error::NodeUnreachable {
                node: node.id.clone(),
                detail: format!("no answer within {timeout:?}"),
            }),
        }
    }

    /// `ModuleService.RegisterModule`: adopts the node and asks for heartbeats every
    /// `heartbeat`.
    pub async fn register(
        &self,
        node: &NodeInfo,
        registrar_id: &str,
        heartbeat: Duration,
    ) -> Result<v1::RegisterModuleResponse, Error> {
        let mut client = ModuleServiceClient::new(self.channel(node)?);
        let request = self.request(
            v1::RegisterModuleRequest {
                registrar_id: registrar_id.to_owned(),
                event_sink_url: String::new(),
                status_interval: Some(proto_duration(heartbeat)),
            },
            CALL_TIMEOUT,
        );
        Self::call(node, CALL_TIMEOUT, client.register_module(request)).await
    }

    /// `ModuleService.HealthCheck`, within [`HEALTH_TIMEOUT`].
    pub async fn health(&self, node: &NodeInfo) -> Result<v1::HealthCheckResponse, Error> {
        let mut client = ModuleServiceClient::new(self.channel(node)?);
        let request = self.request(v1::HealthCheckRequest {}, HEALTH_TIMEOUT);
        Self::call(node, HEALTH_TIMEOUT, client.health_check(request)).await
    }

    /// `ModuleService.Configure { draining }`.
    pub async fn set_draining(
        &self,
        node: &NodeInfo,
        draining: bool,
    ) -> Result<v1::ConfigureResponse, Error> {
        let mut client = ModuleServiceClient::new(self.channel(node)?);
        let request = self.request(
            v1::ConfigureRequest {
                capacity: None,
                draining: Some(draining),
                log_filter: None,
            },
            CALL_TIMEOUT,
        );
        Self::call(node, CALL_TIMEOUT, client.configure(request)).await
    }

    /// `EntityService.DestroyEntity` of a stream: ends its publisher and every viewer.
    /// `Ok(false)` when the node says the stream is already gone.
    pub async fn end_stream(
        &self,
        node: &NodeInfo,
        stream: &str,
        reason: &str,
    ) -> Result<bool, Error> {
        let mut client = EntityServiceClient::new(self.channel(node)?);
        let request = self.request(
            v1::DestroyEntityRequest {
                r#ref: Some(v1::EntityRef {
                    kind: v1::EntityKind::Stream as i32,
                    id: stream.to_owned(),
                }),
                reason: reason.to_owned(),
            },
            CALL_TIMEOUT,
        );
        match tokio::time::timeout(CALL_TIMEOUT, client.destroy_entity(request)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Ok(false),
            Ok(Err(status)) => Err(Error::NodeUnreachable {
                node: node.id.clone(),
                detail: format!("{:?}: {}", status.code(), status.message()),
            }),
            Err(_) => Err(Error::NodeUnreachable {
                node: node.id.clone(),
                detail: format!("no answer within {CALL_TIMEOUT:?}"),
            }),
        }
    }
}

pub fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}
