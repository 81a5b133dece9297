//! The edge as a member of a cluster: who it is ([`node`]), how loaded it is ([`load`]), and
//! the task that tells the orchestrator both ([`reporter`]), and how it leaves ([`drain`]).

pub mod drain;
pub mod load;
pub mod node;
pub mod reporter;

use tokio::sync::watch;

/// Asks the process to stop (gRPC `Shutdown` after its drain, or a signal), once.
#[derive(Debug, Clone)]
pub struct Stop {
    tx: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(false),
        }
    }
}

impl Stop {
    /// Requests the stop.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves once the stop was requested.
    pub async fn stopped(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` only fails if it is dropped: then stop too.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}
