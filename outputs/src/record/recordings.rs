//! The node's recordings: which streams are being recorded, starting and stopping them (REST,
//! gRPC, and at go-live for the streams `[record]` names), and their states.

use super::config::RecordConfig;
use super::files::{self, RecordingFile};
use super::recording::{Recording, container_for};
use super::status::{RecordingStatus, RecordingView};
use super::writer::{Destination, Writer};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;
use waveguide_control::Engine;
use waveguide_control::media::TrackKind;

/// Packets a recording's tap holds unread (a few seconds of a high-bitrate stream).
const TAP_CAPACITY: usize = 8192;
/// How often `waveguide_recordings_active` is refreshed when no stream changes.
const GAUGE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a recording cannot be started, stopped or listed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The stream is not live on this node.
    #[error("stream `{0}` is not live on this node")]
    NotLive(String),
    /// Not a stream name.
    #[error("`{0}` is not a stream name")]
    BadName(String),
    /// It is being recorded already.
    #[error("stream `{0}` is being recorded already")]
    AlreadyRecording(String),
    /// Nothing to stop.
    #[error("stream `{0}` is not being recorded")]
    NotRecording(String),
    /// Its video codec has no container here.
    #[error(
        "stream `{stream}` cannot be recorded: its video is {codec} (H.264 is recorded to MP4, VP8 to WebM)"
    )]
    Codec {
        /// The stream.
        stream: String,
        /// Its video codec (or `missing`).
        codec: String,
    },
    /// The writer thread could not start.
    #[error("recording could not start: {0}")]
    Start(String),
}

impl RecordError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RecordError::NotLive(_) | RecordError::NotRecording(_) => StatusCode::NOT_FOUND,
            RecordError::BadName(_) => StatusCode::BAD_REQUEST,
            RecordError::AlreadyRecording(_) => StatusCode::CONFLICT,
            RecordError::Codec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RecordError::Start(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RecordError {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// One stream's recording, running or ended.
#[derive(Debug)]
struct Entry {
    /// The stream id it records (a stream that ends and comes back gets a new one).
    stream: u64,
    status: Arc<RecordingStatus>,
    stop: watch::Sender<bool>,
}

/// Every recording of the node.
pub struct Recordings {
    engine: Arc<Engine>,
    config: RecordConfig,
    by_stream: Mutex<HashMap<String, Entry>>,
}

impl Recordings {
    /// Repairs what a crash left open in the directory, then watches streams going live to
    /// record those `config` names or the webhook asked for.
    pub fn start(engine: Arc<Engine>, config: RecordConfig) -> Arc<Self> {
        files::repair_all(&config.directory);
        let this = Arc::new(Self {
            engine,
            config,
            by_stream: Mutex::default(),
        });
        tokio::spawn(Arc::clone(&this).record_on_go_live());
        this
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.by_stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config in force.
    pub fn config(&self) -> &RecordConfig {
        &self.config
    }

    /// Starts recording `name` (`who`: `config`, `webhook`, `rest`, `grpc`).
    pub fn start_recording(&self, name: &str, who: &str) -> Result<RecordingView, RecordError> {
        if !waveguide_control::stream::is_valid_name(name) {
            return Err(RecordError::BadName(name.to_owned()));
        }
        let streams = self.engine.streams();
        let stream = streams
            .get(name)
            .ok_or_else(|| RecordError::NotLive(name.to_owned()))?;
        let codec = stream
            .tracks
            .iter()
            .find(|t| t.kind == TrackKind::Video)
            .map(|t| t.codec.codec);
        if codec.and_then(container_for).is_none() {
            return Err(RecordError::Codec {
                stream: name.to_owned(),
                codec: codec.map_or("missing", |c| c.name()).to_owned(),
            });
        }
        let mut by_stream = self.lock();
        if by_stream
            .get(name)
            .is_some_and(|e| e.status.is_running() && e.stream == stream.id)
        {
            return Err(RecordError::AlreadyRecording(name.to_owned()));
        }
        let status = Arc::new(RecordingStatus::new(who));
        let zero = Instant::now();
        let dest = Destination {
            dir: files::stream_dir(&self.config.directory, name),
            zero: SystemTime::now(),
            keep_files: self.config.keep_files,
            max_age: self.config.max_age(),
        };
        let writer = Writer::spawn(name, dest, self.config.queue_fragments, Arc::clone(&status))
            .map_err(|e| RecordError::Start(e.to_string()))?;
        let (stream, tap) = streams
            .tap(name, TAP_CAPACITY)
            .ok_or_else(|| RecordError::NotLive(name.to_owned()))?;
        let (stop, stopped) = watch::channel(false);
        let recording = Recording::new(
            Arc::clone(&self.engine),
            stream.clone(),
            self.config.segment(),
            zero,
            writer,
        );
        tokio::spawn(recording.run(tap, stopped));
        tracing::info!(stream = %name, by = who, "recording started");
        let view = status.view();
        by_stream.insert(
            name.to_owned(),
            Entry {
                stream: stream.id,
                status,
                stop,
            },
        );
        Ok(view)
    }

    /// Stops recording `name`; the open fragment is written and the file closed.
    pub fn stop_recording(&self, name: &str) -> Result<RecordingView, RecordError> {
        let by_stream = self.lock();
        let entry = by_stream
            .get(name)
            .filter(|e| e.status.is_running())
            .ok_or_else(|| RecordError::NotRecording(name.to_owned()))?;
        let _ = entry.stop.send(true);
        tracing::info!(stream = %name, "recording stop asked");
        Ok(entry.status.view())
    }

    /// The state of `name`'s latest recording on this node run.
    pub fn status(&self, name: &str) -> Option<RecordingView> {
        self.lock().get(name).map(|e| e.status.view())
    }

    /// `name`'s files in the recording directory.
    pub fn files(&self, name: &str) -> Result<Vec<RecordingFile>, RecordError> {
        if !waveguide_control::stream::is_valid_name(name) {
            return Err(RecordError::BadName(name.to_owned()));
        }
        Ok(files::list(&self.config.directory, name))
    }

    /// Streams recording now.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| e.status.is_running())
            .count()
    }

    /// Starts recording each stream `[record]` names, or whose publisher the webhook allowed
    /// with `"record": true`, when it goes live (and again when it comes back after ending).
    async fn record_on_go_live(self: Arc<Self>) {
        let mut changes = self.engine.streams().subscribe();
        loop {
            for status in self.engine.streams().statuses(Instant::now()) {
                let Some(stream) = self.engine.streams().get(&status.name) else {
                    continue;
                };
                let recorded = self
                    .lock()
                    .get(&status.name)
                    .is_some_and(|e| e.stream == stream.id);
                if recorded {
                    continue;
                }
                let who = if self.config.records(&status.name) {
                    "config"
                } else if self.engine.service().take_record_request(&status.name) {
                    "webhook"
                } else {
                    continue;
                };
                if let Err(e) = self.start_recording(&status.name, who) {
                    tracing::warn!(stream = %status.name, "not recorded: {e}");
                }
            }
            metrics::gauge!("waveguide_recordings_active").set(self.running() as f64);
            // Streams changing start recordings; the tick keeps the gauge current as
            // recordings end by themselves.
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(GAUGE_EVERY) => {}
            }
        }
    }
}
