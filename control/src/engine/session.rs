//! Sessions: the WHIP and WHEP resources, what the API shows of them, and what can be done to
//! one after it started (end, kick, pause or cap, statistics).

use super::peer::PeerId;
use super::shard::Command;
use super::trickle::TrickleBudget;
use super::{Connecting, Delivery, Engine, SessionStats};
use crate::error::{Error, Result};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::info;

/// Whether a session publishes or watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A WHIP publisher.
    Publisher,
    /// A WHEP viewer.
    Viewer,
}

/// What a PATCH did.
#[derive(Debug, Clone)]
pub enum PatchOutcome {
    /// Candidates added (`204`).
    Trickled,
    /// ICE restarted: our new credentials and candidates, and the resource's new ETag (`200`).
    Restarted {
        /// `application/trickle-ice-sdpfrag` body.
        fragment: String,
        /// New entity tag.
        etag: String,
    },
}

/// A session the engine answered.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    /// Opaque id, the last segment of the session resource URL.
    pub session: String,
    /// The stream it publishes or watches.
    pub stream: String,
    /// The answer SDP.
    pub sdp: String,
    /// The resource's entity tag.
    pub etag: String,
}

#[derive(Debug, Clone)]
pub(super) struct SessionEntry {
    pub(super) shard: usize,
    pub(super) peer: PeerId,
    pub(super) stream: String,
    pub(super) kind: SessionKind,
    pub(super) etag: String,
    pub(super) created: Instant,
    /// Dropped with the entry: watchers then learn the session ended.
    pub(super) state: tokio::sync::watch::Sender<SessionState>,
    /// Keyframe requests sent to this publisher so far.
    pub(super) keyframe_requests: tokio::sync::watch::Sender<u64>,
    /// Another edge pulling the stream (a relay), not an end viewer.
    pub(super) relay_pull: bool,
    /// The operator's pause and cap (viewers).
    pub(super) delivery: Delivery,
    /// Counted as connecting until it connects or ends (`pending.rs`).
    pub(super) connecting: Option<Connecting>,
    /// Its trickle PATCHes' rate and candidates (`trickle.rs`).
    pub(super) trickle: TrickleBudget,
}

impl SessionEntry {
    fn info(&self, session: &str, now: Instant) -> SessionInfo {
        SessionInfo {
            session: session.to_owned(),
            stream: self.stream.clone(),
            kind: self.kind,
            state: *self.state.borrow(),
            age: now.saturating_duration_since(self.created),
            relay_pull: self.relay_pull,
            delivery: self.delivery,
        }
    }
}

/// What a viewer presents besides its offer.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchCredentials<'a> {
    /// `?ticket=` from an orchestrator's redirect.
    pub ticket: Option<&'a str>,
    /// The `Authorization` header value.
    pub authorization: Option<&'a str>,
    /// The client's address (the TCP peer), for the cap on sessions still connecting per
    /// client; unknown clients count in the node's total only.
    pub remote: Option<std::net::IpAddr>,
}

/// Where a WebRTC session is, for those who follow it (gRPC signaling, the entity API). The
/// end of a session is its watch channel closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Answered; ICE and DTLS not done yet.
    Connecting,
    /// Media can flow.
    Connected,
}

/// One WebRTC session on this node.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id (last segment of its WHIP/WHEP resource URL).
    pub session: String,
    /// Its stream.
    pub stream: String,
    /// Publisher or viewer.
    pub kind: SessionKind,
    /// Where it is.
    pub state: SessionState,
    /// How long ago it was answered.
    pub age: Duration,
    /// A viewer that is another edge pulling the stream (a relay link), not an end viewer.
    pub relay_pull: bool,
    /// The operator's pause and cap (viewers).
    pub delivery: Delivery,
}

impl Engine {
    /// Ends a session (HTTP DELETE). A publisher's DELETE ends its stream at once: the grace
    /// period is for publishers that vanish, not for ones that say goodbye.
    pub fn end(&self, kind: SessionKind, stream: &str, session: &str) -> Result<()> {
        let entry = self.lookup(kind, stream, session)?;
        self.shared.forget_session(session);
        // The stream ends before the shard closes the publisher: a shard on its own thread
        // can close it at once, and a publisher it closed first counts as vanished (the
        // stream would wait out the reconnect grace instead of ending).
        if kind == SessionKind::Publisher {
            self.shared.end_stream(stream, session);
        }
        self.send(
            entry.shard,
            Command::Close {
                id: entry.peer,
                reason: "ended by client",
            },
        )?;
        Ok(())
    }

    /// Ends `stream` now, publisher and viewers (an operator's or the Service's decision).
    pub fn kick(&self, stream: &str, reason: &str) -> Result<()> {
        let (id, session) = self
            .shared
            .streams
            .kick(stream)
            .ok_or_else(|| Error::StreamNotFound(stream.to_owned()))?;
        if let Some(session) = session
            && let Ok(entry) = self.lookup(SessionKind::Publisher, stream, &session)
        {
            self.shared.forget_session(&session);
            let _ = self.send(
                entry.shard,
                Command::Close {
                    id: entry.peer,
                    reason: "stream kicked",
                },
            );
        }
        for tx in &self.shared.commands {
            let _ = tx.send(Command::EndStream { stream: id });
        }
        info!(%stream, %reason, "stream kicked");
        Ok(())
    }

