//! A recording's state as REST shows it, shared by its muxing task and its writer thread, and
//! the recording metrics.

use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Where a recording is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Started; waiting for the stream's next keyframe.
    #[default]
    Waiting,
    /// Writing a file.
    Recording,
    /// Stopped (over REST or gRPC, or the stream ended).
    Stopped,
    /// Ended by an error (a full disk, a failing write); see `error`.
    Failed,
}

impl RecordingState {
    /// The name REST and gRPC use.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Waiting => "waiting",
            RecordingState::Recording => "recording",
            RecordingState::Stopped => "stopped",
            RecordingState::Failed => "failed",
        }
    }
}

/// What REST shows of a stream's recording.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RecordingView {
    /// Where it is.
    pub state: RecordingState,
    /// Why it failed.
    pub error: Option<String>,
    /// Who started it: `config`, `webhook`, `rest` or `grpc`.
    pub started_by: String,
    /// When it was started (Unix milliseconds).
    pub started_unix_ms: u64,
    /// The file being written (its name in the stream's folder).
    pub file: Option<String>,
    /// Seconds of media in that file so far.
    pub file_duration_secs: f64,
    /// Bytes written, all files.
    pub bytes: u64,
    /// Files started.
    pub files: u64,
    /// Fragments dropped because the disk did not keep up.
    pub fragments_dropped: u64,
}

/// The shared state.
#[derive(Debug, Default)]
pub struct RecordingStatus {
    inner: Mutex<RecordingView>,
}

impl RecordingStatus {
    /// A recording started by `who`.
    pub fn new(who: &str) -> Self {
        let view = RecordingView {
            started_by: who.to_owned(),
            started_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ..RecordingView::default()
        };
        Self {
            inner: Mutex::new(view),
        }
    }

    fn with(&self, f: impl FnOnce(&mut RecordingView)) {
        // Every update is a few assignments; a poisoned lock still holds a usable view.
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A copy for REST.
    pub fn view(&self) -> RecordingView {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether it still runs (waiting or recording).
    pub fn is_running(&self) -> bool {
        matches!(
            self.view().state,
            RecordingState::Waiting | RecordingState::Recording
        )
    }

    pub(super) fn file_started(&self, path: &Path, header: u64) {
        metrics::counter!("waveguide_recording_files_total").increment(1);
        metrics::counter!("waveguide_recording_bytes_total").increment(header);
        self.with(|v| {
            v.state = RecordingState::Recording;
            v.file = path.file_name().map(|n| n.to_string_lossy().into_owned());
            v.file_duration_secs = 0.0;
            v.files += 1;
            v.bytes += header;
        });
    }

    pub(super) fn wrote(&self, bytes: u64, file_duration: Duration) {
        metrics::counter!("waveguide_recording_bytes_total").increment(bytes);
        self.with(|v| {
            v.bytes += bytes;
            v.file_duration_secs = (file_duration.as_secs_f64() * 1000.0).round() / 1000.0;
        });
    }

    pub(super) fn fragment_dropped(&self) {
        metrics::counter!("waveguide_recording_fragments_dropped_total").increment(1);
        self.with(|v| v.fragments_dropped += 1);
    }

    pub(super) fn file_closed(&self) {
        self.with(|v| v.file = None);
    }

    pub(super) fn failed(&self, error: String) {
        metrics::counter!("waveguide_recording_errors_total").increment(1);
        self.with(|v| {
            v.state = RecordingState::Failed;
            v.error = Some(error);
            v.file = None;
        });
    }

    /// The writer wrote and closed everything: the recording is stopped (unless it failed).
    pub(super) fn writer_done(&self) {
        self.with(|v| {
            if v.state != RecordingState::Failed {
                v.state = RecordingState::Stopped;
            }
        });
    }
}
