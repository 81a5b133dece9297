//! One Signal stream: a task that owns the sessions opened on it.
//!
//! The task reads the client's messages, answers offers (the engine calls run in a `JoinSet`
//! so a slow webhook or relay pull does not hold up the stream's other sessions), applies
//! trickled candidates, follows each answered session's state (a small follower task per
//! session turns the engine's watch channel into events for this task) and once a second
//! checks drain, stale announces and paused streams. When the client closes the stream (or
//! stops reading it) every session it opened ends.
//!
//! Per session: `Announced` (waiting for the offer) → `Offering` (the engine is answering) →
//! `Live` (bound to an engine session). Errors go back as `ErrorResponse`; the contract ends
//! the named session unless the reason is UNKNOWN_SESSION or PROTOCOL_VIOLATION.

use super::PeerBook;
use super::reply::{self, Failure};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tonic::{Code, Status, Streaming};
use tracing::{debug, info};
use waveguide_control::http::MAX_SDP_BYTES;
use waveguide_control::service::PublishRequest;
use waveguide_control::stream::{IngestProtocol, is_valid_name};
use waveguide_control::{Engine, SessionAnswer, SessionKind, SessionState};
use waveguide_proto::v1::signaling_request::Message as In;
use waveguide_proto::v1::signaling_response::Message as Out;
use waveguide_proto::v1::{
    Announce, Announced, ErrorReason, IceCandidate, Notification, NotificationKind, PeerRole,
    SessionDescription, SignalingRequest, SignalingResponse,
};

/// Sessions one Signal stream may hold at once.
pub(super) const MAX_SESSIONS: usize = 16;
/// How long an announced session may wait for its offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Candidates kept for a session whose offer is not answered yet.
const MAX_QUEUED_CANDIDATES: usize = 64;
/// Peer names are cut to this many characters.
const MAX_PEER_NAME_CHARS: usize = 128;
/// Longest candidate attribute accepted.
const MAX_CANDIDATE_BYTES: usize = 1024;

type Outbound = mpsc::Sender<Result<SignalingResponse, Status>>;

/// The client went away (stopped reading the stream): the task ends.
struct Gone;

/// What a follower tells the task about an answered session.
pub(super) enum Event {
    Connected,
    /// A viewer needs a keyframe from this publisher.
    KeyframeRequested,
    Ended,
}

/// An engine call that answered (or refused) an offer.
struct OfferDone {
    id: String,
    request_id: String,
    result: Result<SessionAnswer, waveguide_control::Error>,
}

enum Phase {
    Announced { since: Instant },
    Offering,
    Live(Live),
}

struct Live {
    engine_id: String,
    stream: String,
    follower: AbortHandle,
    /// A viewer was told STREAM_PAUSED and not yet STREAM_RESUMED.
    paused: bool,
}

struct Session {
    kind: SessionKind,
    /// The Announce's stream (a publisher's may be empty: the key names it).
    stream: String,
    /// The publisher's key; kept only until the offer is answered, never logged.
    token: String,
    peer_name: String,
    phase: Phase,
    /// Candidates trickled before the answer, with their request ids.
    queued: Vec<(String, IceCandidate)>,
}

impl Session {
    fn pending(&self) -> bool {
        matches!(self.phase, Phase::Announced { .. } | Phase::Offering)
    }
}

/// The task of one Signal stream.
pub(super) struct SignalTask {
    engine: Arc<Engine>,
    book: Arc<PeerBook>,
    remote_addr: Option<SocketAddr>,
    out: Outbound,
    sessions: HashMap<String, Session>,
    events: mpsc::UnboundedSender<(String, Event)>,
    told_draining: bool,
}

