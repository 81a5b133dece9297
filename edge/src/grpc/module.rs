//! `ModuleService` on the edge: adoption by an orchestrator, health, run-time limits and drain,
//! and a graceful shutdown that waits for sessions to end.

use super::{NodeState, node_info};
use crate::cluster::node::{stream_infos, timestamp};
use crate::cluster::reporter::NodeEvent;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::info;
use waveguide_proto::v1::module_service_server::ModuleService;
use waveguide_proto::v1::{
    self, ConfigureRequest, ConfigureResponse, HealthCheckRequest, HealthCheckResponse,
    RegisterModuleRequest, RegisterModuleResponse, ShutdownRequest, ShutdownResponse,
};

/// Changes the process's log filter at run time.
pub type LogReload = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The service.
pub struct Module {
    state: NodeState,
    log_filter: std::sync::Mutex<String>,
}

impl Module {
    pub(super) fn new(state: NodeState) -> Self {
        Self {
            state,
            log_filter: std::sync::Mutex::new(String::new()),
        }
    }

    fn capacity(&self) -> v1::Capacity {
        self.state.identity.capacity(&self.state.engine)
    }
}

fn duration(d: &waveguide_proto::prost_types::Duration) -> Option<Duration> {
    (d.seconds >= 0 && d.nanos >= 0).then(|| Duration::new(d.seconds as u64, d.nanos as u32))
}

#[tonic::async_trait]
impl ModuleService for Module {
    async fn register_module(
        &self,
        request: Request<RegisterModuleRequest>,
    ) -> Result<Response<RegisterModuleResponse>, Status> {
        let r = request.into_inner();
        info!(registrar = %r.registrar_id, sink = %r.event_sink_url, "adopted by an orchestrator");
        if let Some(reporter) = &self.state.reporter {
            reporter.retarget(
                Some(r.event_sink_url).filter(|u| !u.is_empty()),
                r.status_interval.as_ref().and_then(duration),
            );
        }
        Ok(Response::new(RegisterModuleResponse {
            node: Some(node_info(&self.state)),
            streams: stream_infos(&self.state.engine, self.state.identity.id()),
            draining: self.state.engine.limits().is_draining(),
        }))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(super::health(&self.state)))
    }

    async fn configure(
        &self,
        request: Request<ConfigureRequest>,
    ) -> Result<Response<ConfigureResponse>, Status> {
        let r = request.into_inner();
        let limits = self.state.engine.limits();
        if let Some(c) = r.capacity {
            // Zero means "no limit" in the contract.
            limits.set_max_viewers(Some(c.max_viewers).filter(|&v| v > 0));
            limits.set_max_publishers(Some(c.max_publishers).filter(|&v| v > 0));
            info!(
                max_viewers = c.max_viewers,
                max_publishers = c.max_publishers,
                "limits changed"
            );
        }
        if let Some(filter) = r.log_filter {
            (self.state.log)(&filter).map_err(Status::invalid_argument)?;
            info!(%filter, "log filter changed");
            *self.log_filter.lock().unwrap_or_else(|p| p.into_inner()) = filter;
        }
        if let Some(draining) = r.draining {
            let was = limits.set_draining(draining);
            if was != draining {
                info!(draining, "drain state changed");
                if let Some(reporter) = &self.state.reporter {
                    reporter.send(if draining {
                        NodeEvent::Draining {
                            reason: "configured".into(),
                            deadline: None,
                        }
                    } else {
                        NodeEvent::Reannounce
                    });
                }
            }
        }
        Ok(Response::new(ConfigureResponse {
            capacity: Some(self.capacity()),
            draining: limits.is_draining(),
            log_filter: self
                .log_filter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let r = request.into_inner();
        let grace = match r.grace.as_ref() {
            Some(d) => duration(d).ok_or_else(|| Status::invalid_argument("negative grace"))?,
            None => self.state.default_grace,
        };
        let reason = if r.reason.is_empty() {
            "shutdown requested".to_owned()
        } else {
            r.reason
        };
        let draining = self.state.drain.start(&reason, grace);
        Ok(Response::new(ShutdownResponse {
            deadline: Some(timestamp(draining.deadline)),
            sessions_remaining: draining.sessions,
        }))
    }
}