    pub(super) fn lookup(
        &self,
        kind: SessionKind,
        stream: &str,
        session: &str,
    ) -> Result<SessionEntry> {
        self.shared
            .sessions()
            .get(session)
            .filter(|e| e.kind == kind && e.stream == stream)
            .cloned()
            .ok_or(Error::SessionNotFound)
    }

    /// What a new publisher's claim leaves to do, whatever its protocol: close the stale
    /// publisher it replaced, and end held viewers whose codecs it does not carry.
    pub(super) fn take_over(&self, stream: &str, claim: &crate::stream::PublisherClaim) {
        if let Some(old) = &claim.replaced {
            info!(%stream, "replacing a stale publisher");
            self.close_session(old);
        }
        if !claim.viewers_continue {
            info!(%stream, "publisher changed codecs; ending held viewers");
            for tx in &self.shared.commands {
                let _ = tx.send(Command::EndStream {
                    stream: claim.stream,
                });
            }
        }
    }

    pub(super) fn close_session(&self, session: &str) {
        let entry = self.shared.remove_session(session);
        if let Some(e) = entry {
            let _ = self.send(
                e.shard,
                Command::Close {
                    id: e.peer,
                    reason: "replaced by a new publisher",
                },
            );
        }
    }

    /// Records a new session; returns its first entity tag.
    pub(super) fn register(
        &self,
        session: &str,
        shard: usize,
        peer: PeerId,
        stream: &str,
        kind: SessionKind,
        relay_pull: bool,
    ) -> String {
        let etag = new_etag();
        self.shared.sessions().insert(
            session.to_owned(),
            SessionEntry {
                shard,
                peer,
                stream: stream.to_owned(),
                kind,
                etag: etag.clone(),
                created: Instant::now(),
                state: tokio::sync::watch::Sender::new(SessionState::Connecting),
                keyframe_requests: tokio::sync::watch::Sender::new(0),
                relay_pull,
                delivery: Delivery::default(),
                connecting: None,
                trickle: TrickleBudget::default(),
            },
        );
        etag
    }

    /// Every WebRTC session on this node.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let now = Instant::now();
        let mut all: Vec<SessionInfo> = self
            .shared
            .sessions()
            .iter()
            .map(|(id, e)| e.info(id, now))
            .collect();
        all.sort_by(|a, b| a.session.cmp(&b.session));
        all
    }

    /// One WebRTC session on this node; `None` when there is no such session (any more).
    pub fn session(&self, session: &str) -> Option<SessionInfo> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.info(session, Instant::now()))
    }

    /// Follows `session`: its state now and each change; the channel closes when it ends.
    /// `None` when there is no such session (any more).
    pub fn follow_session(
        &self,
        session: &str,
    ) -> Option<tokio::sync::watch::Receiver<SessionState>> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.state.subscribe())
    }

    /// Follows the keyframe requests sent to publisher `session`: a count that grows with each.
    /// `None` when there is no such session (any more).
    pub fn follow_keyframe_requests(
        &self,
        session: &str,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared
            .sessions()
            .get(session)
            .map(|e| e.keyframe_requests.subscribe())
    }

    /// Sets how media is delivered to viewer `session`: paused, capped, audio only. A resumed
    /// viewer starts again at the newest cached keyframe.
    pub fn set_delivery(&self, session: &str, delivery: Delivery) -> Result<()> {
        let shard = {
            let mut sessions = self.shared.sessions();
            let entry = sessions
                .get_mut(session)
                .filter(|e| e.kind == SessionKind::Viewer)
                .ok_or(Error::SessionNotFound)?;
            entry.delivery = delivery;
            (entry.shard, entry.peer)
        };
        self.send(
            shard.0,
            Command::Deliver {
                id: shard.1,
                delivery,
            },
        )?;
        info!(%session, ?delivery, "viewer delivery changed");
        Ok(())
    }

    /// The session's delivery figures now, as its shard measured them.
    pub async fn session_stats(&self, session: &str) -> Result<SessionStats> {
        let (shard, id) = self
            .shared
            .sessions()
            .get(session)
            .map(|e| (e.shard, e.peer))
            .ok_or(Error::SessionNotFound)?;
        let (reply, rx) = oneshot::channel();
        self.send(shard, Command::Stats { id, reply })?;
        rx.await.map_err(|_| Error::SessionNotFound)
    }

    /// Ends one session, publisher or viewer, whichever way it was negotiated (a kick).
    pub fn end_session(&self, session: &str) -> Result<()> {
        let (kind, stream) = self
            .shared
            .sessions()
            .get(session)
            .map(|e| (e.kind, e.stream.clone()))
            .ok_or(Error::SessionNotFound)?;
        self.end(kind, &stream, session)
    }
}

pub(super) fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

pub(super) fn new_etag() -> String {
    format!("\"{}\"", hex::encode(rand::random::<[u8; 8]>()))
}
