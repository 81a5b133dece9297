//! The load tool behind `waveguide-load`: one synthetic WHIP publisher and N WHEP viewers,
//! each a real `rtc` peer connection, against any WHIP/WHEP server on loopback.
//!
//! # What it measures
//!
//! Per viewer: join time (POST sent → first complete H.264 keyframe received), loss
//! (sequence gaps per track), and per-packet delay (publisher send → viewer receive; the
//! publisher logs each payload's send time, see [`sendlog`]). Per run: the viewers' received
//! bitrate, the server's CPU and memory (`--server-pid`), and the tool's own CPU, so a run can
//! tell whether the tool or the server was the limit. Loss and delay are reported over the
//! whole run and over a steady window that opens one second after the last viewer started.
//!
//! # Layout
//!
//! - [`config`]: [`LoadConfig`], its bounds, and the loopback-only check.
//! - [`run`](run()): the run itself; [`report`]: the [`Report`] it returns.
//! - [`publisher`], [`viewer`]: the two kinds of peer; [`peer`]: what they share (an `rtc`
//!   connection with its socket); [`signal`]: WHIP/WHEP HTTP.
//! - [`bench`]: `waveguide-load bench` — starts the edge itself ([`server`]) pinned to one
//!   core, ramps viewers in steps, then measures [`limit`] (bare SRTP + send on that core).
//! - [`churn`]: `waveguide-load churn` — join/leave cycles, the server's RSS and fds before
//!   and after.
//! - [`clip`], [`annexb`]: the H.264 clip (made by ffmpeg, cached under `target/`) and its
//!   packetization; [`schedule`]: the ramp and the media clock.
//! - Pure state machines with their tests: [`receive`] (loss, keyframe completeness),
//!   [`stats`] (percentiles), [`sendlog`], [`procstat`] (`/proc` parsing).
//!
//! # What it does not do
//!
//! No NACK, PLI or congestion control from the viewers (loss stays visible as gaps); no
//! decoding (the payloads are checked for structure, not pictures); no targets off loopback.

pub mod annexb;
pub mod bench;
pub mod churn;
pub mod clip;
pub mod config;
pub mod error;
pub mod limit;
pub mod peer;
pub mod procstat;
pub mod publisher;
pub mod receive;
pub mod report;
mod run;
pub mod schedule;
pub mod sendlog;
pub mod server;
pub mod signal;
pub mod stats;
pub mod viewer;

pub use config::{LoadConfig, SrtpChoice, VideoSpec, parse_duration};
pub use error::LoadError;
pub use report::Report;
pub use run::run;
