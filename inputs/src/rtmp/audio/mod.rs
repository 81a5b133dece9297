//! The audio track of an RTMP publisher: AAC-LC decoded, resampled to 48 kHz stereo and encoded
//! to Opus in 20 ms packets, because browsers play Opus over WebRTC and not AAC.
//!
//! This is the only transcode on the node. Pure Rust end to end: `symphonia-codec-aac` decodes
//! (AAC-LC only, which is what OBS and ffmpeg send by default), our polyphase [`resample`]
//! converts the rate, and `opus-rs` encodes. Owns no socket and no clock: RTP timestamps come
//! from sample counts, anchored to the publisher's first audio timestamp.
//!
//! - [`aac`]: `AudioSpecificConfig` and the decoder.
//! - [`resample`]: exact-ratio polyphase resampler.
//! - [`opus`]: the Opus encoder in 20 ms frames.
//! - [`transcode`]: the pipeline and its RTP packets.
//! - [`passthrough`]: the AAC frames as sent, for taps (LL-HLS).

pub mod aac;
pub mod opus;
pub mod passthrough;
pub mod resample;
pub mod transcode;

pub use transcode::AudioTranscoder;

/// The Opus clock and our output rate.
pub const OUTPUT_RATE: u32 = 48_000;
/// Output channels (WebRTC Opus is negotiated as stereo).
pub const OUTPUT_CHANNELS: usize = 2;

/// Why the audio of a publisher cannot be transcoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The `AudioSpecificConfig` is too short or malformed.
    #[error("malformed AudioSpecificConfig")]
    BadConfig,
    /// Not AAC-LC (e.g. HE-AAC, object type 5 or 29).
    #[error("AAC object type {0} is not supported (only AAC-LC, object type 2)")]
    UnsupportedObjectType(u8),
    /// A sample rate we do not resample from.
    #[error("AAC sample rate {0} Hz is not supported")]
    UnsupportedSampleRate(u32),
    /// More than two channels, or a channel layout only a PCE describes.
    #[error("AAC channel configuration {0} is not supported (mono or stereo)")]
    UnsupportedChannels(u8),
    /// The decoder refused the configuration.
    #[error("AAC decoder: {0}")]
    Decoder(#[from] symphonia_core::errors::Error),
    /// The Opus encoder refused its settings or a frame.
    #[error("Opus encoder: {0}")]
    Encoder(&'static str),
}
