//! What the node sends on a Signal stream: message constructors, the one mapping of engine
//! errors to `ErrorResponse`, and the signaling metrics.

use tonic::Code;
use waveguide_control::Error;
use waveguide_proto::v1::signaling_response::Message;
use waveguide_proto::v1::{
    ErrorReason, ErrorResponse, IceServer, Notification, NotificationKind, SignalingResponse,
};

/// A failed request, as it goes on the stream.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: ErrorReason,
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn new(reason: ErrorReason, code: Code, message: impl Into<String>) -> Self {
        Self {
            reason,
            code,
            message: message.into(),
        }
    }

    /// The message is not valid here (the session, if any, goes on).
    pub fn protocol(code: Code, message: impl Into<String>) -> Self {
        Self::new(ErrorReason::ProtocolViolation, code, message)
    }

    /// The message names a session this Signal stream does not own.
    pub fn unknown_session(session: &str) -> Self {
        Self::new(
            ErrorReason::UnknownSession,
            Code::NotFound,
            format!("no session `{session}` on this Signal stream"),
        )
    }

    /// An engine error, mapped through its HTTP status so that gRPC and HTTP clients are told
    /// the same thing: 401 → UNAUTHENTICATED, 403 → UNAUTHENTICATED (PERMISSION_DENIED),
    /// 404 → STREAM_NOT_FOUND, 409 → STREAM_ALREADY_LIVE, 400/406/413 → INVALID_SDP,
    /// 429 → UNAVAILABLE (RESOURCE_EXHAUSTED), 503 → UNAVAILABLE, anything else INTERNAL.
    pub fn engine(e: &Error) -> Self {
        let (reason, code) = match e {
            Error::SessionNotFound => (ErrorReason::UnknownSession, Code::NotFound),
            Error::InvalidStreamName(_) => (ErrorReason::StreamNotFound, Code::InvalidArgument),
            _ => match e.http_status() {
                401 => (ErrorReason::Unauthenticated, Code::Unauthenticated),
                403 => (ErrorReason::Unauthenticated, Code::PermissionDenied),
                404 => (ErrorReason::StreamNotFound, Code::NotFound),
                409 => (ErrorReason::StreamAlreadyLive, Code::AlreadyExists),
                400 | 406 | 413 => (ErrorReason::InvalidSdp, Code::InvalidArgument),
                429 => (ErrorReason::Unavailable, Code::ResourceExhausted),
                503 => (ErrorReason::Unavailable, Code::Unavailable),
                _ => (ErrorReason::Internal, Code::Internal),
            },
        };
        Self::new(reason, code, e.to_string())
    }

    /// Whether the named session survives this failure (the contract: it ends unless the
    /// reason is UNKNOWN_SESSION or PROTOCOL_VIOLATION).
    pub fn keeps_session(&self) -> bool {
        matches!(
            self.reason,
            ErrorReason::UnknownSession | ErrorReason::ProtocolViolation
        )
    }

    pub fn into_response(self, request_id: String, session_id: String) -> SignalingResponse {
        SignalingResponse {
            request_id,
            message: Some(Message::Error(ErrorResponse {
                session_id,
                reason: self.reason as i32,
                code: self.code as i32,
                message: self.message,
            })),
        }
    }
}

/// A notification from the node.
pub fn notification(
    request_id: String,
    session_id: String,
    kind: NotificationKind,
    message: impl Into<String>,
) -> SignalingResponse {
    SignalingResponse {
        request_id,
        message: Some(Message::Notification(Notification {
            session_id,
            kind: kind as i32,
            message: message.into(),
        })),
    }
}

/// The configured STUN/TURN URLs, one `IceServer` each.
pub fn ice_servers(urls: &[String]) -> Vec<IceServer> {
    urls.iter()
        .map(|u| IceServer {
            urls: vec![u.clone()],
            ..Default::default()
        })
        .collect()
}

/// The metric label of a message the node sends.
pub fn sent_type(response: &SignalingResponse) -> &'static str {
    match &response.message {
        Some(Message::Announced(_)) => "announced",
        Some(Message::Offer(_)) => "offer",
        Some(Message::Answer(_)) => "answer",
        Some(Message::Candidate(_)) => "candidate",
        Some(Message::Notification(_)) => "notification",
        Some(Message::Error(_)) => "error",
        None => "empty",
    }
}

/// Counts one Signal message; `direction` is `in` (client → node) or `out`.
pub fn count(kind: &'static str, direction: &'static str) {
    metrics::counter!("waveguide_signaling_messages_total", "type" => kind, "direction" => direction)
        .increment(1);
}

/// Open Signal streams.
pub fn streams_gauge() -> metrics::Gauge {
    metrics::gauge!("waveguide_signaling_streams")
}

/// Announced sessions whose offer is not answered yet.
pub fn pending_gauge() -> metrics::Gauge {
    metrics::gauge!("waveguide_signaling_pending_offers")
}
