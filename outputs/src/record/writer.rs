//! The disk side of one recording: a thread of its own that takes [`Piece`]s from a bounded
//! queue and writes them, so a slow or full disk never reaches the media path. The muxing task
//! only ever `try_send`s; a full queue drops the fragment (counted).
//!
//! Each fragment goes to the file in one `write` call. A failing write (a full disk, an I/O
//! error) cuts the file back to its last complete fragment, records the error, and ends the
//! recording; the file stays playable.

use super::files;
use super::piece::Piece;
use super::status::RecordingStatus;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

/// Where and how one recording writes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The stream's folder.
    pub dir: PathBuf,
    /// Wall-clock time of the recording's zero (file names are their start on it).
    pub zero: SystemTime,
    /// Files kept (0: no limit).
    pub keep_files: usize,
    /// Older files are deleted.
    pub max_age: Option<Duration>,
}

/// The queue into a recording's writer thread.
#[derive(Debug)]
pub struct Writer {
    tx: SyncSender<Piece>,
    /// A file start the full queue refused: sent before any later fragment.
    pending_start: Option<Piece>,
    status: Arc<RecordingStatus>,
}

/// Why the writer takes nothing more.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Its thread ended (after a write error).
    Gone,
}

impl Writer {
    /// Starts the thread for `stream`, with room for `queue` pieces.
    pub fn spawn(
        stream: &str,
        dest: Destination,
        queue: usize,
        status: Arc<RecordingStatus>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel(queue.max(2));
        let thread_status = Arc::clone(&status);
        std::thread::Builder::new()
            .name(format!(
                "wg-record-{}",
                stream.chars().take(5).collect::<String>()
            ))
            .spawn(move || write_loop(&rx, &dest, &thread_status))?;
        Ok(Writer {
            tx,
            pending_start: None,
            status,
        })
    }

    /// Queues `piece`; a fragment the queue has no room for is dropped and counted.
    pub fn send(&mut self, piece: Piece) -> Result<(), Closed> {
        if let Some(start) = self.pending_start.take() {
            match self.tx.try_send(start) {
                Ok(()) => {}
                Err(TrySendError::Full(start)) => {
                    self.pending_start = Some(start);
                    if matches!(piece, Piece::Start { .. }) {
                        // A newer file start replaces the one still waiting.
                        self.pending_start = Some(piece);
                    } else {
                        self.status.fragment_dropped();
                    }
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(Closed::Gone),
            }
        }
        match self.tx.try_send(piece) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(piece @ Piece::Start { .. })) => {
                self.pending_start = Some(piece);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.status.fragment_dropped();
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(Closed::Gone),
        }
    }
}

/// The open file.
struct Open {
    file: File,
    path: PathBuf,
    /// Bytes of it that are whole (header and complete fragments).
    written: u64,
    start: Duration,
}

fn write_loop(rx: &Receiver<Piece>, dest: &Destination, status: &RecordingStatus) {
    let mut open: Option<Open> = None;
    while let Ok(piece) = rx.recv() {
        let result = match piece {
            Piece::Start {
                header,
                extension,
                start,
            } => {
                if let Some(done) = open.take() {
                    close(done, dest, status);
                }
                start_file(dest, &header, extension, start).map(|o| {
                    status.file_started(&o.path, header.len() as u64);
                    open = Some(o);
                })
            }
            Piece::Fragment { data, end } => match &mut open {
                Some(o) => o
                    .file
                    .write_all(&data)
                    .map(|()| {
                        o.written += data.len() as u64;
                        status.wrote(data.len() as u64, end.saturating_sub(o.start));
                    })
                    .map_err(|e| {
                        // Leave the file whole: drop what part of the fragment made it.
                        let _ = o.file.set_len(o.written);
                        (o.path.clone(), e)
                    }),
                None => Ok(()),
            },
        };
        if let Err((path, e)) = result {
            tracing::error!(file = %path.display(), "recording failed: {e}");
            status.failed(format!("writing {}: {e}", path.display()));
            if let Some(done) = open.take() {
                let _ = done.file.sync_all();
            }
            return;
        }
    }
    if let Some(done) = open.take() {
        close(done, dest, status);
    }
    status.writer_done();
}

fn start_file(
    dest: &Destination,
    header: &[u8],
    extension: &str,
    start: Duration,
) -> Result<Open, (PathBuf, std::io::Error)> {
    fs::create_dir_all(&dest.dir).map_err(|e| (dest.dir.clone(), e))?;
    let path = dest
        .dir
        .join(files::file_name(dest.zero + start, extension));
    let mut file = File::create(&path).map_err(|e| (path.clone(), e))?;
    if let Err(e) = file.write_all(header) {
        drop(file);
        let _ = fs::remove_file(&path);
        return Err((path, e));
    }
    tracing::info!(file = %path.display(), "recording file started");
    files::apply_retention(&dest.dir, dest.keep_files, dest.max_age, Some(&path));
    Ok(Open {
        file,
        written: header.len() as u64,
        path,
        start,
    })
}

fn close(done: Open, dest: &Destination, status: &RecordingStatus) {
    if let Err(e) = done.file.sync_all() {
        tracing::warn!(file = %done.path.display(), "recording file sync: {e}");
    }
    tracing::info!(file = %done.path.display(), bytes = done.written, "recording file closed");
    status.file_closed();
    files::apply_retention(&dest.dir, dest.keep_files, dest.max_age, None);
}

/// For tests: a writer whose queue is never read.
#[cfg(test)]
pub(super) fn stalled(queue: usize, status: Arc<RecordingStatus>) -> (Writer, Receiver<Piece>) {
    let (tx, rx) = sync_channel(queue);
    (
        Writer {
            tx,
            pending_start: None,
            status,
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment() -> Piece {
        Piece::Fragment {
            data: vec![0; 4],
            end: Duration::ZERO,
        }
    }

    fn start() -> Piece {
        Piece::Start {
            header: vec![1],
            extension: "mp4",
            start: Duration::ZERO,
        }
    }

    #[test]
    fn a_full_queue_drops_fragments_but_keeps_the_file_start() {
        let status = Arc::new(RecordingStatus::default());
        let (mut w, rx) = stalled(2, Arc::clone(&status));
        w.send(start()).unwrap();
        w.send(fragment()).unwrap();
        w.send(fragment()).unwrap();
        w.send(start()).unwrap();
        w.send(fragment()).unwrap();
        assert_eq!(status.view().fragments_dropped, 2);
        assert!(matches!(rx.recv().unwrap(), Piece::Start { .. }));
        assert!(matches!(rx.recv().unwrap(), Piece::Fragment { .. }));
        // Room again: the waiting start goes first.
        w.send(fragment()).unwrap();
        assert!(matches!(rx.recv().unwrap(), Piece::Start { .. }));
        assert!(matches!(rx.recv().unwrap(), Piece::Fragment { .. }));
        drop(rx);
        assert_eq!(w.send(fragment()), Err(Closed::Gone));
    }
}