/// Decrements a gauge when dropped, so a panicking task still leaves the gauges right.
struct GaugeGuard(metrics::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl SignalTask {
    pub(super) fn new(
        engine: Arc<Engine>,
        book: Arc<PeerBook>,
        remote_addr: Option<SocketAddr>,
        out: Outbound,
    ) -> (Self, mpsc::UnboundedReceiver<(String, Event)>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        (
            Self {
                engine,
                book,
                remote_addr,
                out,
                sessions: HashMap::new(),
                events,
                told_draining: false,
            },
            events_rx,
        )
    }

    /// Serves the stream until the client closes it or stops reading, then ends its sessions.
    pub(super) async fn run(
        mut self,
        events_rx: mpsc::UnboundedReceiver<(String, Event)>,
        mut inbound: Streaming<SignalingRequest>,
    ) {
        let gauge = reply::streams_gauge();
        gauge.increment(1.0);
        let _open = GaugeGuard(gauge);
        debug!(peer = ?self.remote_addr, "Signal stream opened");
        let mut events_rx = events_rx;
        let mut offers: JoinSet<OfferDone> = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(m)) => self.on_request(m, &mut offers).await,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(peer = ?self.remote_addr, "Signal stream broke: {status}");
                        break;
                    }
                },
                Some(done) = offers.join_next() => match done {
                    Ok(done) => self.on_offer_done(done).await,
                    // Offer tasks do not panic (the engine contains its panics); if one
                    // did, its session stays Offering until the stream closes.
                    Err(e) => {
                        tracing::error!("Signal offer task failed: {e}");
                        Ok(())
                    }
                },
                Some((id, event)) = events_rx.recv() => self.on_event(id, event).await,
                _ = tick.tick() => self.on_tick().await,
            };
            if step.is_err() {
                break;
            }
        }
        self.close(offers).await;
    }

    async fn send(&self, response: SignalingResponse) -> Result<(), Gone> {
        reply::count(reply::sent_type(&response), "out");
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }

    /// Sends an `ErrorResponse`; the named session ends with it unless the reason says it
    /// goes on.
    async fn fail(&mut self, request_id: String, session: &str, f: Failure) -> Result<(), Gone> {
        debug!(session, reason = ?f.reason, "Signal request refused: {}", f.message);
        if !f.keeps_session() && !session.is_empty() {
            self.end(session);
        }
        self.send(f.into_response(request_id, session.to_owned()))
            .await
    }

    async fn notify(
        &self,
        request_id: String,
        session: &str,
        kind: NotificationKind,
        message: &str,
    ) -> Result<(), Gone> {
        self.send(reply::notification(
            request_id,
            session.to_owned(),
            kind,
            message,
        ))
        .await
    }

    async fn on_request(
        &mut self,
        m: SignalingRequest,
        offers: &mut JoinSet<OfferDone>,
    ) -> Result<(), Gone> {
        let rid = m.request_id;
        match m.message {
            None => {
                reply::count("empty", "in");
                let f = Failure::protocol(Code::InvalidArgument, "empty SignalingRequest");
                self.fail(rid, "", f).await
            }
            Some(In::Announce(a)) => {
                reply::count("announce", "in");
                self.announce(rid, a).await
            }
            Some(In::Offer(d)) => {
                reply::count("offer", "in");
                self.offer(rid, d, offers).await
            }
            Some(In::Answer(d)) => {
                reply::count("answer", "in");
                let f = if self.sessions.contains_key(&d.session_id) {
                    Failure::protocol(
                        Code::FailedPrecondition,
                        "answer without an offer: the node has sent no offer to answer",
                    )
                } else {
                    Failure::unknown_session(&d.session_id)
                };
                self.fail(rid, &d.session_id, f).await
            }
            Some(In::Candidate(c)) => {
                reply::count("candidate", "in");
                self.candidate(rid, c).await
            }
            Some(In::Notification(n)) => {
                reply::count("notification", "in");
                self.notification(rid, n).await
            }
        }
    }

    async fn announce(&mut self, rid: String, a: Announce) -> Result<(), Gone> {
        if self.sessions.len() >= MAX_SESSIONS {
            let f = Failure::new(
                ErrorReason::Unavailable,
                Code::ResourceExhausted,
                format!("at most {MAX_SESSIONS} sessions per Signal stream"),
            );
            return self.fail(rid, "", f).await;
        }
        if self.engine.limits().is_draining() {
            let f = Failure::new(
                ErrorReason::Unavailable,
                Code::Unavailable,
                "the node is draining; connect to another node",
            );
            return self.fail(rid, "", f).await;
        }
        let role = PeerRole::try_from(a.role).unwrap_or(PeerRole::Unspecified);
        let (kind, stream) = match role {
            PeerRole::Publisher => {
                // Checked now so that a wrong key fails at once and Announced can name the
                // stream the key selects; the offer is authorized again by the engine.
                let request = PublishRequest {
                    stream: Some(a.stream.as_str()).filter(|s| !s.is_empty()),
                    key: Some(a.token.as_str()).filter(|k| !k.is_empty()),
                    remote_addr: self.remote_addr,
                    ticket: None,
                };
                match self
                    .engine
                    .service()
                    .authorize_publish(IngestProtocol::Signaling, request)
                    .await
                {
                    Ok(stream) => (SessionKind::Publisher, stream),
                    Err(e) => return self.fail(rid, "", Failure::engine(&e)).await,
                }
            }
            PeerRole::Viewer => {
                if !is_valid_name(&a.stream) {
                    let f = Failure::new(
                        ErrorReason::StreamNotFound,
                        Code::InvalidArgument,
                        format!(
                            "a viewer must name a stream (letters, digits, '-', '_', '.'), got `{}`",
                            a.stream
                        ),
                    );
                    return self.fail(rid, "", f).await;
                }
                (SessionKind::Viewer, a.stream.clone())
            }
            PeerRole::Unspecified => {
                let f = Failure::protocol(
                    Code::InvalidArgument,
                    "Announce.role must be PUBLISHER or VIEWER",
                );
                return self.fail(rid, "", f).await;
            }
        };
        let id = hex_id();
        let mut peer_name = a.peer_name;
        if let Some((cut, _)) = peer_name.char_indices().nth(MAX_PEER_NAME_CHARS) {
            peer_name.truncate(cut);
        }
        info!(session = %id, %stream, role = ?kind, peer = ?peer_name, "Signal session announced");
        self.sessions.insert(
            id.clone(),
            Session {
                kind,
                stream: a.stream,
                token: a.token,
                peer_name,
                phase: Phase::Announced {
                    since: Instant::now(),
                },
                queued: Vec::new(),
            },
        );
        reply::pending_gauge().increment(1.0);
        self.send(SignalingResponse {
            request_id: rid,
            message: Some(Out::Announced(Announced {
                session_id: id,
                stream,
                ice_servers: reply::ice_servers(self.engine.ice_servers()),
            })),
        })
        .await
    }

    async fn offer(
        &mut self,
        rid: String,
        d: SessionDescription,
        offers: &mut JoinSet<OfferDone>,
    ) -> Result<(), Gone> {
        let id = d.session_id;
        let Some(session) = self.sessions.get_mut(&id) else {
            return self.fail(rid, &id, Failure::unknown_session(&id)).await;
        };
        if !matches!(session.phase, Phase::Announced { .. }) {
            let f = Failure::protocol(
                Code::FailedPrecondition,
                "this session already has an offer (renegotiation is not supported)",
            );
            return self.fail(rid, &id, f).await;
        }
        let refusal = if d.sdp.len() > MAX_SDP_BYTES {
            Some(format!("SDP larger than {MAX_SDP_BYTES} bytes"))
        } else if d.sdp.trim().is_empty() {
            Some("empty SDP offer".to_owned())
        } else {
            None
        };
        if let Some(why) = refusal {
            let f = Failure::new(ErrorReason::InvalidSdp, Code::InvalidArgument, why);
            return self.fail(rid, &id, f).await;
        }
        session.phase = Phase::Offering;
        let engine = Arc::clone(&self.engine);
        let kind = session.kind;
        let stream = session.stream.clone();
        let token = std::mem::take(&mut session.token);
        let remote_addr = self.remote_addr;
        offers.spawn(async move {
            let result = match kind {
                SessionKind::Publisher => {
                    let request = PublishRequest {
                        stream: Some(stream.as_str()).filter(|s| !s.is_empty()),
                        key: Some(token.as_str()).filter(|k| !k.is_empty()),
                        remote_addr,
                        ticket: None,
                    };
                    engine
                        .publish(request, d.sdp, IngestProtocol::Signaling)
                        .await
                }
                SessionKind::Viewer => {
                    engine
                        .watch(
                            &stream,
                            d.sdp,
                            waveguide_control::WatchCredentials {
                                remote: remote_addr.map(|a| a.ip()),
                                ..Default::default()
                            },
                        )
                        .await
                }
            };
            OfferDone {
                id,
                request_id: rid,
                result,
            }
        });
        Ok(())
    }

    async fn on_offer_done(&mut self, done: OfferDone) -> Result<(), Gone> {
        let OfferDone {
            id,
            request_id,
            result,
        } = done;
        let Some(session) = self.sessions.get_mut(&id) else {
            // BYE (or the stream's end) came while the engine answered: end what it made.
            if let Ok(answer) = result {
                let _ = self.engine.end_session(&answer.session);
            }
            return Ok(());
        };
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => {
                return self.fail(request_id, &id, Failure::engine(&e)).await;
            }
        };
        let Some(state) = self.engine.follow_session(&answer.session) else {
            // Ended before we could follow it (kicked at once); say so.
            let f = Failure::new(
                ErrorReason::Internal,
                Code::Aborted,
                "the session ended as it was answered",
            );
            return self.fail(request_id, &id, f).await;
        };
        reply::pending_gauge().decrement(1.0);
        self.book.insert(&answer.session, &session.peer_name);
        let keyframes = self.engine.follow_keyframe_requests(&answer.session);
        let follower =
            tokio::spawn(follow(id.clone(), state, keyframes, self.events.clone())).abort_handle();
        info!(session = %id, engine_session = %answer.session, stream = %answer.stream, "Signal session answered");
        session.phase = Phase::Live(Live {
            engine_id: answer.session,
            stream: answer.stream,
            follower,
            paused: false,
        });
        let queued = std::mem::take(&mut session.queued);
        self.send(SignalingResponse {
            request_id,
            message: Some(Out::Answer(SessionDescription {
                session_id: id.clone(),
                sdp: answer.sdp,
            })),
        })
        .await?;
        for (rid, c) in queued {
            self.apply_candidate(rid, &id, c).await?;
        }
        Ok(())
    }

    async fn candidate(&mut self, rid: String, c: IceCandidate) -> Result<(), Gone> {
        let id = c.session_id.clone();
        let Some(session) = self.sessions.get_mut(&id) else {
            return self.fail(rid, &id, Failure::unknown_session(&id)).await;
        };
        if let Err(f) = check_candidate(&c) {
            return self.fail(rid, &id, f).await;
        }
        if c.end_of_candidates || c.candidate.trim().is_empty() {
            // The node is ICE-lite: it never gathers against the client's candidates, so the
            // end of them changes nothing.
            return Ok(());
        }
        if session.pending() {
            if session.queued.len() >= MAX_QUEUED_CANDIDATES {
                let f = Failure::protocol(
                    Code::ResourceExhausted,
                    format!("more than {MAX_QUEUED_CANDIDATES} candidates before the answer"),
                );
                return self.fail(rid, &id, f).await;
            }
            session.queued.push((rid, c));
            return Ok(());
        }
        self.apply_candidate(rid, &id, c).await
    }

    /// Hands one checked candidate of a live session to the engine (as a trickle PATCH).
    async fn apply_candidate(
        &mut self,
        rid: String,
        id: &str,
        c: IceCandidate,
    ) -> Result<(), Gone> {
        let Some(Session {
            kind,
            phase: Phase::Live(live),
            ..
        }) = self.sessions.get(id)
        else {
            return self.fail(rid, id, Failure::unknown_session(id)).await;
        };
        let fragment = fragment(&c);
        let result = self
            .engine
            .patch(*kind, &live.stream, &live.engine_id, None, &fragment)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(waveguide_control::Error::SessionNotFound) => {
                // The follower reports the end; the candidate is simply too late.
                self.fail(rid, id, Failure::unknown_session(id)).await
            }
            Err(e) => {
                let f = Failure::protocol(Code::InvalidArgument, e.to_string());
                self.fail(rid, id, f).await
            }
        }
    }

    async fn notification(&mut self, rid: String, n: Notification) -> Result<(), Gone> {
        let kind = NotificationKind::try_from(n.kind).unwrap_or(NotificationKind::Unspecified);
        match kind {
            NotificationKind::Keepalive => {
                self.notify(rid, &n.session_id, NotificationKind::Keepalive, "")
                    .await
            }
            NotificationKind::Bye => {
                if !self.sessions.contains_key(&n.session_id) {
                    let f = Failure::unknown_session(&n.session_id);
                    return self.fail(rid, &n.session_id, f).await;
                }
                self.end(&n.session_id);
                info!(session = %n.session_id, "Signal session ended by the client");
                self.notify(
                    rid,
                    &n.session_id,
                    NotificationKind::SessionEnded,
                    "ended by the client (BYE)",
                )
                .await
            }
            _ => {
                let f = Failure::protocol(
                    Code::InvalidArgument,
                    format!(
                        "a client may send BYE or KEEPALIVE, not {}",
                        kind.as_str_name()
                    ),
                );
                self.fail(rid, &n.session_id, f).await
            }
        }
    }

    async fn on_event(&mut self, id: String, event: Event) -> Result<(), Gone> {
        let Some(Session {
            kind,
            phase: Phase::Live(live),
            ..
        }) = self.sessions.get(&id)
        else {
            return Ok(());
        };
        match event {
            Event::Connected => {
                self.notify(
                    String::new(),
                    &id,
                    NotificationKind::Connected,
                    "WebRTC connected",
                )
                .await
            }
            Event::KeyframeRequested => {
                self.notify(
                    String::new(),
                    &id,
                    NotificationKind::KeyframeRequested,
                    "a viewer needs a keyframe",
                )
                .await
            }
            Event::Ended => {
                let why = if *kind == SessionKind::Viewer
                    && self.engine.streams().get(&live.stream).is_none()
                {
                    "the stream ended"
                } else {
                    "the session ended on the node (connection lost, timed out or kicked)"
                };
                info!(session = %id, "Signal session ended: {why}");
                self.forget(&id);
                self.notify(String::new(), &id, NotificationKind::SessionEnded, why)
                    .await
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), Gone> {
        let draining = self.engine.limits().is_draining();
        if draining && !self.told_draining {
            self.notify(
                String::new(),
                "",
                NotificationKind::Draining,
                "the node is draining; reconnect elsewhere (through the orchestrator)",
            )
            .await?;
        }
        self.told_draining = draining;
        let now = Instant::now();
        let stale: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s.phase, Phase::Announced { since } if now.duration_since(since) > OFFER_TIMEOUT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.forget(&id);
            let why = format!(
                "no offer within {} s of the announce",
                OFFER_TIMEOUT.as_secs()
            );
            self.notify(String::new(), &id, NotificationKind::SessionEnded, &why)
                .await?;
        }
        // Viewers hear when their publisher leaves (the stream waits for it) and returns.
        let mut changes = Vec::new();
        for (id, s) in &mut self.sessions {
            let Phase::Live(live) = &mut s.phase else {
                continue;
            };
            if s.kind != SessionKind::Viewer {
                continue;
            }
            let Some(status) = self.engine.streams().status(&live.stream, now) else {
                continue;
            };
            let paused = status.state != "live";
            if paused != live.paused {
                live.paused = paused;
                changes.push((id.clone(), paused));
            }
        }
        for (id, paused) in changes {
            let (kind, text) = if paused {
                (
                    NotificationKind::StreamPaused,
                    "the publisher left; waiting for it",
                )
            } else {
                (NotificationKind::StreamResumed, "the publisher is back")
            };
            self.notify(String::new(), &id, kind, text).await?;
        }
        Ok(())
    }

    /// Ends a session the client no longer wants: its engine session too.
    fn end(&mut self, id: &str) {
        if let Some(Session {
            phase: Phase::Live(live),
            ..
        }) = self.sessions.get(id)
        {
            // Already gone (the follower's news is on its way) is fine.
            let _ = self.engine.end_session(&live.engine_id);
        }
        self.forget(id);
    }

    /// Drops a session from this task's books (not from the engine).
    fn forget(&mut self, id: &str) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        match session.phase {
            Phase::Live(live) => {
                live.follower.abort();
                self.book.remove(&live.engine_id);
            }
            Phase::Announced { .. } | Phase::Offering => {
                reply::pending_gauge().decrement(1.0);
            }
        }
    }

    /// The stream is over: every session it opened ends, including those still being answered.
    async fn close(mut self, mut offers: JoinSet<OfferDone>) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        let count = ids.len();
        for id in ids {
            self.end(&id);
        }
        while let Some(done) = offers.join_next().await {
            if let Ok(OfferDone {
                result: Ok(answer), ..
            }) = done
            {
                let _ = self.engine.end_session(&answer.session);
            }
        }
        debug!(peer = ?self.remote_addr, sessions = count, "Signal stream closed");
    }
}

