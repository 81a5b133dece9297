//! The codecs the node forwards, and what a track's codec is on the wire.

use super::TrackKind;
use serde::Serialize;

/// A codec the node can forward without touching the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Codec {
    /// H.264, packetization-mode 1.
    H264,
    /// VP8.
    VP8,
    /// VP9.
    VP9,
    /// AV1.
    AV1,
    /// Opus, 48 kHz stereo.
    Opus,
}

impl Codec {
    /// Every codec, in the order a publisher's offer is searched when it states no preference.
    pub const ALL: [Codec; 5] = [Codec::H264, Codec::VP8, Codec::VP9, Codec::AV1, Codec::Opus];

    /// The `a=rtpmap` encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::VP8 => "VP8",
            Codec::VP9 => "VP9",
            Codec::AV1 => "AV1",
            Codec::Opus => "opus",
        }
    }

    /// The MIME type used by the WebRTC engine.
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::H264 => "video/H264",
            Codec::VP8 => "video/VP8",
            Codec::VP9 => "video/VP9",
            Codec::AV1 => "video/AV1",
            Codec::Opus => "audio/opus",
        }
    }

    /// Audio or video.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::Opus => TrackKind::Audio,
            _ => TrackKind::Video,
        }
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 90_000,
        }
    }

    /// The codec for an `a=rtpmap` encoding name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// A codec as negotiated with a publisher: what viewers must be offered to receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodecParams {
    /// The codec.
    pub codec: Codec,
    /// The `a=fmtp` line the publisher negotiated (profile, packetization mode …).
    pub fmtp: String,
    /// Audio channels (2 for Opus).
    pub channels: u16,
}

impl CodecParams {
    /// Whether a viewer's offered format can carry this publisher's stream unchanged.
    pub fn accepts(&self, name: &str, fmtp: &str) -> bool {
        if Codec::from_name(name) != Some(self.codec) {
            return false;
        }
        match self.codec {
            Codec::H264 => {
                let theirs = fmtp_value(fmtp, "packetization-mode").unwrap_or("0");
                let ours = fmtp_value(&self.fmtp, "packetization-mode").unwrap_or("0");
                let profile = |f: &str| {
                    fmtp_value(f, "profile-level-id")
                        .map(|p| p.get(..2).unwrap_or("").to_ascii_lowercase())
                };
                theirs == ours && profile(fmtp) == profile(&self.fmtp)
            }
            Codec::VP9 => {
                fmtp_value(fmtp, "profile-id").unwrap_or("0")
                    == fmtp_value(&self.fmtp, "profile-id").unwrap_or("0")
            }
            _ => true,
        }
    }

    /// Whether a viewer's H.264 format can carry this stream if profiles are ignored: the
    /// decoder learns the real profile from the SPS in band, and Chromium offers no High
    /// profile at all, so an RTMP stream from x264 (High) must still reach it.
    pub fn accepts_any_profile(&self, name: &str, fmtp: &str) -> bool {
        self.codec == Codec::H264
            && Codec::from_name(name) == Some(Codec::H264)
            && fmtp_value(fmtp, "packetization-mode").unwrap_or("0")
                == fmtp_value(&self.fmtp, "packetization-mode").unwrap_or("0")
    }
}

/// The value of `key` in an `a=fmtp` parameter list (`k=v;k=v`).
pub fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_matches_profile_and_mode() {
        let ours = CodecParams {
            codec: Codec::H264,
            fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
            channels: 0,
        };
        assert!(ours.accepts("H264", "profile-level-id=42e01f;packetization-mode=1"));
        assert!(!ours.accepts("H264", "profile-level-id=42e01f;packetization-mode=0"));
        assert!(!ours.accepts("H264", "profile-level-id=640c1f;packetization-mode=1"));
        assert!(!ours.accepts("VP8", ""));
    }
}
