//! One pull's life, owned by one task: connect (orchestrator redirect, WHEP POST, ICE/DTLS),
//! then feed every received RTP packet to the stream's `Ingest`. When the upstream drops, the
//! `Ingest` is dropped (the engine holds the local viewers) and the pull goes back through
//! the orchestrator, with backoff, for up to the reconnect grace; each success is a new
//! publish of the same stream, on which the engine resumes the held viewers. A grace period
//! after the last local viewer leaves, the upstream session is deleted and the stream ended.

use super::backoff::Backoff;
use super::codecs;
use super::peer::{Output, Peer};
use super::signal::{Signal, display_url};
use super::{PullState, Pulls};
use reqwest::Url;
use rtc::rtp;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use waveguide_control::engine::Ingest;
use waveguide_control::media::TrackKind;
use waveguide_control::{Engine, Error, Result};

/// One connection attempt, from the offer to a live `Ingest`, takes at most this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest budget a reconnect attempt is given near the end of the grace.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// An upstream that sends no RTP for this long is lost.
const RTP_SILENCE: Duration = Duration::from_secs(3);
/// How often the serving loop looks at its viewers and the silence timer.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A connection counts as having brought media back once its RTP spans this long: the burst
/// of an upstream's keyframe cache, replayed to every new viewer, does not end an outage.
const MEDIA_FLOWING: Duration = Duration::from_secs(1);
/// Packets that arrive between DTLS completion and the `Ingest` (normally none) are kept up
/// to this many.
const EARLY_PACKETS: usize = 1024;

/// Everything a pull task needs.
pub(crate) struct PullTask {
    pub engine: Arc<Engine>,
    pub signal: Signal,
    pub stream: String,
    pub id: u64,
    pub pulls: Arc<Pulls>,
    pub state: watch::Sender<PullState>,
    pub bind_ip: IpAddr,
    pub idle_grace: Duration,
    pub reconnect_grace: Duration,
    /// A fixed upstream WHEP URL; `None`: ask the orchestrator at every (re)connect.
    pub upstream: Option<Url>,
}

/// An upstream WHEP session resource, deleted when the pull lets go of it. Dropped without
/// [`UpstreamSession::delete`] (a cancelled attempt, a lost upstream), the DELETE is sent
/// from a task of its own.
struct UpstreamSession {
    signal: Signal,
    resource: Option<Url>,
}

impl UpstreamSession {
    async fn delete(mut self) {
        if let Some(resource) = self.resource.take() {
            let status = self.signal.delete(&resource).await;
            debug!(resource = %display_url(&resource), ?status, "relay: upstream session deleted");
        }
    }
}

impl Drop for UpstreamSession {
    fn drop(&mut self) {
        let Some(resource) = self.resource.take() else {
            return;
        };
        let signal = self.signal.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let status = signal.delete(&resource).await;
                debug!(resource = %display_url(&resource), ?status, "relay: upstream session deleted");
            });
        }
    }
}

/// A live pull: the connection and the local stream it feeds. Field order is drop order:
/// the local publisher goes first, then the connection closes, then the session is deleted.
struct Connection {
    ingest: Ingest,
    peer: Peer,
    session: UpstreamSession,
    /// The upstream's WHEP URL without its ticket, for logs.
    upstream: String,
}

/// Why serving stopped.
#[derive(Debug)]
enum End {
    /// No local viewer for the idle grace.
    Idle,
    /// A local publisher (or an operator's kick) took the stream from the relay.
    Revoked,
    /// The upstream failed, closed or went silent; whether media flowed before that.
    Lost { reason: String, got_media: bool },
}

