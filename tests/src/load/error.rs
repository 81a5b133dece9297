//! [`LoadError`]: why a load run could not start or a peer could not be set up. Problems of
//! single viewers during a run are not errors of the run: they are counted in the report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "{0} is not a loopback target; the load tool only talks to 127.0.0.0/8, ::1 or localhost"
    )]
    NotLoopback(String),
    #[error(
        "cannot run ffmpeg to make the test clip ({0}); install ffmpeg or pass --clip FILE.h264"
    )]
    FfmpegMissing(std::io::Error),
    #[error("ffmpeg failed to make {path}: {stderr}")]
    FfmpegFailed { path: PathBuf, stderr: String },
    #[error("{path}: {why}")]
    BadClip { path: PathBuf, why: &'static str },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("webrtc: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    #[error("publisher: {0}")]
    Publisher(&'static str),
    #[error("edge: {0}")]
    Edge(String),
    #[error("system call: {0}")]
    Sys(#[from] nix::errno::Errno),
}
