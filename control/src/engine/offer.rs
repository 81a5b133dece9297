//! Reading a client's SDP offer before the engine sees it: validation with a clear reason, and
//! which of the offered formats carries each of our codecs.

use crate::error::{CodecList, Error, Result};
use crate::media::{Codec, CodecParams, TrackKind};
use rtc::sdp::description::session::SessionDescription;
use std::io::Cursor;

/// One format of one offered m-section.
#[derive(Debug, Clone)]
pub(crate) struct OfferedFormat {
    pub payload_type: u8,
    pub name: String,
    pub fmtp: String,
}

/// An offer's media sections, in order, each with its formats in preference order.
#[derive(Debug)]
pub(crate) struct Offer {
    pub sections: Vec<(TrackKind, Vec<OfferedFormat>)>,
}

/// Parses and checks an offer.
pub(crate) fn parse(sdp: &str) -> Result<Offer> {
    if !sdp.trim_start().starts_with("v=") {
        return Err(Error::MalformedSdp("an SDP body starts with `v=0`".into()));
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| Error::MalformedSdp(e.to_string()))?;
    let mut sections = Vec::new();
    for media in &parsed.media_descriptions {
        let kind = match media.media_name.media.as_str() {
            "audio" => TrackKind::Audio,
            "video" => TrackKind::Video,
            _ => continue,
        };
        let codecs = media.codecs();
        let formats = media
            .media_name
            .formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter_map(|pt| codecs.get(&pt))
            .map(|c| OfferedFormat {
                payload_type: c.payload_type,
                name: c.name.clone(),
                fmtp: c.fmtp.clone(),
            })
            .collect();
        sections.push((kind, formats));
    }
    if sections.is_empty() {
        return Err(Error::MalformedSdp(
            "the offer has no audio or video section".into(),
        ));
    }
    let has_ice = sdp.contains("a=ice-ufrag:") && sdp.contains("a=fingerprint:");
    if !has_ice {
        return Err(Error::MalformedSdp(
            "the offer lacks ICE credentials or a DTLS fingerprint".into(),
        ));
    }
    Ok(offer_from(sections))
}

fn offer_from(sections: Vec<(TrackKind, Vec<OfferedFormat>)>) -> Offer {
    Offer { sections }
}

impl Offer {
    /// For a publisher: the first format of the first section of `kind` that we forward
    /// (the publisher's own preference), H.264 only in packetization-mode 1.
    pub fn publisher_choice(&self, kind: TrackKind) -> Option<(OfferedFormat, CodecParams)> {
        let (_, formats) = self.sections.iter().find(|(k, _)| *k == kind)?;
        formats.iter().find_map(|f| {
            let codec = Codec::from_name(&f.name)?;
            if codec.kind() != kind {
                return None;
            }
            if codec == Codec::H264
                && crate::media::codec_fmtp_value(&f.fmtp, "packetization-mode") != Some("1")
            {
                return None;
            }
            let params = CodecParams {
                codec,
                fmtp: f.fmtp.clone(),
                channels: if codec == Codec::Opus { 2 } else { 0 },
            };
            Some((f.clone(), params))
        })
    }

    /// For a publisher with a preferred set (a returning publisher keeps its viewers' codecs).
    pub fn publisher_choice_preferring(
        &self,
        kind: TrackKind,
        preferred: Option<&CodecParams>,
    ) -> Option<(OfferedFormat, CodecParams)> {
        if let Some(want) = preferred
            && let Some((_, formats)) = self.sections.iter().find(|(k, _)| *k == kind)
            && let Some(f) = formats.iter().find(|f| want.accepts(&f.name, &f.fmtp))
        {
            return Some((f.clone(), want.clone()));
        }
        self.publisher_choice(kind)
    }

    /// The first offered format of `kind` whose codec we know, in the client's order.
    pub fn first_known_format(&self, kind: TrackKind) -> Option<(OfferedFormat, Codec)> {
        self.sections
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, formats)| formats.iter())
            .find_map(|f| {
                let codec = Codec::from_name(&f.name).filter(|c| c.kind() == kind)?;
                Some((f.clone(), codec))
            })
    }

    /// For a viewer: the offered format that can carry `track` unchanged.
    pub fn viewer_match(&self, track: &CodecParams) -> Option<OfferedFormat> {
        let kind = track.codec.kind();
        self.sections
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, formats)| formats.iter())
            .find(|f| track.accepts(&f.name, &f.fmtp))
            .or_else(|| {
                self.sections
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .flat_map(|(_, formats)| formats.iter())
                    .find(|f| track.accepts_any_profile(&f.name, &f.fmtp))
            })
            .cloned()
    }
}

/// The error naming what a viewer should have offered.
pub(crate) fn no_common_codec(tracks: &[CodecParams]) -> Error {
    Error::NoCommonCodec(CodecList(
        tracks
            .iter()
            .map(|t| {
                if t.fmtp.is_empty() {
                    t.codec.name().to_owned()
                } else {
                    format!("{} ({})", t.codec.name(), t.fmtp)
                }
            })
            .collect(),
    ))
}
