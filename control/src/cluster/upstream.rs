//! The hook through which a viewer's request for a stream this node does not have makes the
//! node pull it from another edge. The relay input implements it; the engine only calls it.

use crate::error::Result;
use std::future::Future;
use std::pin::Pin;

/// Something that can make a stream live on this node by pulling it from elsewhere.
pub trait Upstream: Send + Sync + 'static {
    /// Makes `stream` live locally, or says why it cannot be (`StreamNotFound` when no edge
    /// has it). Resolves once the stream is in the registry with its tracks; concurrent calls
    /// for the same stream share one pull.
    fn pull<'a>(&'a self, stream: &'a str)
    -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
}
