//! Graceful drain: the node takes nothing new (`/readyz` 503, WHIP/WHEP 503, the orchestrator
//! told at once), lets what it serves run until it is empty or the deadline passes, then ends
//! every stream cleanly (publishers disconnected, viewers' sessions closed so their players
//! reconnect elsewhere) and stops the process. SIGTERM and gRPC `Shutdown` both start it.

use super::Stop;
use super::reporter::{NodeEvent, ReporterHandle};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};
use waveguide_control::Engine;

/// How often the drain looks whether the node is empty.
const POLL: Duration = Duration::from_millis(250);

/// What a drain needs.
#[derive(Clone)]
pub struct Drain {
    /// The engine whose sessions drain.
    pub engine: Arc<Engine>,
    /// Tells the orchestrator.
    pub reporter: Option<ReporterHandle>,
    /// Stops the process at the end.
    pub stop: Stop,
}

/// A drain that has started.
#[derive(Debug, Clone, Copy)]
pub struct Draining {
    /// When the remaining sessions are closed at the latest.
    pub deadline: SystemTime,
    /// Publishers and viewers open when it started.
    pub sessions: u32,
}

impl Drain {
    fn sessions(&self) -> usize {
        let (publishers, viewers) = self.engine.streams().live_counts();
        publishers + viewers
    }

    /// Starts draining; the process stops when the node is empty or after `grace`.
    pub fn start(&self, reason: &str, grace: Duration) -> Draining {
        let deadline = SystemTime::now() + grace;
        let sessions = self.sessions() as u32;
        self.engine.limits().set_draining(true);
        warn!(%reason, grace_secs = grace.as_secs_f64(), sessions, "draining: no new sessions; stopping when empty or at the deadline");
        if let Some(reporter) = &self.reporter {
            reporter.send(NodeEvent::Draining {
                reason: reason.to_owned(),
                deadline: Some(deadline),
            });
        }
        let drain = self.clone();
        tokio::spawn(async move {
            let until = Instant::now() + grace;
            while drain.sessions() > 0 && Instant::now() < until {
                tokio::time::sleep(POLL).await;
            }
            drain.end_everything();
            drain.stop.stop();
        });
        Draining { deadline, sessions }
    }

    /// Ends every stream still here, publishers and viewers, with a clean close.
    fn end_everything(&self) {
        let statuses = self.engine.streams().statuses(Instant::now());
        let left = statuses.len();
        for s in statuses {
            let _ = self.engine.kick(&s.name, "node drained");
        }
        info!(streams_ended = left, "drain over; stopping");
    }
}
