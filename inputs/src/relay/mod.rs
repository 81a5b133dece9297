//! The edge-to-edge relay: a viewer asks for a stream this node does not have, and the node
//! pulls it over WHEP from the edge that has it, once for all its local viewers.
//!
//! - [`Relay`] implements the control's [`Upstream`] hook: one pull task per stream,
//!   concurrent callers share its readiness.
//! - `signal`: the orchestrator redirect (`307` + relay ticket) and the WHEP POST/DELETE.
//! - `peer`: the `rtc` peer connection (offerer, full ICE, DTLS client) and its UDP socket.
//! - `codecs`: what the pull offers, and the tracks the upstream's answer gives.
//! - `pull`: one pull's life: connect, feed the `Ingest`, reconnect with backoff through the
//!   orchestrator when the upstream drops, end a grace period after the last local viewer.
//!
//! The pulled stream is an ordinary local stream (protocol `relay`): its viewers get the
//! keyframe cache, NACK and everything else, and another edge may pull it from here in turn.

mod backoff;
mod codecs;
mod config;
mod peer;
mod pull;
mod signal;

pub use config::{DEFAULT_IDLE_GRACE, DEFAULT_RECONNECT_GRACE, RelayConfig};

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info};
use waveguide_control::cluster::Upstream;
use waveguide_control::{Engine, Error, Result};

/// How long a viewer's request waits for a pull to become ready: one connection attempt
/// (bounded at 10 s) and a little more.
const CALLER_WAIT: Duration = Duration::from_secs(12);

/// Where a pull is, as its callers see it.
#[derive(Debug, Clone)]
pub(crate) enum PullState {
    /// Connecting to the upstream (first time, or again after losing it).
    Connecting,
    /// The stream is live locally with its tracks.
    Live,
    /// The pull could not be made (or was given up); the reason.
    Failed(Error),
    /// The pull ended (no viewers, or a local publisher took the stream over).
    Ended,
}

struct PullEntry {
    id: u64,
    state: watch::Receiver<PullState>,
}

/// The live pulls by stream name, shared with the pull tasks (which remove themselves).
#[derive(Default)]
pub(crate) struct Pulls {
    map: Mutex<HashMap<String, PullEntry>>,
}

impl Pulls {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PullEntry>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `stream`'s entry if it is still pull `id`'s.
    pub(crate) fn remove(&self, stream: &str, id: u64) {
        let mut map = self.lock();
        if map.get(stream).is_some_and(|e| e.id == id) {
            map.remove(stream);
        }
    }

