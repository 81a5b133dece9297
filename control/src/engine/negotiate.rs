//! WHIP and WHEP negotiation: an offer becomes a session on a shard (publish, watch), and a
//! PATCH adds candidates or restarts ICE. What a session is afterwards lives in `session.rs`.

use super::fragment::parse_fragment;
use super::peer::{Peer, PublisherRole, Role, ViewerRole};
use super::session::{
    PatchOutcome, SessionAnswer, SessionKind, WatchCredentials, new_etag, new_session_id,
};
use super::shard::Command;
use super::trickle::{
    MAX_FRAGMENT_BYTES, MAX_REMOTE_CANDIDATES, PATCH_BURST, PATCHES_PER_SEC, PatchRefused, TooFast,
};
use super::{Engine, direct, offer, setup, srtp_keys};
use crate::cluster::TicketScope;
use crate::error::{Error, Result};
use crate::service::PublishRequest;
use crate::stream::{IngestProtocol, NewPublisher, TrackInfo};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{info, warn};

impl Engine {
    /// Answers a publisher's offer: authorizes it, takes the stream (or returns 409), starts
    /// the session on a shard.
    pub async fn publish(
        &self,
        request: PublishRequest<'_>,
        offer_sdp: String,
        protocol: IngestProtocol,
    ) -> Result<SessionAnswer> {
        self.admit_publisher()?;
        let stream = self.service.authorize_publish(protocol, request).await?;
        let offer = offer::parse(&offer_sdp)?;
        let now = Instant::now();
        let previous: Vec<TrackInfo> = self
            .shared
            .streams
            .get(&stream)
            .map(|s| s.tracks)
            .unwrap_or_default();
        let shard = self.pick_shard();
        let (built, tracks) = contain_panic(|| {
            setup::publisher(&offer, offer_sdp, &previous, &self.candidates[shard], now)
        })?;
        let session = new_session_id();
        let last_media = Arc::new(AtomicU64::new(0));
        let infos: Vec<TrackInfo> = tracks.iter().map(|t| t.info.clone()).collect();
        let claim = self.shared.streams.claim(
            &stream,
            protocol,
            infos,
            NewPublisher {
                session: session.clone(),
                shard: Some(shard),
                last_media: Arc::clone(&last_media),
                revoked: Arc::default(),
                keyframe_wanted: None,
            },
            now,
        )?;
        self.take_over(&stream, &claim);
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            pc: built.pc,
            session: session.clone(),
            stream_name: stream.clone(),
            stream: claim.stream,
            local_ufrag: built.local_ufrag,
            role: Role::Publisher(PublisherRole {
                epoch: claim.epoch,
                tracks,
                counters: claim.counters,
                last_media,
                ssrcs: [None, None],
                video_receiver: None,
                last_keyframe_request: None,
                keyframe_request_pending: false,
                keyframe_requests_sent: 0,
                ice_disconnected: false,
            }),
            next_timeout: None,
            socket: None,
            created: now,
            connected: false,
            remote: None,
        };
        let etag = self.register(&session, shard, id, &stream, SessionKind::Publisher, false);
        self.send(
            shard,
            Command::AddPeer {
                id,
                peer: Box::new(peer),
            },
        )?;
        self.shared.metrics.publisher_joined();
        info!(%session, %stream, shard, publishes = claim.epoch + 1, "publisher session started");
        Ok(SessionAnswer {
            session,
            stream,
            sdp: built.answer_sdp,
            etag,
        })
    }

    /// Answers a viewer's offer for `stream`. With a relay ticket (or the cluster token as its
    /// bearer token) the viewer is another edge pulling the stream: it is not held to the end-viewer ceiling, and a stream this node
    /// does not have is a 404 rather than a pull of its own (which could loop). Otherwise a
    /// missing stream is pulled from the edge that has it, when a relay is set up.
    pub async fn watch(
        &self,
        stream: &str,
        offer_sdp: String,
        credentials: WatchCredentials<'_>,
    ) -> Result<SessionAnswer> {
        let relay_pull = match credentials.ticket {
            Some(t) => {
                self.service.verify_ticket(t, TicketScope::Relay, stream)?;
                true
            }
            None => self.service.is_cluster_bearer(credentials.authorization),
        };
        let offer = offer::parse(&offer_sdp)?;
        let (_, viewers) = self.shared.streams.live_counts();
        if self.limits.is_draining() {
            return Err(Error::Draining);
        }
        if !relay_pull
            && let Some(max) = self.limits.max_viewers()
            && viewers >= max as usize
        {
            return Err(Error::AtCapacity(format!("viewer limit of {max}")));
        }
        let mut found = self.shared.streams.get(stream);
        if found.is_none()
            && !relay_pull
            && let Some(upstream) = self.upstream.get()
        {
            upstream.pull(stream).await?;
            found = self.shared.streams.get(stream);
        }
        let stream_ref = found.ok_or_else(|| Error::StreamNotFound(stream.to_owned()))?;
        if !relay_pull
            && let Some(max) = self.limits.stream_max_viewers(stream)
            && stream_ref.viewers >= max as usize
        {
            return Err(Error::AtCapacity(format!(
                "stream `{stream}` viewer limit of {max}"
            )));
        }
        // Before any work for it: a client that never connects holds a peer and a viewer
        // slot until the shard gives up on it.
        let connecting = if relay_pull {
            None
        } else {
            Some(self.shared.admit_pending(credentials.remote)?)
        };
        let now = Instant::now();
        let shard = self.pick_viewer_shard()?;
        // Without a provider to wrap, the viewer simply stays on rtc's write path.
        let keys = self
            .direct_send
            .then(|| srtp_keys::KeyCapture::new().ok().map(Arc::new))
            .flatten();
        let (built, tracks) = contain_panic(|| {
            setup::viewer(
                &offer,
                offer_sdp,
                &stream_ref,
                &self.candidates[shard],
                keys.clone(),
                now,
            )
        })?;
        let session = new_session_id();
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let peer = Peer {
            pc: built.pc,
            session: session.clone(),
            stream_name: stream.to_owned(),
            stream: stream_ref.id,
            local_ufrag: built.local_ufrag,
            role: Role::Viewer(ViewerRole::new(
                tracks,
                keys.map(|k| Box::new(direct::DirectPath::new(k))),
            )),
            next_timeout: None,
            socket: None,
            created: now,
            connected: false,
            remote: None,
        };
        let etag = self.register(&session, shard, id, stream, SessionKind::Viewer, relay_pull);
        if let Some(hold) = connecting {
            self.shared.hold_pending(&session, hold);
        }
        self.shared.streams.add_viewers(stream, 1);
        self.shared.metrics.viewer_joined();
        self.send(
            shard,
            Command::AddPeer {
                id,
                peer: Box::new(peer),
            },
        )?;
        info!(%session, %stream, shard, "viewer session started");
        Ok(SessionAnswer {
            session,
            stream: stream.to_owned(),
            sdp: built.answer_sdp,
            etag,
        })
    }

    /// Applies an `application/trickle-ice-sdpfrag` PATCH: new remote candidates (trickle), or
    /// new remote credentials (an ICE restart, answered with ours).
    pub async fn patch(
        &self,
        kind: SessionKind,
        stream: &str,
        session: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchOutcome> {
        if fragment.len() > MAX_FRAGMENT_BYTES {
            return Err(Error::FragmentTooLarge(MAX_FRAGMENT_BYTES));
        }
        let entry = self.lookup(kind, stream, session)?;
        if let Some(tag) = if_match
            && tag != "*"
            && tag.trim_matches('"') != entry.etag.trim_matches('"')
        {
            return Err(Error::PreconditionFailed);
        }
        let parsed = parse_fragment(fragment)?;
        let count = parsed.candidates.len();
        if count > MAX_REMOTE_CANDIDATES {
            self.shared.metrics.patches_refused_candidates.increment(1);
            return Err(Error::TooManyCandidates(MAX_REMOTE_CANDIDATES));
        }
        // Fragments with credentials restart ICE only if they are new; the shard decides. The
        // candidates count as a trickle unless it restarts.
        let fits = self.admit_patch(session, count)?;
        if let Some((ufrag, pwd)) = parsed.restart {
            let (reply, rx) = oneshot::channel();
            let candidates = parsed.candidates;
            self.send(
                entry.shard,
                Command::Restart {
                    id: entry.peer,
                    ufrag,
                    pwd,
                    candidates,
                    trickle_fits: fits,
                    reply,
                },
            )?;
            let answer = match rx.await {
                Ok(Ok(Some(answer))) => answer,
                Ok(Ok(None)) => return Ok(PatchOutcome::Trickled),
                Ok(Err(PatchRefused::TooManyCandidates)) => {
                    self.shared.metrics.patches_refused_candidates.increment(1);
                    return Err(Error::TooManyCandidates(MAX_REMOTE_CANDIDATES));
                }
                Ok(Err(PatchRefused::Invalid(reason))) => {
                    return Err(Error::MalformedFragment(reason));
                }
                Ok(Err(PatchRefused::Ended)) | Err(_) => return Err(Error::SessionNotFound),
            };
            let etag = new_etag();
            if let Some(e) = self.shared.sessions().get_mut(session) {
                e.etag = etag.clone();
                e.trickle.restarted(count);
            }
            return Ok(PatchOutcome::Restarted {
                fragment: answer,
                etag,
            });
        }
        if !fits {
            self.shared.metrics.patches_refused_candidates.increment(1);
            return Err(Error::TooManyCandidates(MAX_REMOTE_CANDIDATES));
        }
        if parsed.candidates.is_empty() {
            return Ok(PatchOutcome::Trickled);
        }
        let (reply, rx) = oneshot::channel();
        let candidates = parsed.candidates;
        self.send(
            entry.shard,
            Command::Trickle {
                id: entry.peer,
                candidates,
                reply,
            },
        )?;
        match rx.await {
            Ok(Ok(())) => Ok(PatchOutcome::Trickled),
            Ok(Err(reason)) => Err(Error::MalformedFragment(reason)),
            Err(_) => Err(Error::SessionNotFound),
        }
    }
}

impl Engine {
    /// Takes one PATCH from `session`'s rate (`429` past it); whether `count` more candidates
    /// fit under its cap (they are counted if so).
    fn admit_patch(&self, session: &str, count: usize) -> Result<bool> {
        let mut sessions = self.shared.sessions();
        let entry = sessions.get_mut(session).ok_or(Error::SessionNotFound)?;
        if let Err(TooFast { retry_ms }) = entry.trickle.patch(Instant::now()) {
            self.shared.metrics.patches_refused_rate.increment(1);
            return Err(Error::TooManyRequests(format!(
                "at most {PATCHES_PER_SEC} trickle PATCHes a second on a session \
                 (bursts of {PATCH_BURST}); retry in {retry_ms} ms"
            )));
        }
        Ok(entry.trickle.reserve(count))
    }
}

/// Runs offer handling so that a panic inside the WebRTC library on a hostile offer refuses
/// that offer (400) instead of taking the request task down.
pub(super) fn contain_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        warn!("the WebRTC engine panicked on an offer; refused it");
        Err(Error::MalformedSdp(
            "the offer could not be processed".into(),
        ))
    })
}
