//! `[record]`: which streams are recorded, where, and how long files are kept.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[record]` of the edge's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Record every stream that goes live on this node.
    pub enabled: bool,
    /// Record these streams (by name) when they go live, whatever `enabled` says.
    pub streams: Vec<String>,
    /// Where recordings go: one folder per stream below it.
    pub directory: PathBuf,
    /// A recording is split into files of about this length, cut at the first keyframe past it.
    pub segment_secs: u64,
    /// Files kept per stream (oldest deleted first); 0: no limit.
    pub keep_files: usize,
    /// Files older than this are deleted (seconds since they were last written); 0: kept.
    pub max_age_secs: u64,
    /// Fragments (about one second each) waiting for the disk per recording; past it the
    /// newest are dropped and counted, and live viewers never wait.
    pub queue_fragments: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            streams: Vec::new(),
            directory: PathBuf::from("recordings"),
            segment_secs: 600,
            keep_files: 0,
            max_age_secs: 0,
            queue_fragments: 64,
        }
    }
}

impl RecordConfig {
    /// Whether `stream` is recorded from the moment it goes live.
    pub fn records(&self, stream: &str) -> bool {
        self.enabled || self.streams.iter().any(|s| s == stream)
    }

    /// The length of one file.
    pub fn segment(&self) -> Duration {
        Duration::from_secs(self.segment_secs.max(1))
    }

    /// Files older than this are deleted.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_secs > 0).then(|| Duration::from_secs(self.max_age_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_or_all() {
        let c: RecordConfig =
            toml::from_str("streams = [\"a\"]\ndirectory = \"/tmp/r\"\nsegment_secs = 5\n")
                .unwrap();
        assert!(c.records("a") && !c.records("b"));
        assert_eq!(c.segment(), Duration::from_secs(5));
        let c: RecordConfig = toml::from_str("enabled = true\n").unwrap();
        assert!(c.records("b"));
        assert!(toml::from_str::<RecordConfig>("enable = true\n").is_err());
    }
}