/// Runs one pull to its end. The first attempt's outcome is what the callers waiting on the
/// pull get.
pub(crate) async fn run(task: PullTask) {
    info!(stream = %task.stream, orchestrator = %task.signal.locate_url(&task.stream), "relay pull starting");
    let mut conn = match task.attempt(ATTEMPT_TIMEOUT).await {
        Ok(conn) => conn,
        Err(e) => {
            warn!(stream = %task.stream, error = %e, "relay pull failed");
            task.pulls.remove(&task.stream, task.id);
            task.state.send_replace(PullState::Failed(e));
            return;
        }
    };
    info!(stream = %task.stream, upstream = %conn.upstream, "relay connected; stream live");
    task.state.send_replace(PullState::Live);
    // When the current outage began: reconnections that bring no media do not end it, so
    // the reconnect grace bounds the time without media, not the time without a connection.
    let mut outage: Option<(Instant, Backoff)> = None;
    loop {
        match task.serve(&mut conn).await {
            End::Idle => {
                let ended = task
                    .pulls
                    .remove_if(&task.stream, task.id, || !conn.ingest.has_viewers());
                if !ended {
                    continue;
                }
                task.state.send_replace(PullState::Ended);
                let Connection {
                    ingest,
                    mut peer,
                    session,
                    upstream,
                } = conn;
                ingest.end();
                peer.close();
                session.delete().await;
                info!(stream = %task.stream, %upstream, idle_s = task.idle_grace.as_secs_f64(), "relay pull ended: no local viewers");
                return;
            }
            End::Revoked => {
                task.pulls.remove(&task.stream, task.id);
                task.state.send_replace(PullState::Ended);
                let upstream = conn.upstream.clone();
                let Connection {
                    ingest,
                    mut peer,
                    session,
                    ..
                } = conn;
                drop(ingest);
                peer.close();
                session.delete().await;
                info!(stream = %task.stream, %upstream, "relay pull ended: the stream was taken over locally");
                return;
            }
            End::Lost { reason, got_media } => {
                let (since, backoff) = match outage.take() {
                    Some(current) if !got_media => current,
                    _ => (Instant::now(), Backoff::default()),
                };
                warn!(stream = %task.stream, upstream = %conn.upstream, %reason, counters = ?conn.peer.counters, "relay upstream lost; reconnecting through the orchestrator");
                task.state.send_replace(PullState::Connecting);
                let lost = conn.upstream.clone();
                // The local publisher goes now: the engine holds the viewers meanwhile.
                drop(conn);
                match task.reconnect(since, backoff).await {
                    Ok((next, backoff)) => {
                        outage = Some((since, backoff));
                        info!(stream = %task.stream, upstream = %next.upstream, "relay reconnected; viewers resume");
                        conn = next;
                        task.state.send_replace(PullState::Live);
                    }
                    Err(e) => {
                        warn!(stream = %task.stream, upstream = %lost, error = %e, grace_s = task.reconnect_grace.as_secs_f64(), "relay pull ended: the upstream did not come back");
                        task.pulls.remove(&task.stream, task.id);
                        task.state.send_replace(PullState::Failed(e));
                        return;
                    }
                }
            }
        }
    }
}

