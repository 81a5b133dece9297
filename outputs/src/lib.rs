//! Egress: how a stream reaches its consumers.
//!
//! # Layout
//!
//! - [`whep`]: WebRTC-HTTP egress — browsers and relaying edges.
//! - [`hls`]: LL-HLS (CMAF parts and segments) muxed from a stream's packets while played.
//! - [`player`]: the built-in pages (`/`, `/watch/{stream}`, `/publish`).
//! - [`record`]: recording streams to fragmented MP4 (H.264) or WebM (VP8) files.

pub mod hls;
pub mod player;
pub mod record;
pub mod whep;
