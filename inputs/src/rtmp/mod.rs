//! RTMP ingest: what OBS and ffmpeg send to `rtmp://HOST:1935/live/<stream key>`.
//!
//! H.264 is re-framed to RTP without touching the picture; AAC is decoded and re-encoded to
//! Opus in process, because browsers do not play AAC over WebRTC. The stream key goes through
//! the control's Service like every other input; a bad key gets `NetStream.Publish.BadName`.
//!
//! # Layout
//!
//! The protocol is a sans-IO state machine (bytes in, bytes and events out) so it can be tested
//! and fuzzed without a network; only [`server`] owns sockets and clocks.
//!
//! - [`handshake`]: C0/C1/C2 ↔ S0/S1/S2 (the simple handshake).
//! - [`chunk_read`], [`chunk_write`]: the chunk stream, with its size and buffer bounds.
//! - [`message`]: message types and protocol/user control messages.
//! - [`amf0`]: the value encoding of commands and metadata.
//! - [`commands`]: `connect` … `publish` … `deleteStream` and their replies.
//! - [`session`]: one connection's state machine, tying the above together.
//! - [`flv`]: audio and video tag headers inside media messages.
//! - [`h264`], [`packetizer`], [`video`]: AVC configuration, NAL units, RTP packets.
//! - [`audio`]: AAC-LC → 48 kHz stereo → Opus.
//! - [`publisher`]: from an accepted publish to tracks and RTP packets.
//! - [`server`]: the TCP listener and the per-connection task.
//! - [`config`]: `[rtmp]` in the config file.

pub mod amf0;
pub mod audio;
pub mod chunk_read;
pub mod chunk_write;
pub mod commands;
mod config;
pub mod error;
pub mod flv;
pub mod h264;
pub mod handshake;
pub mod message;
pub mod packetizer;
pub mod publisher;
mod server;
pub mod session;
pub mod video;

#[cfg(test)]
mod fixtures;

pub use config::RtmpConfig;
pub use error::{MediaError, RtmpError};
pub use server::serve;
pub use session::{Event, Session, SessionConfig};