impl PullTask {
    /// One connection attempt within `budget`.
    async fn attempt(&self, budget: Duration) -> Result<Connection> {
        let deadline = Instant::now() + budget;
        match tokio::time::timeout(budget, self.connect(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(Error::ServiceFailed(
                "the stream's edge did not connect in time",
            )),
        }
    }

    /// Offer, orchestrator redirect, WHEP POST, answer, ICE/DTLS, then the local stream.
    async fn connect(&self, deadline: Instant) -> Result<Connection> {
        let (mut peer, offer) = Peer::offer(self.bind_ip, Instant::now())?;
        let target = match &self.upstream {
            Some(url) => url.clone(),
            None => self.signal.locate(&self.stream, &offer).await?,
        };
        let upstream = display_url(&target);
        debug!(stream = %self.stream, %upstream, "relay: the orchestrator points upstream");
        let created = self.signal.open(&target, &self.stream, &offer).await?;
        let session = UpstreamSession {
            signal: self.signal.clone(),
            resource: created.resource.clone(),
        };
        let negotiated = codecs::negotiated(&created.answer)
            .map_err(|e| Error::Engine(format!("relay: {e}")))?;
        let tracks = negotiated.tracks.clone();
        peer.answer(created.answer, negotiated, Instant::now())?;
        let mut out = Vec::new();
        let mut early: Vec<(TrackKind, rtp::Packet)> = Vec::new();
        while !peer.is_connected() {
            if Instant::now() >= deadline {
                return Err(Error::ServiceFailed(
                    "the stream's edge did not connect (ICE/DTLS) in time",
                ));
            }
            peer.step(deadline, &mut out).await;
            for output in out.drain(..) {
                match output {
                    Output::Connected => {}
                    Output::Rtp(kind, packet) => {
                        if early.len() < EARLY_PACKETS {
                            early.push((kind, packet));
                        }
                    }
                    Output::Closed(reason) => {
                        debug!(stream = %self.stream, %upstream, %reason, "relay: connection failed");
                        return Err(Error::ServiceFailed(
                            "the connection to the stream's edge failed",
                        ));
                    }
                }
            }
        }
        let ingest = self.engine.start_pulled(&self.stream, tracks)?;
        for (kind, packet) in early {
            let _ = ingest.send(kind, packet);
        }
        Ok(Connection {
            ingest,
            peer,
            session,
            upstream,
        })
    }

    /// Feeds the local stream until the pull should end or the upstream is lost.
    async fn serve(&self, conn: &mut Connection) -> End {
        let mut out = Vec::new();
        let mut last_rtp = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let mut first_rtp: Option<Instant> = None;
        let got_media = |first: Option<Instant>, last: Instant| {
            first.is_some_and(|f| last.duration_since(f) >= MEDIA_FLOWING)
        };
        loop {
            let now = Instant::now();
            if conn.ingest.is_revoked() {
                return End::Revoked;
            }
            if conn.ingest.has_viewers() {
                idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= self.idle_grace {
                return End::Idle;
            }
            if now.duration_since(last_rtp) >= RTP_SILENCE {
                return End::Lost {
                    reason: format!("no RTP from the upstream for {} s", RTP_SILENCE.as_secs()),
                    got_media: got_media(first_rtp, last_rtp),
                };
            }
            if conn.ingest.take_keyframe_request() {
                conn.peer.request_keyframe();
            }
            let until = (last_rtp + RTP_SILENCE).min(now + CHECK_EVERY);
            conn.peer.step(until, &mut out).await;
            if out.is_empty() {
                continue;
            }
            let received = Instant::now();
            for output in out.drain(..) {
                match output {
                    Output::Rtp(kind, packet) => {
                        last_rtp = received;
                        first_rtp.get_or_insert(received);
                        if conn.ingest.send(kind, packet).is_err() {
                            return End::Revoked;
                        }
                    }
                    Output::Closed(reason) => {
                        return End::Lost {
                            reason,
                            got_media: got_media(first_rtp, last_rtp),
                        };
                    }
                    Output::Connected => {}
                }
            }
        }
    }

    /// Attempts with `backoff` (250 ms, 500 ms, 1 s, 2 s, … over one outage) until one
    /// succeeds or the reconnect grace, counted from `started` (when media stopped), is spent.
    /// A 404 from the orchestrator is retried too: after an upstream edge restarts, the stream
    /// is unknown until its publisher is back.
    async fn reconnect(
        &self,
        started: Instant,
        mut backoff: Backoff,
    ) -> Result<(Connection, Backoff)> {
        let mut attempts = 0u32;
        let mut last_error = Error::ServiceFailed("the stream's edge did not come back");
        loop {
            let delay = backoff.next_delay();
            let remaining = self.reconnect_grace.saturating_sub(started.elapsed());
            if remaining <= delay {
                return Err(last_error);
            }
            tokio::time::sleep(delay).await;
            let budget = (remaining - delay).clamp(MIN_ATTEMPT, ATTEMPT_TIMEOUT);
            attempts += 1;
            match self.attempt(budget).await {
                Ok(conn) => {
                    debug!(stream = %self.stream, attempts, "relay: reconnect attempt succeeded");
                    return Ok((conn, backoff));
                }
                Err(e @ (Error::StreamBusy(_) | Error::InvalidStreamName(_))) => {
                    // A local publisher has the stream now: nothing to relay.
                    return Err(e);
                }
                Err(e) => {
                    info!(stream = %self.stream, attempts, error = %e, "relay reconnect attempt failed");
                    last_error = e;
                }
            }
        }
    }
}
