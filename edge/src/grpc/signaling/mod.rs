//! `WebRtcSignaling` on the edge: WebRTC publish and watch negotiated over a gRPC stream
//! instead of WHIP/WHEP, for clients that are not browsers.
//!
//! A session opened over `Signal` is an ordinary engine session (same Service auth, same
//! engine, same REST and metrics as WHIP/WHEP); this service only carries its offer, answer,
//! candidates and end over the stream. Each Signal stream is one task ([`session`]) that owns
//! its sessions; the only state shared between streams is the [`PeerBook`] (which engine
//! sessions were negotiated here, and their peer names), read by `GetPeers`.
//!
//! Session ids: `Announced` answers at once with an id of this Signal stream's own (random,
//! like the engine's). When the offer is answered the id is bound to the engine's session id;
//! every message on the stream keeps naming the Signal id. `GetPeers`, the REST API and the
//! entity API show the engine's id (the one a kick or a WHIP/WHEP DELETE understands) with
//! the peer name of the Announce.

mod reply;
mod session;

use super::NodeState;
use crate::cluster::node::timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use waveguide_control::stream::IngestProtocol;
use waveguide_control::{SessionKind, SessionState};
use waveguide_proto::v1::web_rtc_signaling_server::WebRtcSignaling;
use waveguide_proto::v1::{
    GetPeersRequest, GetPeersResponse, HealthCheckRequest, HealthCheckResponse, Peer,
    PeerConnectionState, PeerRole, Protocol, SignalingRequest, SignalingResponse,
};

/// Messages the node may have queued for one Signal stream before its task waits for the
/// client to read.
const OUTBOUND_QUEUE: usize = 64;

/// What the service remembers of a session negotiated over `Signal`.
#[derive(Debug, Clone)]
struct PeerMeta {
    peer_name: String,
}

/// The engine sessions negotiated over `Signal` (by engine session id), shared by every
/// Signal task and `GetPeers`. Touched when a session is answered or ends, never per packet.
#[derive(Debug, Default)]
pub(super) struct PeerBook(Mutex<HashMap<String, PeerMeta>>);

impl PeerBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PeerMeta>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, session: &str, peer_name: &str) {
        self.lock().insert(
            session.to_owned(),
            PeerMeta {
                peer_name: peer_name.to_owned(),
            },
        );
    }

    fn remove(&self, session: &str) {
        self.lock().remove(session);
    }
}

/// The service.
pub struct Signaling {
    state: NodeState,
    book: Arc<PeerBook>,
}

impl Signaling {
    pub(in crate::grpc) fn new(state: NodeState) -> Self {
        Self {
            state,
            book: Arc::default(),
        }
    }
}

fn role_of(kind: SessionKind) -> PeerRole {
    match kind {
        SessionKind::Publisher => PeerRole::Publisher,
        SessionKind::Viewer => PeerRole::Viewer,
    }
}

fn protocol_of(p: IngestProtocol) -> Protocol {
    match p {
        IngestProtocol::Whip => Protocol::Whip,
        IngestProtocol::Rtmp => Protocol::Rtmp,
        IngestProtocol::Ftl => Protocol::Ftl,
        IngestProtocol::Relay => Protocol::Relay,
        IngestProtocol::Signaling => Protocol::GrpcSignaling,
    }
}

#[tonic::async_trait]
impl WebRtcSignaling for Signaling {
    type SignalStream = ReceiverStream<Result<SignalingResponse, Status>>;

    async fn signal(
        &self,
        request: Request<Streaming<SignalingRequest>>,
    ) -> Result<Response<Self::SignalStream>, Status> {
        let remote_addr = request.remote_addr();
        if let (Some(limit), Some(addr)) = (&self.state.signal_limit, remote_addr)
            && let Err(wait) = limit.check(addr.ip(), Instant::now())
        {
            return Err(Status::resource_exhausted(format!(
                "too many Signal streams from {}; retry in {} s",
                addr.ip(),
                wait.as_secs().max(1)
            )));
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (task, events) = session::SignalTask::new(
            Arc::clone(&self.state.engine),
            Arc::clone(&self.book),
            remote_addr,
            tx,
        );
        tokio::spawn(task.run(events, inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_peers(
        &self,
        request: Request<GetPeersRequest>,
    ) -> Result<Response<GetPeersResponse>, Status> {
        let r = request.into_inner();
        let want_role = PeerRole::try_from(r.role).unwrap_or(PeerRole::Unspecified);
        let engine = &self.state.engine;
        let now = Instant::now();
        let wall = SystemTime::now();
        let sessions = engine.sessions();
        let book = self.book.lock().clone();
        let peers = sessions
            .into_iter()
            .filter(|s| r.stream.is_empty() || s.stream == r.stream)
            .filter(|s| want_role == PeerRole::Unspecified || role_of(s.kind) == want_role)
            .map(|s| {
                let meta = book.get(&s.session);
                let protocol = match (meta, s.kind) {
                    (Some(_), _) => Protocol::GrpcSignaling,
                    // Relay pulls from other edges are WHEP viewers to this node.
                    (None, SessionKind::Viewer) => Protocol::Whep,
                    (None, SessionKind::Publisher) => engine
                        .streams()
                        .status(&s.stream, now)
                        .map_or(Protocol::Whip, |st| protocol_of(st.protocol)),
                };
                let state = match s.state {
                    SessionState::Connecting => PeerConnectionState::Connecting,
                    SessionState::Connected => PeerConnectionState::Connected,
                };
                Peer {
                    role: role_of(s.kind) as i32,
                    stream: s.stream,
                    protocol: protocol as i32,
                    state: state as i32,
                    peer_name: meta.map(|m| m.peer_name.clone()).unwrap_or_default(),
                    // The engine does not record when ICE completed; the answer time it does
                    // record is the closest, and only meaningful once connected.
                    connected_at: (s.state == SessionState::Connected)
                        .then(|| wall.checked_sub(s.age).map(timestamp))
                        .flatten(),
                    session_id: s.session,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(GetPeersResponse { peers }))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(crate::grpc::health(&self.state)))
    }
}
