//! FLV tag bodies, as RTMP audio and video messages carry them: which are sequence headers,
//! which are coded frames, and their composition time.
//!
//! Owns the FLV header bytes only; the H.264 inside is `h264`'s, the AAC inside `audio`'s.

use super::error::MediaError;
use bytes::Bytes;

/// FLV video codec id of H.264.
const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// Frame type of a "video info / command" frame (carries no picture).
const FRAME_INFO: u8 = 5;

/// A video message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// `AVCDecoderConfigurationRecord` (SPS/PPS).
    SequenceHeader(Bytes),
    /// Length-prefixed NAL units of one frame.
    Frame {
        /// Marked as a keyframe by the encoder.
        keyframe: bool,
        /// Composition time offset in ms (pts - dts); non-zero means B-frames.
        cts: i32,
        /// The NAL units.
        data: Bytes,
    },
    /// End of sequence, or an info/command frame: nothing to forward.
    Skip,
}

/// An audio message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// `AudioSpecificConfig`.
    SequenceHeader(Bytes),
    /// One raw AAC frame (1024 samples per channel).
    Frame(Bytes),
}

/// Parses a video message body.
pub fn parse_video(payload: &Bytes) -> Result<VideoTag, MediaError> {
    let Some(&b0) = payload.first() else {
        return Err(MediaError::Truncated("video"));
    };
    if b0 & 0x80 != 0 {
        // Enhanced RTMP (HEVC, AV1, VP9 by FourCC): not forwarded yet.
        let fourcc = payload
            .get(1..5)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        return Err(MediaError::EnhancedRtmp(fourcc));
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0f;
    if frame_type == FRAME_INFO {
        return Ok(VideoTag::Skip);
    }
    if codec != CODEC_AVC {
        return Err(MediaError::UnsupportedVideoCodec(codec));
    }
    let head = payload.get(1..5).ok_or(MediaError::Truncated("video"))?;
    let cts_raw = u32::from_be_bytes([0, head[1], head[2], head[3]]);
    // Sign-extend the 24-bit value.
    let cts = ((cts_raw << 8) as i32) >> 8;
    let data = payload.slice(5..);
    Ok(match head[0] {
        0 => VideoTag::SequenceHeader(data),
        1 => VideoTag::Frame {
            keyframe: frame_type == 1,
            cts,
            data,
        },
        _ => VideoTag::Skip,
    })
}

/// One tag of an FLV file: type (8 audio, 9 video, 18 data), timestamp in ms, body.
pub type FileTag = (u8, u32, Bytes);

/// Every tag of an FLV file (header, then tags each followed by a back pointer). A tag's body
/// is exactly the body of the RTMP message that would carry it, so files drive the same code
/// an RTMP connection does (tests, the transcode benchmark).
pub fn file_tags(file: &[u8]) -> Result<Vec<FileTag>, MediaError> {
    let truncated = MediaError::Truncated("FLV file");
    if file.get(..3) != Some(b"FLV".as_slice()) {
        return Err(truncated);
    }
    let header = file.get(5..9).ok_or(MediaError::Truncated("FLV file"))?;
    let mut pos = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize + 4;
    let mut out = Vec::new();
    while let Some(h) = file.get(pos..pos + 11) {
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = file
            .get(pos + 11..pos + 11 + size)
            .ok_or(MediaError::Truncated("FLV tag"))?;
        out.push((h[0], ts, Bytes::copy_from_slice(body)));
        pos += 11 + size + 4;
    }
    Ok(out)
}

/// Parses an audio message body.
pub fn parse_audio(payload: &Bytes) -> Result<AudioTag, MediaError> {
    let Some(&b0) = payload.first() else {
        return Err(MediaError::Truncated("audio"));
    };
    let format = b0 >> 4;
    if format != SOUND_AAC {
        return Err(MediaError::UnsupportedAudioCodec(format));
    }
    let kind = *payload.get(1).ok_or(MediaError::Truncated("audio"))?;
    let data = payload.slice(2..);
    Ok(if kind == 0 {
        AudioTag::SequenceHeader(data)
    } else {
        AudioTag::Frame(data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_tags() {
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]);
        assert_eq!(
            parse_video(&seq).unwrap(),
            VideoTag::SequenceHeader(Bytes::from_static(&[1, 0x64, 0, 0x1f]))
        );
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0x42, 0, 0, 0, 1, 0x65]);
        assert!(matches!(
            parse_video(&key).unwrap(),
            VideoTag::Frame {
                keyframe: true,
                cts: 66,
                ..
            }
        ));
        let neg = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf]);
        assert!(matches!(
            parse_video(&neg).unwrap(),
            VideoTag::Frame {
                keyframe: false,
                cts: -33,
                ..
            }
        ));
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(),
            VideoTag::Skip
        );
        assert!(matches!(
            parse_video(&Bytes::from_static(&[0x1c, 0, 0, 0, 0])),
            Err(MediaError::UnsupportedVideoCodec(12))
        ));
        assert!(matches!(
            parse_video(&Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1'])),
            Err(MediaError::EnhancedRtmp(f)) if f == "hvc1"
        ));
        assert!(parse_video(&Bytes::from_static(&[0x17, 1])).is_err());
        assert!(parse_video(&Bytes::new()).is_err());
    }

    #[test]
    fn audio_tags() {
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap(),
            AudioTag::SequenceHeader(Bytes::from_static(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 1, 0x21])).unwrap(),
            AudioTag::Frame(Bytes::from_static(&[0x21]))
        );
        assert!(matches!(
            parse_audio(&Bytes::from_static(&[0x2f, 1])),
            Err(MediaError::UnsupportedAudioCodec(2))
        ));
        assert!(parse_audio(&Bytes::from_static(&[0xaf])).is_err());
    }
}
