//! The recording directory: `<directory>/<stream>/<start>.mp4|.webm`, where `<start>` is the
//! UTC wall-clock time of the file's first picture (`20261205T053012.345Z`). Owns naming,
//! listing, retention and the start-up repair of files a crash left open.

use super::layout::{self, Layout};
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One file of a stream's recordings, as REST lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordingFile {
    /// The file's name in the stream's folder.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// When its first picture was received (RFC 3339, UTC).
    pub start_time: String,
    /// The same, in Unix milliseconds.
    pub start_unix_ms: u64,
    /// Seconds of media.
    pub duration_secs: f64,
}

const EXTENSIONS: [&str; 2] = ["mp4", "webm"];

/// `(year, month, day, hour, minute, second, millisecond)` of a Unix time, UTC.
fn civil(unix_ms: u64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = (unix_ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        (unix_ms % 1000) as u32,
    )
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-12-05T05:30:12.345Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(unix_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// The file name for a recording starting at `start`.
pub fn file_name(start: SystemTime, extension: &str) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(unix_ms(start));
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{ms:03}Z.{extension}")
}

/// The Unix milliseconds a file name says its recording started at.
fn parse_name(name: &str) -> Option<u64> {
    let (stem, ext) = name.rsplit_once('.')?;
    if !EXTENSIONS.contains(&ext) {
        return None;
    }
    let b = stem.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stem.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s, ms) = (num(9..11)?, num(11..13)?, num(13..15)?, num(16..19)?);
    // Days from civil (the inverse of `civil`).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// The folder of `stream`'s recordings.
pub fn stream_dir(root: &Path, stream: &str) -> PathBuf {
    root.join(stream)
}

/// `stream`'s recording files, oldest first (names sort by time).
fn names(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let start = parse_name(&name)?;
            Some((name, start))
        })
        .collect();
    out.sort();
    out
}

fn layout_of(path: &Path) -> io::Result<Layout> {
    let mut file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "webm") {
        layout::webm(&mut file)
    } else {
        layout::mp4(&mut file)
    }
}

/// `stream`'s recordings, oldest first.
pub fn list(root: &Path, stream: &str) -> Vec<RecordingFile> {
    let dir = stream_dir(root, stream);
    names(&dir)
        .into_iter()
        .filter_map(|(name, start)| {
            let layout = layout_of(&dir.join(&name)).ok()?;
            Some(RecordingFile {
                size: layout.len,
                start_time: rfc3339(start),
                start_unix_ms: start,
                duration_secs: (layout.duration * 1000.0).round() / 1000.0,
                name,
            })
        })
        .collect()
}

/// Deletes `stream`'s oldest files past `keep` (0: no limit) and those last written more than
/// `max_age` ago, never `current`; returns how many went.
pub fn apply_retention(
    dir: &Path,
    keep: usize,
    max_age: Option<Duration>,
    current: Option<&Path>,
) -> usize {
    let files = names(dir);
    let mut removed = 0;
    let excess = if keep > 0 {
        files.len().saturating_sub(keep)
    } else {
        0
    };
    for (i, (name, _)) in files.iter().enumerate() {
        let path = dir.join(name);
        if current.is_some_and(|c| c == path) {
            continue;
        }
        let too_old = max_age.is_some_and(|max| {
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > max)
        });
        if (i < excess || too_old) && fs::remove_file(&path).is_ok() {
            tracing::info!(file = %path.display(), "recording removed by retention");
            removed += 1;
        }
    }
    removed
}

/// What start-up did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// It ends at a fragment boundary.
    Whole,
    /// Cut back from `from` to `to` bytes (a fragment was being written).
    Truncated {
        /// The length found.
        from: u64,
        /// The end of the last complete fragment.
        to: u64,
    },
    /// Not even its header was complete: removed.
    Removed,
}

/// Makes `path` end at its last complete fragment.
pub fn repair(path: &Path) -> io::Result<Repair> {
    let layout = layout_of(path)?;
    if layout.whole == 0 {
        fs::remove_file(path)?;
        return Ok(Repair::Removed);
    }
    if layout.whole == layout.len {
        return Ok(Repair::Whole);
    }
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(layout.whole)?;
    file.sync_all()?;
    Ok(Repair::Truncated {
        from: layout.len,
        to: layout.whole,
    })
}

/// Repairs every recording below `root` (at start-up, before anything records); logs each
/// file it changed.
pub fn repair_all(root: &Path) {
    let Ok(streams) = fs::read_dir(root) else {
        return;
    };
    for dir in streams.filter_map(|e| e.ok()).map(|e| e.path()) {
        if !dir.is_dir() {
            continue;
        }
        for (name, _) in names(&dir) {
            let path = dir.join(name);
            match repair(&path) {
                Ok(Repair::Whole) => {}
                Ok(Repair::Truncated { from, to }) => tracing::warn!(
                    file = %path.display(), from, to,
                    "recording left open by a crash: truncated to its last complete fragment"
                ),
                Ok(Repair::Removed) => tracing::warn!(
                    file = %path.display(),
                    "recording left open by a crash had no complete header: removed"
                ),
                Err(e) => tracing::warn!(file = %path.display(), "recording not checked: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_448_612_345);
        let name = file_name(t, "mp4");
        assert_eq!(name, "20261205T053012.345Z.mp4");
        assert_eq!(parse_name(&name), Some(1_796_448_612_345));
        assert_eq!(rfc3339(1_796_448_612_345), "2026-12-05T05:30:12.345Z");
        assert_eq!(
            parse_name("20240229T000000.000Z.webm"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("20240229T000000.000Z.mkv"), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_the_open_file() {
        let dir = std::env::temp_dir().join(format!("wg-retention-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let names = [
            "20261205T050000.000Z.mp4",
            "20261205T051000.000Z.mp4",
            "20261205T052000.000Z.webm",
            "20261205T053000.000Z.mp4",
        ];
        for n in names {
            fs::write(dir.join(n), b"x").unwrap();
        }
        fs::write(dir.join("other.txt"), b"x").unwrap();
        let current = dir.join(names[0]);
        assert_eq!(apply_retention(&dir, 2, None, Some(&current)), 1);
        let left: Vec<String> = super::names(&dir).into_iter().map(|n| n.0).collect();
        assert_eq!(left, [names[0], names[2], names[3]]);
        assert!(dir.join("other.txt").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