    /// Removes `stream`'s entry (if pull `id`'s) when `still_idle` holds, under the lock so
    /// no caller can join the pull in between. Whether it was removed.
    pub(crate) fn remove_if(
        &self,
        stream: &str,
        id: u64,
        still_idle: impl FnOnce() -> bool,
    ) -> bool {
        let mut map = self.lock();
        if !still_idle() {
            return false;
        }
        if map.get(stream).is_some_and(|e| e.id == id) {
            map.remove(stream);
        }
        true
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The relay input: pulls streams this node does not have from the edges that do.
pub struct Relay {
    engine: Arc<Engine>,
    config: RelayConfig,
    signal: std::result::Result<signal::Signal, String>,
    pulls: Arc<Pulls>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("orchestrator", &self.config.orchestrator_url)
            .field("node_id", &self.config.node_id)
            .field("pulls", &self.pulls.len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for `engine`. Give it to the engine with `engine.set_upstream(relay)`.
    pub fn new(engine: Arc<Engine>, config: RelayConfig) -> Arc<Relay> {
        let signal = signal::Signal::new(
            &config.orchestrator_url,
            &config.cluster_token,
            &config.node_id,
            config.ca_cert_pem.as_deref(),
        );
        match &signal {
            Ok(_) => info!(
                orchestrator = %config.orchestrator_url,
                node = %config.node_id,
                bind_ip = %config.bind_ip,
                idle_grace_s = config.idle_grace.as_secs_f64(),
                reconnect_grace_s = config.reconnect_grace.as_secs_f64(),
                "relay enabled: streams this node lacks are pulled from other edges"
            ),
            Err(e) => error!("relay disabled: {e}"),
        }
        Arc::new(Relay {
            engine,
            config,
            signal,
            pulls: Arc::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The streams being pulled right now.
    pub fn active_pulls(&self) -> Vec<String> {
        self.pulls.lock().keys().cloned().collect()
    }

    /// Pulls `stream` from the WHEP endpoint `upstream_url` directly (an operator's
    /// `CreateEntity`), without asking the orchestrator; reconnects go to the same URL.
    /// Resolves once the stream is live here, as [`Upstream::pull`] does.
    pub async fn pull_from(&self, stream: &str, upstream_url: &str) -> Result<()> {
        let url = reqwest::Url::parse(upstream_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or(Error::ServiceFailed(
                "the upstream URL is not an http(s) URL",
            ))?;
        self.pull_stream_via(stream, Some(url)).await
    }

    async fn pull_stream(&self, stream: &str) -> Result<()> {
        self.pull_stream_via(stream, None).await
    }

    async fn pull_stream_via(&self, stream: &str, upstream: Option<reqwest::Url>) -> Result<()> {
        if !waveguide_control::stream::is_valid_name(stream) {
            return Err(Error::InvalidStreamName(stream.to_owned()));
        }
        let signal = self
            .signal
            .as_ref()
            .map_err(|_| Error::ServiceFailed("the relay's orchestrator URL is invalid"))?;
        let mut state = {
            let mut map = self.pulls.lock();
            match map.get(stream) {
                Some(entry) => entry.state.clone(),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = watch::channel(PullState::Connecting);
                    map.insert(
                        stream.to_owned(),
                        PullEntry {
                            id,
                            state: rx.clone(),
                        },
                    );
                    let task = pull::PullTask {
                        engine: Arc::clone(&self.engine),
                        signal: signal.clone(),
                        stream: stream.to_owned(),
                        id,
                        pulls: Arc::clone(&self.pulls),
                        state: tx,
                        bind_ip: self.config.bind_ip,
                        idle_grace: self.config.idle_grace,
                        reconnect_grace: self.config.reconnect_grace,
                        upstream,
                    };
                    tokio::spawn(pull::run(task));
                    rx
                }
            }
        };
        let waited = tokio::time::timeout(
            CALLER_WAIT,
            state.wait_for(|s| !matches!(s, PullState::Connecting)),
        )
        .await;
        match waited {
            Err(_) => Err(Error::ServiceFailed(
                "the relay could not reach the stream's edge in time",
            )),
            Ok(Err(_)) => Err(Error::Engine("the relay's pull task stopped".into())),
            Ok(Ok(current)) => match &*current {
                PullState::Live => Ok(()),
                PullState::Failed(e) => Err(e.clone()),
                PullState::Ended | PullState::Connecting => {
                    Err(Error::StreamNotFound(stream.to_owned()))
                }
            },
        }
    }
}

impl Upstream for Relay {
    fn pull<'a>(
        &'a self,
        stream: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.pull_stream(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_remove_only_their_own_entry() {
        let pulls = Pulls::default();
        let (_tx, rx) = watch::channel(PullState::Connecting);
        pulls.lock().insert(
            "demo".into(),
            PullEntry {
                id: 2,
                state: rx.clone(),
            },
        );
        pulls.remove("demo", 1);
        assert_eq!(pulls.len(), 1);
        assert!(!pulls.remove_if("demo", 2, || false));
        assert_eq!(pulls.len(), 1);
        assert!(pulls.remove_if("demo", 2, || true));
        assert_eq!(pulls.len(), 0);
    }

    /// A stand-in orchestrator on loopback: answers every request with `404` after `delay`,
    /// and counts the requests.
    async fn orchestrator_404(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then as much body as Content-Length says.
                    loop {
                        let Ok(n) = conn.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        (url, count)
    }

    async fn engine() -> Arc<Engine> {
        use waveguide_control::config::{ViewerConfig, WebRtcConfig};
        use waveguide_control::service::{Service, ServiceConfig};
        use waveguide_control::stream::Streams;
        let webrtc = WebRtcConfig {
            udp_port: 0,
            shards: 1,
            bind_ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            ..Default::default()
        };
        let service = Service::new(ServiceConfig::default()).expect("an open service");
        Engine::start(
            &webrtc,
            &ViewerConfig::default(),
            service,
            Arc::new(Streams::default()),
        )
        .await
        .expect("an engine on loopback")
    }

    #[tokio::test]
    async fn concurrent_pulls_share_one_request_and_a_404_is_stream_not_found() {
        let (url, requests) = orchestrator_404(Duration::from_millis(300)).await;
        let relay = Relay::new(engine().await, RelayConfig::new(url, "secret", "edge-t"));
        let (a, b, c) = tokio::join!(relay.pull("demo"), relay.pull("demo"), relay.pull("demo"));
        for result in [a, b, c] {
            assert!(
                matches!(result, Err(Error::StreamNotFound(ref s)) if s == "demo"),
                "{result:?}"
            );
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        // A failed pull leaves nothing behind: the next viewer asks again.
        assert!(relay.active_pulls().is_empty());
        assert!(matches!(
            relay.pull("demo").await,
            Err(Error::StreamNotFound(_))
        ));
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert!(matches!(
            relay.pull("bad/name").await,
            Err(Error::InvalidStreamName(_))
        ));
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_orchestrator_is_a_service_failure() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        let relay = Relay::new(
            engine().await,
            RelayConfig::new(format!("http://127.0.0.1:{port}"), "secret", "edge-t"),
        );
        let started = std::time::Instant::now();
        let result = relay.pull("demo").await;
        assert!(matches!(result, Err(Error::ServiceFailed(_))), "{result:?}");
        assert_eq!(result.map_err(|e| e.http_status()).err(), Some(503));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(relay.active_pulls().is_empty());
    }
}
