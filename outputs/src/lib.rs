//! Egress: how a stream reaches its consumers.
//!
//! # Layout
//!
//! - [`whep`]: WebRTC-HTTP egress — browsers and relaying edges.
//! - [`player`]: the built-in pages (`/`, `/watch/{stream}`, `/publish`).
//!
//! HLS and recording join as sibling modules.

pub mod player;
pub mod whep;
