//! Ingest protocol adapters: each turns one protocol into a publisher session on the control.
//!
//! # Layout
//!
//! - [`whip`]: WebRTC-HTTP ingest (RFC 9725) — OBS 30+ and browsers.
//! - [`ftl`]: FTL (ftl-sdk's `ftl_app`): TCP control channel plus RTP over UDP.
//! - [`rtmp`]: RTMP (OBS, ffmpeg): H.264 re-framed to RTP, AAC transcoded to Opus.
//! - [`admission`]: connection caps (in total and per client address) for the TCP ingest
//!   listeners, checked before a client has proven anything.
//! - [`relay`]: edge-to-edge relay: pulls a stream this node lacks over WHEP from the edge
//!   the orchestrator points to.
//!
//! RTMP, FTL and the edge-to-edge relay join as sibling modules. An input never talks to
//! viewers and never knows who watches.

pub mod admission;
pub mod ftl;
pub mod relay;
pub mod rtmp;
pub mod whip;
