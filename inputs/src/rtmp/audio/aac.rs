//! AAC-LC: the `AudioSpecificConfig` from the FLV sequence header, and decoding raw frames to
//! interleaved stereo `f32`.
//!
//! A malformed frame is replaced by silence of the same length so the timeline stays whole. The
//! decoder is third-party code fed by the network: a panic inside it is caught, and the decoder
//! is rebuilt, instead of taking the connection down.

use super::AudioError;
use std::panic::{AssertUnwindSafe, catch_unwind};
use symphonia_codec_aac::AacDecoder as Inner;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration, Timestamp};

/// Samples per channel in one AAC-LC frame.
pub const FRAME_SAMPLES: usize = 1024;

/// Sample rates by `samplingFrequencyIndex` (ISO 14496-3 Table 1.18).
const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// What an `AudioSpecificConfig` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 = mono, 2 = stereo).
    pub channels: u8,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

impl AacConfig {
    /// Parses and checks an `AudioSpecificConfig` (ISO 14496-3 §1.6.2.1).
    pub fn parse(asc: &[u8]) -> Result<Self, AudioError> {
        let mut b = Bits { data: asc, pos: 0 };
        let mut object_type = b.read(5).ok_or(AudioError::BadConfig)?;
        if object_type == 31 {
            object_type = 32 + b.read(6).ok_or(AudioError::BadConfig)?;
        }
        let index = b.read(4).ok_or(AudioError::BadConfig)?;
        let sample_rate = if index == 15 {
            b.read(24).ok_or(AudioError::BadConfig)?
        } else {
            *RATES.get(index as usize).ok_or(AudioError::BadConfig)?
        };
        let channels = b.read(4).ok_or(AudioError::BadConfig)? as u8;
        // object_type < 64 by construction (5 or 6 bits).
        let object_type = object_type as u8;
        if object_type != 2 {
            return Err(AudioError::UnsupportedObjectType(object_type));
        }
        if !(8_000..=96_000).contains(&sample_rate) {
            return Err(AudioError::UnsupportedSampleRate(sample_rate));
        }
        if !(1..=2).contains(&channels) {
            return Err(AudioError::UnsupportedChannels(channels));
        }
        Ok(Self {
            object_type,
            sample_rate,
            channels,
        })
    }
}

/// An AAC-LC decoder producing interleaved stereo.
pub struct AacDecoder {
    config: AacConfig,
    asc: Box<[u8]>,
    inner: Inner,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for AacDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacDecoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Outcome of decoding one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The frame decoded.
    Audio,
    /// The frame was malformed; silence stands in for it.
    Concealed,
}

fn build(config: &AacConfig, asc: &[u8]) -> Result<Inner, AudioError> {
    // The channel layout comes from the AudioSpecificConfig itself.
    let mut params = AudioCodecParameters::new();
    params.codec = CODEC_ID_AAC;
    params
        .with_sample_rate(config.sample_rate)
        .with_extra_data(asc.into());
    Ok(Inner::try_new(&params, &AudioDecoderOptions::default())?)
}

impl AacDecoder {
    /// A decoder for the stream described by `asc`.
    pub fn new(asc: &[u8]) -> Result<Self, AudioError> {
        let config = AacConfig::parse(asc)?;
        let inner = build(&config, asc)?;
        Ok(Self {
            config,
            asc: asc.into(),
            inner,
            scratch: Vec::with_capacity(FRAME_SAMPLES * 2),
        })
    }

    /// The stream's configuration.
    pub fn config(&self) -> AacConfig {
        self.config
    }

    /// Decodes one raw frame and appends it to `out` as interleaved stereo at the stream's
    /// own rate (mono is duplicated to both channels).
    pub fn decode(&mut self, frame: &[u8], out: &mut Vec<f32>) -> Decoded {
        self.scratch.clear();
        let packet = PacketRef::new(
            0,
            Timestamp::new(0),
            Duration::new(FRAME_SAMPLES as u64),
            frame,
        );
        let inner = &mut self.inner;
        let scratch = &mut self.scratch;
        let result = catch_unwind(AssertUnwindSafe(|| match inner.decode_ref(&packet) {
            Ok(buf) => {
                buf.copy_to_vec_interleaved::<f32>(scratch);
                Ok(buf.num_planes())
            }
            Err(e) => Err(e),
        }));
        let planes = match result {
            Ok(Ok(planes)) if !self.scratch.is_empty() => planes,
            Ok(_) => return self.conceal(out),
            Err(_) => {
                // The decoder panicked: its state is suspect, start a fresh one.
                if let Ok(fresh) = build(&self.config, &self.asc) {
                    self.inner = fresh;
                }
                return self.conceal(out);
            }
        };
        match planes {
            1 => {
                for &s in &self.scratch {
                    out.extend_from_slice(&[s, s]);
                }
            }
            2 => out.extend_from_slice(&self.scratch),
            _ => return self.conceal(out),
        }
        Decoded::Audio
    }

    fn conceal(&mut self, out: &mut Vec<f32>) -> Decoded {
        out.resize(out.len() + FRAME_SAMPLES * 2, 0.0);
        Decoded::Concealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_configs() {
        // AAC-LC 44.1 kHz stereo (ffmpeg's default here): 0x12 0x10.
        assert_eq!(
            AacConfig::parse(&[0x12, 0x10]).unwrap(),
            AacConfig {
                object_type: 2,
                sample_rate: 44_100,
                channels: 2
            }
        );
        // AAC-LC 48 kHz mono: 0x11 0x88.
        assert_eq!(
            AacConfig::parse(&[0x11, 0x88]).unwrap(),
            AacConfig {
                object_type: 2,
                sample_rate: 48_000,
                channels: 1
            }
        );
        // HE-AAC (object type 5).
        assert!(matches!(
            AacConfig::parse(&[0x2a, 0x10]),
            Err(AudioError::UnsupportedObjectType(5))
        ));
        // 5.1.
        assert!(matches!(
            AacConfig::parse(&[0x12, 0x30]),
            Err(AudioError::UnsupportedChannels(6))
        ));
        assert!(AacConfig::parse(&[0x12]).is_err());
        assert!(AacConfig::parse(&[]).is_err());
    }

    #[test]
    fn garbage_frames_become_silence() {
        let mut d = AacDecoder::new(&[0x12, 0x10]).unwrap();
        let mut out = Vec::new();
        let mut state = 99u32;
        for n in 0..200usize {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let frame: Vec<u8> = (0..n).map(|i| (state >> (i % 24)) as u8).collect();
            let before = out.len();
            d.decode(&frame, &mut out);
            assert!(out.len() > before);
        }
    }
}
