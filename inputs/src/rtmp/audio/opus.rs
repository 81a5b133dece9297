//! The Opus encoder: 48 kHz stereo in 20 ms frames (960 samples per channel), the framing
//! WebRTC endpoints expect.

use super::{AudioError, OUTPUT_CHANNELS, OUTPUT_RATE};
use opus_rs::{Application, OpusEncoder as Inner};

/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Largest Opus packet (RFC 6716 §3.2.1, one frame).
const MAX_PACKET: usize = 1276;
/// Stereo music at this rate is transparent for a live stream and small next to the video.
const BITRATE_BPS: i32 = 96_000;
/// libopus's scale 0..=10; measured in `transcode`'s cost test.
const COMPLEXITY: i32 = 5;

/// Encodes 20 ms stereo frames.
pub struct OpusEncoder {
    inner: Inner,
    packet: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// A 48 kHz stereo music encoder.
    pub fn new() -> Result<Self, AudioError> {
        let mut inner = Inner::new(OUTPUT_RATE as i32, OUTPUT_CHANNELS, Application::Audio)
            .map_err(AudioError::Encoder)?;
        inner.bitrate_bps = BITRATE_BPS;
        inner.complexity = COMPLEXITY;
        Ok(Self {
            inner,
            packet: vec![0; MAX_PACKET],
        })
    }

    /// Encodes one frame of `FRAME_SAMPLES` interleaved stereo samples.
    pub fn encode(&mut self, frame: &[f32]) -> Result<&[u8], AudioError> {
        let n = self
            .inner
            .encode(frame, FRAME_SAMPLES, &mut self.packet)
            .map_err(AudioError::Encoder)?;
        Ok(&self.packet[..n])
    }
}
