//! The control's error type and its one mapping to HTTP status codes.

use std::fmt;

/// Everything that can go wrong while starting, answering or ending a session. `Clone`, so one
/// outcome shared by several waiters (a relay pull) reaches each of them whole.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credentials where the Service needs them.
    #[error("missing stream key (send `Authorization: Bearer <key>`)")]
    MissingKey,
    /// The key is not valid for this stream.
    #[error("invalid stream key")]
    InvalidKey,
    /// The stream service refused this publisher (webhook `allow: false`).
    #[error("refused: {0}")]
    Refused(String),
    /// The stream service could not be asked (down, slow, garbage); nothing is published.
    #[error("{0}; try again later")]
    ServiceFailed(&'static str),
    /// The offer is not an SDP we can read.
    #[error("malformed SDP offer: {0}")]
    MalformedSdp(String),
    /// The offer names no codec this node (or this stream) can use.
    #[error("no common codec: {0}")]
    NoCommonCodec(CodecList),
    /// A publisher is already live on the stream.
    #[error("stream `{0}` already has a live publisher")]
    StreamBusy(String),
    /// Nobody publishes this stream here.
    #[error("stream `{0}` is not live on this node")]
    StreamNotFound(String),
    /// The session resource does not exist (ended, or never did).
    #[error("no such session")]
    SessionNotFound,
    /// `If-Match` named another version of the session.
    #[error("session has changed (ETag mismatch)")]
    PreconditionFailed,
    /// A trickle or restart fragment we cannot read.
    #[error("malformed SDP fragment: {0}")]
    MalformedFragment(String),
    /// A trickle fragment larger than the engine reads.
    #[error("SDP fragment larger than {0} bytes")]
    FragmentTooLarge(usize),
    /// A trickle PATCH would give the session more remote candidates than it may hold.
    #[error("a session takes at most {0} remote ICE candidates (until an ICE restart)")]
    TooManyCandidates(usize),
    /// The client is past a limit on how fast or how many (trickle PATCHes, viewer sessions
    /// still connecting); the text says which and when to try again.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The stream name is not usable in URLs.
    #[error("invalid stream name `{0}` (letters, digits, '-', '_', '.', at most 128)")]
    InvalidStreamName(String),
    /// The node is not accepting new sessions.
    #[error("node is at capacity or draining")]
    Unavailable,
    /// The node is draining: it takes no new sessions (ask the orchestrator for another).
    #[error("this node is draining and takes no new sessions; try another node")]
    Draining,
    /// A configured session ceiling is reached.
    #[error("this node is full ({0} reached); try another node")]
    AtCapacity(String),
    /// A redirect ticket that does not grant this request.
    #[error("redirect ticket refused: {0}")]
    Ticket(#[from] crate::cluster::TicketError),
    /// The WebRTC engine refused the session; a bug or an exotic offer.
    #[error("WebRTC engine: {0}")]
    Engine(String),
}

/// Codec names listed in an error, so a client learns what it should have offered.
#[derive(Debug, Clone, Default)]
pub struct CodecList(pub Vec<String>);

impl fmt::Display for CodecList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "this stream carries {}", self.0.join(", "))
    }
}

impl Error {
    /// The HTTP status for this error; the only place that decides it.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::MissingKey | Error::InvalidKey | Error::Ticket(_) => 401,
            Error::Refused(_) => 403,
            Error::ServiceFailed(_) => 503,
            Error::MalformedSdp(_)
            | Error::MalformedFragment(_)
            | Error::InvalidStreamName(_)
            | Error::TooManyCandidates(_) => 400,
            Error::FragmentTooLarge(_) => 413,
            Error::TooManyRequests(_) => 429,
            Error::NoCommonCodec(_) => 406,
            Error::StreamBusy(_) => 409,
            Error::StreamNotFound(_) | Error::SessionNotFound => 404,
            Error::PreconditionFailed => 412,
            Error::Unavailable | Error::Draining | Error::AtCapacity(_) => 503,
            Error::Engine(_) => 500,
        }
    }
}

/// Result with the control's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
