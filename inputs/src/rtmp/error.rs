//! Why an RTMP connection ends early. Every variant closes that one connection with a log
//! line; none of them affects another stream.

use super::amf0::AmfError;

/// Errors of the RTMP protocol layer (handshake, chunk stream, messages, commands).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmpError {
    /// C0 named another version (6 is RTMPE; an HTTP request starts with `G`).
    #[error("not plain RTMP (handshake version byte {0})")]
    UnsupportedVersion(u8),
    /// `Set Chunk Size` outside 1..=2^31-1.
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    /// A message longer than we buffer.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Announced length.
        len: u32,
        /// Our limit.
        max: u32,
    },
    /// A chunk continuing a message on a chunk stream that never started one.
    #[error("chunk stream {0} continues a message that was never started")]
    NoPreviousHeader(u32),
    /// Too many chunk streams with messages in flight.
    #[error("more than {0} chunk streams in use")]
    TooManyChunkStreams(usize),
    /// Partial messages together exceed the buffer budget.
    #[error("more than {0} bytes buffered in partial messages")]
    BufferBudget(usize),
    /// A protocol control message with a wrong length.
    #[error("malformed protocol control message of type {0}")]
    MalformedControl(u8),
    /// A command or data message that is not AMF0.
    #[error("command is not AMF0: {0}")]
    Amf(#[from] AmfError),
    /// A command without its name or transaction id.
    #[error("malformed command")]
    MalformedCommand,
    /// An aggregate message whose sub-messages do not add up.
    #[error("malformed aggregate message")]
    MalformedAggregate,
}

/// Errors in the FLV payloads of audio and video messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A video or audio tag too short for its header.
    #[error("{0} tag truncated")]
    Truncated(&'static str),
    /// Video other than H.264 (AVC), e.g. HEVC or enhanced RTMP.
    #[error("unsupported video codec id {0} (only H.264/AVC)")]
    UnsupportedVideoCodec(u8),
    /// Enhanced RTMP video (named by FourCC), e.g. HEVC or AV1.
    #[error("unsupported enhanced-RTMP video `{0}` (only H.264/AVC)")]
    EnhancedRtmp(String),
    /// Audio other than AAC.
    #[error("unsupported audio format {0} (only AAC)")]
    UnsupportedAudioCodec(u8),
    /// The AVC sequence header is not a valid decoder configuration record.
    #[error("invalid AVC decoder configuration: {0}")]
    AvcConfig(&'static str),
    /// A length-prefixed NAL unit runs past the end of its frame.
    #[error("NAL unit length runs past the frame")]
    NalLength,
    /// A coded frame arrived before its sequence header.
    #[error("{0} frame before its sequence header")]
    NoSequenceHeader(&'static str),
    /// The AAC configuration cannot be decoded here.
    #[error("audio: {0}")]
    Audio(#[from] crate::rtmp::audio::AudioError),
}
