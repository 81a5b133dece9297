//! [`Ffmpeg`]: Debian's ffmpeg publishing a synthetic picture and tone over RTMP, the way OBS
//! or a restreaming box would.

use crate::process::{new_log_path, spawn_logged, wait_child};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// An ffmpeg child process, killed on drop, its output in `target/test-logs/`.
pub struct Ffmpeg {
    pub child: Child,
    log: PathBuf,
}

impl Ffmpeg {
    /// `ffmpeg -re` publishing 640x480@30 `testsrc2` and a 440 Hz `sine` for `seconds`.
    /// `video` and `audio` are the codec options (`-c:v …`, `-c:a …`).
    pub fn publish(url: &str, seconds: u32, video: &[&str], audio: &[&str]) -> Ffmpeg {
        let seconds = seconds.to_string();
        let mut args = vec![
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x480:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &seconds,
        ];
        args.extend_from_slice(video);
        args.extend_from_slice(audio);
        args.extend_from_slice(&["-f", "flv", url]);
        Self::spawn(&args)
    }

    /// `ffmpeg -hide_banner -nostdin -loglevel warning <args>`.
    pub fn spawn(args: &[&str]) -> Ffmpeg {
        let log = new_log_path("ffmpeg");
        let quiet = ["-hide_banner", "-nostdin", "-loglevel", "warning"];
        let child = spawn_logged(Path::new("ffmpeg"), quiet.iter().chain(args.iter()), &log);
        Ffmpeg { child, log }
    }

    /// Waits up to `timeout` for ffmpeg to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- ffmpeg log {} ---\n{}",
                self.log.display(),
                self.output()
            );
        }
    }
}
