//! Where keyframes start, per codec, and the cache that lets a joining viewer start at once.

use super::{Codec, MediaPacket};
use std::collections::VecDeque;
use std::sync::Arc;

/// Packets kept at most per cached group of pictures (≈ 4 s at 8 Mbps); past it the cache
/// gives up until the next keyframe rather than grow without bound.
const MAX_CACHED_PACKETS: usize = 4096;

/// Whether this RTP payload is the first packet of a keyframe (or of its parameter sets).
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::H264 => h264_has_keyframe_nal(payload),
        Codec::VP8 => vp8_keyframe_start(payload),
        Codec::VP9 => vp9_keyframe_start(payload),
        Codec::AV1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        Codec::Opus => false,
    }
}

fn h264_is_key_nal(nal_type: u8) -> bool {
    // IDR slice or SPS: a decoder can start here.
    nal_type == 5 || nal_type == 7
}

fn h264_has_keyframe_nal(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        24 => {
            // STAP-A: 2-byte sizes, each followed by a NAL unit.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let Some(&nal) = rest.get(2) else {
                    return false;
                };
                if h264_is_key_nal(nal & 0x1f) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && h264_is_key_nal(fu & 0x1f)),
        t => h264_is_key_nal(t),
    }
}

fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    // Start of partition 0 only.
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    // VP8 frame tag: bit 0 is 0 for a keyframe.
    payload.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

fn vp9_keyframe_start(payload: &[u8]) -> bool {
    // Not inter-predicted (P = 0) and the beginning of a frame (B = 1).
    payload
        .first()
        .is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0)
}

/// The packets from the newest keyframe on, for one video track, so a joining viewer gets a
/// picture at once instead of waiting for the publisher's next keyframe.
#[derive(Debug, Default)]
pub struct KeyframeCache {
    packets: VecDeque<Arc<MediaPacket>>,
    keyframe_ts: Option<u32>,
    epoch: u32,
}

impl KeyframeCache {
    /// Records a packet of the track.
    pub fn push(&mut self, packet: &Arc<MediaPacket>) {
        let ts = packet.rtp.header.timestamp;
        if packet.epoch != self.epoch {
            self.epoch = packet.epoch;
            self.clear();
        }
        if packet.keyframe_start && self.keyframe_ts != Some(ts) {
            // Keep earlier packets of the same frame (SEI before the SPS, say).
            self.packets.retain(|p| p.rtp.header.timestamp == ts);
            self.keyframe_ts = Some(ts);
        }
        if self.keyframe_ts.is_none() {
            return;
        }
        if self.packets.len() >= MAX_CACHED_PACKETS {
            self.clear();
            return;
        }
        self.packets.push_back(Arc::clone(packet));
    }

    /// Forgets everything, e.g. when the publisher changes.
    pub fn clear(&mut self) {
        self.packets.clear();
        self.keyframe_ts = None;
    }

    /// The cached packets, oldest first; empty when no keyframe has been seen.
    pub fn packets(&self) -> impl Iterator<Item = &Arc<MediaPacket>> {
        self.packets.iter()
    }

    /// Whether a keyframe is cached.
    pub fn has_keyframe(&self) -> bool {
        !self.packets.is_empty()
    }
}

#[cfg(test)]
#[path = "keyframe_tests.rs"]
mod tests;
