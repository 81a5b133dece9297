//! Recording: a stream's media to files on disk while it is live, without re-encoding.
//!
//! H.264 (+ Opus) goes to fragmented MP4, VP8 (+ Opus) to WebM. A recording is split into
//! files of about `[record] segment_secs`, each starting at a keyframe, kept per
//! `keep_files` / `max_age_secs`, one folder per stream (see [`files`]).
//!
//! # Crash safety
//!
//! A file is written as its header (MP4 init segment, or Matroska header and tracks), then
//! fragments of about a second (`moof` + `mdat`, or one Cluster of unknown size), each in one
//! `write` call: a crash loses at most the fragment being written, never the file. At start-up
//! every recording is cut back to its last complete fragment ([`files::repair_all`]).
//!
//! # Off the media path
//!
//! The fan-out hands packets to a recording through a tap (a bounded channel; full drops).
//! The muxing task does no I/O: it queues pieces to the recording's writer thread (bounded;
//! full drops the fragment, counted). A full disk or failing write ends that recording with
//! its error in the log, REST and `waveguide_recording_errors_total`; viewers never notice.
//!
//! # Layout
//!
//! - [`config`]: the `[record]` section.
//! - [`recordings`]: the node's recordings; start, stop, state, record at go-live.
//! - [`recording`]: one stream's muxing task (tap → frames → muxer → writer queue).
//! - [`vp8`] (here) and `hls::h264`: RTP to frames; [`timeline`]: RTP time to file time.
//! - [`fragmenter`]: where fragments and files are cut; [`mp4`] and [`webm`]: the containers.
//! - [`piece`]: what muxers hand the writer; [`writer`]: the disk thread.
//! - [`files`]: naming, listing, retention, start-up repair; [`layout`]: reading files back.
//! - [`status`]: a recording's state and the metrics.

pub mod config;
pub mod files;
pub mod fragmenter;
pub mod layout;
pub mod mp4;
pub mod piece;
pub mod recording;
pub mod recordings;
pub mod status;
pub mod timeline;
pub mod vp8;
pub mod webm;
pub mod writer;

pub use config::RecordConfig;
pub use files::RecordingFile;
pub use recordings::{RecordError, Recordings};
pub use status::{RecordingState, RecordingView};
