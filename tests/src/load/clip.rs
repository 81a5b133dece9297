//! The video the publisher loops: an Annex-B H.264 clip made once by ffmpeg (libx264, no
//! B-frames, fixed GOP) and cached under `target/`, split into frames and packetized up front
//! with `rtc`'s `H264Payloader`, so sending a frame costs no parsing.

use super::annexb::access_units;
use super::config::VideoSpec;
use super::error::LoadError;
use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Largest RTP payload, as browsers use.
pub const MTU: usize = 1_200;
/// GOPs in a generated clip: long enough that a repeated payload is seconds old.
const CLIP_GOPS: u32 = 3;

/// One frame's RTP payloads, in order; the last one carries the marker bit.
#[derive(Debug, Clone)]
pub struct Frame {
    pub payloads: Vec<Bytes>,
    pub keyframe: bool,
}

/// A packetized clip.
#[derive(Debug, Clone)]
pub struct Clip {
    pub path: PathBuf,
    pub frames: Vec<Frame>,
}

impl Clip {
    /// Payload bytes per second when played at `fps`.
    pub fn bitrate_bps(&self, fps: u32) -> f64 {
        let bytes: usize = self
            .frames
            .iter()
            .flat_map(|f| f.payloads.iter().map(Bytes::len))
            .sum();
        bytes as f64 * 8.0 * f64::from(fps) / self.frames.len().max(1) as f64
    }

    /// Packets per second when played at `fps`.
    pub fn packet_rate(&self, fps: u32) -> f64 {
        let packets: usize = self.frames.iter().map(|f| f.payloads.len()).sum();
        packets as f64 * f64::from(fps) / self.frames.len().max(1) as f64
    }

    /// Reads and packetizes an Annex-B file. It must start with a keyframe, so that looping
    /// it keeps the stream decodable.
    pub fn load(path: &Path) -> Result<Clip, LoadError> {
        let data = std::fs::read(path)?;
        let bad = |why| LoadError::BadClip {
            path: path.to_owned(),
            why,
        };
        let units = access_units(&data);
        if !units.first().is_some_and(|au| au.is_keyframe()) {
            return Err(bad("not Annex-B H.264 starting with an IDR frame"));
        }
        let mut payloader = H264Payloader::default();
        let mut frames = Vec::with_capacity(units.len());
        for au in &units {
            let payloads = payloader.payload(MTU, &Bytes::from(au.to_annexb()))?;
            if payloads.is_empty() {
                continue;
            }
            frames.push(Frame {
                payloads,
                keyframe: au.is_keyframe(),
            });
        }
        Ok(Clip {
            path: path.to_owned(),
            frames,
        })
    }
}

/// Where the generated clip for `spec` is cached.
pub fn cached_path(spec: &VideoSpec, dir: &Path) -> PathBuf {
    dir.join(format!(
        "testsrc2-{}x{}-{}fps-g{}-{}k.h264",
        spec.width, spec.height, spec.fps, spec.gop, spec.bitrate_kbps
    ))
}

/// The clip for `spec`, made with ffmpeg unless already cached.
pub fn ensure_clip(spec: &VideoSpec, dir: &Path) -> Result<PathBuf, LoadError> {
    let path = cached_path(spec, dir);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    // Written under a temporary name and renamed, so two runs never read a half-written clip.
    let partial = path.with_extension(format!("{}.partial.h264", std::process::id()));
    let kbps = spec.bitrate_kbps;
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={}x{}:rate={}",
            spec.width, spec.height, spec.fps
        ))
        .args(["-frames:v", &(spec.gop * CLIP_GOPS).to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-profile:v"])
        // Constrained baseline at level 3.1 (profile-level-id 42e01f, what the offer says).
        .args([
            "baseline", "-level", "3.1", "-pix_fmt", "yuv420p", "-bf", "0",
        ])
        .args(["-g", &spec.gop.to_string(), "-keyint_min"])
        .arg(spec.gop.to_string())
        .args(["-sc_threshold", "0", "-b:v", &format!("{kbps}k")])
        .args(["-maxrate", &format!("{kbps}k"), "-bufsize"])
        .arg(format!("{kbps}k"))
        .args(["-f", "h264"])
        .arg(&partial)
        .output()
        .map_err(LoadError::FfmpegMissing)?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(LoadError::FfmpegFailed {
            path,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}