/// Forwards an answered session's state to its Signal task: CONNECTED once, then its end.
async fn follow(
    id: String,
    mut state: watch::Receiver<SessionState>,
    keyframes: Option<watch::Receiver<u64>>,
    events: mpsc::UnboundedSender<(String, Event)>,
) {
    let mut told = false;
    // Viewers' sessions never see a request; a publisher's channel lives as long as it does.
    let mut keyframes = keyframes;
    loop {
        if !told && *state.borrow_and_update() == SessionState::Connected {
            told = true;
            if events.send((id.clone(), Event::Connected)).is_err() {
                return;
            }
        }
        let keyframe = async {
            match keyframes.as_mut() {
                Some(k) => k.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    let _ = events.send((id, Event::Ended));
                    return;
                }
            }
            requested = keyframe => {
                if !requested {
                    keyframes = None;
                } else if events.send((id.clone(), Event::KeyframeRequested)).is_err() {
                    return;
                }
            }
        }
    }
}

/// A candidate must be one attribute line: anything else could smuggle other lines (an ICE
/// restart's credentials) into the fragment handed to the engine.
fn check_candidate(c: &IceCandidate) -> Result<(), Failure> {
    let bad = |why: &str| Err(Failure::protocol(Code::InvalidArgument, why));
    let text = c.candidate.trim();
    if text.len() > MAX_CANDIDATE_BYTES || c.sdp_mid.len() > 64 {
        return bad("candidate too long");
    }
    if [text, c.sdp_mid.as_str()]
        .iter()
        .any(|s| s.contains(['\r', '\n']))
    {
        return bad("a candidate is one line");
    }
    let text = text.strip_prefix("a=").unwrap_or(text);
    if !text.is_empty() && !text.starts_with("candidate:") {
        return bad("IceCandidate.candidate must start with `candidate:`");
    }
    Ok(())
}

