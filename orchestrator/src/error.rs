//! The orchestrator's error type, mapped once to an HTTP response (plain text) and once to a
//! gRPC [`tonic::Status`].

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream-key check refused the publisher (401 missing/invalid key, 403 refused,
    /// 503 Service down, 400 bad stream name), as `waveguide_control::Error::http_status` says.
    #[error("{0}")]
    Publish(#[from] waveguide_control::Error),
    /// No valid `Authorization: Bearer` for an admin endpoint, a relay request or a gRPC call.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("no node `{0}`")]
    NodeNotFound(String),
    #[error("stream `{0}` is not live on any node")]
    StreamNotFound(String),
    /// A non-`NodeUp` event from a node the orchestrator does not know.
    #[error("node `{0}` is not registered: send NodeUp first")]
    UnknownNode(String),
    /// Selection found no node for the work.
    #[error("no edge can take this {0} now")]
    NoEdge(&'static str),
    /// A call to a node's gRPC services failed.
    #[error("node `{node}` could not be reached: {detail}")]
    NodeUnreachable { node: String, detail: String },
    #[error("node registry unavailable: {0}")]
    Store(#[from] StoreError),
}

impl Error {
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Publish(err) => {
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Self::NodeNotFound(_) | Self::StreamNotFound(_) | Self::UnknownNode(_) => {
                StatusCode::NOT_FOUND
            }
            Self::NoEdge(_) | Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NodeUnreachable { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `outcome` label of `waveguide_orchestrator_decisions_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Publish(err) => match err.http_status() {
                401 => "unauthorized",
                403 => "forbidden",
                400 => "bad_request",
                503 => "service_unavailable",
                _ => "error",
            },
            Self::Unauthenticated => "unauthorized",
            Self::InvalidArgument(_) => "bad_request",
            Self::NodeNotFound(_) | Self::StreamNotFound(_) | Self::UnknownNode(_) => "not_found",
            Self::NoEdge(_) => "no_edge",
            Self::NodeUnreachable { .. } | Self::Store(_) => "error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status.is_server_error() {
            tracing::warn!(%status, "{self}");
        }
        let body = format!("{self}\n");
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Publish(ref publish) => match publish.http_status() {
                401 => Self::unauthenticated(message),
                403 => Self::permission_denied(message),
                400 => Self::invalid_argument(message),
                503 => Self::unavailable(message),
                _ => Self::internal(message),
            },
            Error::Unauthenticated => Self::unauthenticated(message),
            Error::InvalidArgument(_) => Self::invalid_argument(message),
            Error::NodeNotFound(_) | Error::StreamNotFound(_) => Self::not_found(message),
            Error::UnknownNode(_) => Self::failed_precondition(message),
            Error::NoEdge(_) | Error::NodeUnreachable { .. } | Error::Store(_) => {
                Self::unavailable(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_http_and_grpc() {
        let cases: Vec<(Error, u16, tonic::Code)> = vec![
            (
                Error::Publish(waveguide_control::Error::InvalidKey),
                401,
                tonic::Code::Unauthenticated,
            ),
            (
                Error::Publish(waveguide_control::Error::Refused("no".into())),
                403,
                tonic::Code::PermissionDenied,
            ),
            (Error::Unauthenticated, 401, tonic::Code::Unauthenticated),
            (
                Error::UnknownNode("a".into()),
                404,
                tonic::Code::FailedPrecondition,
            ),
            (Error::NoEdge("publisher"), 503, tonic::Code::Unavailable),
            (
                Error::NodeUnreachable {
                    node: "a".into(),
                    detail: "down".into(),
                },
                502,
                tonic::Code::Unavailable,
            ),
            (
                Error::InvalidArgument("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
        ];
        for (err, http, grpc) in cases {
            assert_eq!(err.http_status().as_u16(), http, "{err}");
            assert_eq!(tonic::Status::from(err).code(), grpc);
        }
    }
}
