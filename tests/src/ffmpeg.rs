//! [`Ffmpeg`]: Debian's ffmpeg publishing a synthetic picture and tone over RTMP, the way OBS
//! or a restreaming box would.

use crate::process::new_log_path;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let out = std::fs::File::create(&log).expect("create ffmpeg log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ffmpeg (see scripts/setup.sh): {e}"));
        Ffmpeg { child, log }
    }

    /// Waits up to `timeout` for ffmpeg to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
