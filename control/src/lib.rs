//! The control: every live stream on the node and the WebRTC engine that moves its media.
//!
//! # Layout
//!
//! - [`engine`]: the WebRTC engine — shards that own UDP sockets and `rtc` peer connections,
//!   publisher and viewer sessions, fan-out, keyframe replay, PLI and NACK handling.
//! - [`stream`]: the registry of streams (tracks, publisher, viewers, counters) the signaling
//!   side and the REST API read.
//! - [`media`]: the shared packet type, codecs, keyframe detection and the keyframe cache.
//! - [`rate`]: per-IP token buckets for POSTs and signaling streams.
//! - [`serve`]: serving an HTTP app over HTTP or HTTPS (rustls), for both binaries.
//! - [`service`]: stream authentication (open, static keys).
//! - [`http`]: the HTTP face shared by WHIP and WHEP (SDP bodies, session resources, errors).
//! - [`cluster`]: redirect tickets and the hook that pulls a missing stream from another edge.
//! - [`config`]: typed configuration of the above; [`config_file`]: the TOML file + environment
//!   overrides every binary reads.
//!
//! Inputs (`waveguide-inputs`) and outputs (`waveguide-outputs`) build on this crate; it
//! depends on neither.

pub mod cluster;
pub mod config;
pub mod config_file;
pub mod engine;
pub mod error;
pub mod http;
pub mod media;
pub mod rate;
pub mod serve;
pub mod service;
pub mod stream;

pub use engine::{
    Delivery, Engine, PatchOutcome, SessionAnswer, SessionInfo, SessionKind, SessionState,
    SessionStats, WatchCredentials,
};
pub use error::{Error, Result};
