//! FTL ingest (Glimesh/Mixer, ftl-sdk's `ftl_app`): a TCP control channel on port 8084 and
//! plain RTP over UDP, H.264 (PT 96) and Opus (PT 97) forwarded as they come.
//!
//! - [`control`]: the control channel's line protocol (sans-IO).
//! - [`media`]: per-stream datagram handling: forwarding, ping echo, NACKs (sans-IO).
//! - [`routes`]: which session a datagram belongs to: SSRC ownership, the publisher's source
//!   address (sans-IO).
//! - [`server`]: the sockets, the key check and the wiring to the control's `Ingest`.

pub mod control;
pub mod media;
pub mod routes;
mod server;

pub use server::{FtlConfig, serve};
