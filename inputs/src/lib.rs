//! Ingest protocol adapters: each turns one protocol into a publisher session on the control.
//!
//! # Layout
//!
//! - [`whip`]: WebRTC-HTTP ingest (RFC 9725) — OBS 30+ and browsers.
//!
//! RTMP, FTL and the edge-to-edge relay join as sibling modules. An input never talks to
//! viewers and never knows who watches.

pub mod whip;