/// The `application/trickle-ice-sdpfrag` body of one candidate.
fn fragment(c: &IceCandidate) -> String {
    let text = c.candidate.trim();
    let text = text.strip_prefix("a=").unwrap_or(text);
    let mut out = String::from("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n");
    if !c.sdp_mid.is_empty() {
        out.push_str(&format!("a=mid:{}\r\n", c.sdp_mid));
    }
    out.push_str(&format!("a={text}\r\n"));
    out
}

fn hex_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(text: &str, mid: &str) -> IceCandidate {
        IceCandidate {
            candidate: text.into(),
            sdp_mid: mid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn candidates_become_one_line_fragments() {
        let c = cand("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "0");
        assert!(check_candidate(&c).is_ok());
        assert_eq!(
            fragment(&c),
            "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
        );
        let prefixed = cand("a=candidate:1 1 udp 1 127.0.0.1 5000 typ host", "");
        assert!(check_candidate(&prefixed).is_ok());
        assert!(!fragment(&prefixed).contains("a=a="));
        assert!(!fragment(&prefixed).contains("a=mid"));
    }

    #[test]
    fn smuggled_lines_and_junk_are_refused() {
        let smuggle = cand(
            "candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=ice-ufrag:x\r\na=ice-pwd:y",
            "0",
        );
        assert!(check_candidate(&smuggle).is_err());
        assert!(check_candidate(&cand("candidate:1", "0\na=ice-pwd:y")).is_err());
        assert!(check_candidate(&cand("garbage", "0")).is_err());
        assert!(check_candidate(&cand(&"candidate:".repeat(200), "0")).is_err());
        assert!(check_candidate(&cand("", "")).is_ok());
    }

    #[test]
    fn engine_errors_map_like_http() {
        use waveguide_control::Error;
        let cases = [
            (
                Error::MissingKey,
                ErrorReason::Unauthenticated,
                Code::Unauthenticated,
            ),
            (
                Error::Refused("no".into()),
                ErrorReason::Unauthenticated,
                Code::PermissionDenied,
            ),
            (
                Error::StreamNotFound("x".into()),
                ErrorReason::StreamNotFound,
                Code::NotFound,
            ),
            (
                Error::StreamBusy("x".into()),
                ErrorReason::StreamAlreadyLive,
                Code::AlreadyExists,
            ),
            (
                Error::MalformedSdp("x".into()),
                ErrorReason::InvalidSdp,
                Code::InvalidArgument,
            ),
            (
                Error::Unavailable,
                ErrorReason::Unavailable,
                Code::Unavailable,
            ),
            (
                Error::Engine("x".into()),
                ErrorReason::Internal,
                Code::Internal,
            ),
            (
                Error::SessionNotFound,
                ErrorReason::UnknownSession,
                Code::NotFound,
            ),
        ];
        for (e, reason, code) in cases {
            let f = Failure::engine(&e);
            assert_eq!((f.reason, f.code), (reason, code), "{e}");
        }
        assert!(Failure::unknown_session("x").keeps_session());
        assert!(!Failure::engine(&Error::MissingKey).keeps_session());
    }

    #[test]
    fn ids_are_32_hex_digits() {
        let id = hex_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, hex_id());
    }
}
