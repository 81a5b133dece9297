//! LL-HLS: `GET /hls/{stream}/index.m3u8` and the rendition's playlist, init segment, parts
//! and segments, muxed from the stream's packets while someone plays it.
//!
//! # Layout
//!
//! - [`fmp4`]: CMAF boxes (init segment, `moof` + `mdat` fragments), written by hand.
//! - [`h264`]: H.264 RTP payloads to MP4 samples; the SPS's picture size.
//! - [`segmenter`]: the sans-IO LL-HLS state machine (parts, segments, the media playlist).
//! - [`rendition`]: one stream's muxing task, fed by a registry tap.
//! - `http`: the routes, blocking playlist reloads, cache and CORS headers.
//!
//! # URLs
//!
//! `/hls/{stream}/index.m3u8` (multivariant playlist) names the rendition
//! `/hls/{stream}/{rendition}/media.m3u8`, whose objects are `init.mp4`, `seg{msn}.m4s` and
//! `part{msn}.{part}.m4s` beside it. `{rendition}` changes whenever muxing restarts, so every
//! object URL is immutable and a CDN may cache it for as long as it likes.
//!
//! Muxing for a stream starts with its first HLS request and stops after
//! [`rendition::IDLE_AFTER`] without one, or when the stream ends. A stream this node does not
//! hold is `404`; one whose video is not H.264 (VP8), or that has no video, is `409` with the
//! reason, which its REST status names too ([`annotate`]).

pub mod fmp4;
pub mod h264;
mod http;
pub mod rendition;
pub mod segmenter;

pub use http::router;
pub use rendition::annotate;
