//! Recording to WebM (Matroska) for VP8, which has no place in MP4 that browsers or ffmpeg
//! accept: a minimal EBML writer, the header and tracks once per file, then one Cluster of
//! SimpleBlocks per fragment.
//!
//! Crash tolerance mirrors the MP4 files: the Segment and every Cluster have the "unknown"
//! size, so nothing written earlier is ever patched, and each Cluster goes to the file in one
//! write; a file cut after any Cluster is a complete WebM file.

use super::fragmenter::{Batch, Fragmenter, Timed};
use super::piece::{AUDIO_HZ, Muxer, Piece, VIDEO_HZ, ticks};
use bytes::Bytes;
use std::time::Duration;

/// Element ids (Matroska / WebM).
pub(super) mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// The 8-byte "unknown" size: the element runs until its parent (or the file) ends.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// An EBML variable-size integer of the fewest bytes (sizes below 2^56 - 1).
fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8u32)
        .find(|&n| size < (1u64 << (7 * n)) - 1)
        .unwrap_or(8);
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[(8 - len as usize)..]);
}

fn element(out: &mut Vec<u8>, id: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    put_id(out, id);
    put_size(out, inner.len() as u64);
    out.extend_from_slice(&inner);
}

fn uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    element(out, id, |o| o.extend_from_slice(&bytes[skip..]));
}

fn string(out: &mut Vec<u8>, id: u32, s: &str) {
    element(out, id, |o| o.extend_from_slice(s.as_bytes()));
}

/// What the tracks are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebmTracks {
    /// VP8 picture size (from the first keyframe).
    pub width: u16,
    /// VP8 picture size.
    pub height: u16,
    /// Opus channels, when the stream has audio.
    pub audio_channels: Option<u8>,
}

const VIDEO_TRACK: u8 = 1;
const AUDIO_TRACK: u8 = 2;

/// The EBML header, the Segment (unknown size), Info and Tracks.
pub fn header(tracks: &WebmTracks) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    element(&mut out, id::EBML, |o| {
        uint(o, id::EBML_VERSION, 1);
        uint(o, id::EBML_READ_VERSION, 1);
        uint(o, id::EBML_MAX_ID_LENGTH, 4);
        uint(o, id::EBML_MAX_SIZE_LENGTH, 8);
        string(o, id::DOC_TYPE, "webm");
        uint(o, id::DOC_TYPE_VERSION, 4);
        uint(o, id::DOC_TYPE_READ_VERSION, 2);
    });
    put_id(&mut out, id::SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    element(&mut out, id::INFO, |o| {
        uint(o, id::TIMESTAMP_SCALE, 1_000_000); // milliseconds
        string(o, id::MUXING_APP, "waveguide");
        string(o, id::WRITING_APP, "waveguide");
    });
    element(&mut out, id::TRACKS, |o| {
        element(o, id::TRACK_ENTRY, |o| {
            uint(o, id::TRACK_NUMBER, u64::from(VIDEO_TRACK));
            uint(o, id::TRACK_UID, u64::from(VIDEO_TRACK));
            uint(o, id::TRACK_TYPE, 1);
            string(o, id::CODEC_ID, "V_VP8");
            element(o, id::VIDEO, |o| {
                uint(o, id::PIXEL_WIDTH, u64::from(tracks.width));
                uint(o, id::PIXEL_HEIGHT, u64::from(tracks.height));
            });
        });
        if let Some(channels) = tracks.audio_channels {
            element(o, id::TRACK_ENTRY, |o| {
                uint(o, id::TRACK_NUMBER, u64::from(AUDIO_TRACK));
                uint(o, id::TRACK_UID, u64::from(AUDIO_TRACK));
                uint(o, id::TRACK_TYPE, 2);
                string(o, id::CODEC_ID, "A_OPUS");
                element(o, id::CODEC_PRIVATE, |o| {
                    // OpusHead (RFC 7845): version 1, channels, pre-skip 0 (a live join starts
                    // mid-stream), 48 kHz, gain 0, mapping family 0.
                    o.extend_from_slice(b"OpusHead");
                    o.push(1);
                    o.push(channels);
                    o.extend_from_slice(&0u16.to_le_bytes());
                    o.extend_from_slice(&48_000u32.to_le_bytes());
                    o.extend_from_slice(&0i16.to_le_bytes());
                    o.push(0);
                });
                uint(o, id::CODEC_DELAY, 0);
                uint(o, id::SEEK_PRE_ROLL, 80_000_000);
                element(o, id::AUDIO, |o| {
                    element(o, id::SAMPLING_FREQUENCY, |o| {
                        o.extend_from_slice(&48_000f64.to_be_bytes());
                    });
                    uint(o, id::CHANNELS, u64::from(channels));
                });
            });
        }
    });
    out
}

/// One Cluster (unknown size) holding `blocks` as SimpleBlocks: (track, milliseconds since
/// the file's start, keyframe, frame), in time order.
pub fn cluster(blocks: &[(u8, u64, bool, &[u8])]) -> Vec<u8> {
    let base = blocks.iter().map(|b| b.1).min().unwrap_or(0);
    let mut out = Vec::with_capacity(64 + blocks.iter().map(|b| b.3.len() + 8).sum::<usize>());
    put_id(&mut out, id::CLUSTER);
    out.extend_from_slice(&UNKNOWN_SIZE);
    uint(&mut out, id::TIMESTAMP, base);
    for &(track, ms, keyframe, frame) in blocks {
        // A fragment spans about a second; a relative time past i16 cannot happen unless
        // the input jumps, and is clamped rather than wrapped.
        let relative = i16::try_from(ms - base).unwrap_or(i16::MAX);
        put_id(&mut out, id::SIMPLE_BLOCK);
        put_size(&mut out, 4 + frame.len() as u64);
        out.push(0x80 | track); // track number as a 1-byte vint
        out.extend_from_slice(&relative.to_be_bytes());
        out.push(if keyframe { 0x80 } else { 0 });
        out.extend_from_slice(frame);
    }
    out
}

/// VP8 (+ Opus) to WebM.
#[derive(Debug)]
pub struct WebmMuxer {
    header: Vec<u8>,
    has_audio: bool,
    fragmenter: Fragmenter,
}

impl WebmMuxer {
    /// Files of about `segment`.
    pub fn new(tracks: &WebmTracks, segment: Duration) -> Self {
        Self {
            header: header(tracks),
            has_audio: tracks.audio_channels.is_some(),
            fragmenter: Fragmenter::new(segment),
        }
    }

    fn start_file(&mut self, out: &mut Vec<Piece>) {
        if let Some(start) = self.fragmenter.take_new_file() {
            out.push(Piece::Start {
                header: self.header.clone(),
                extension: "webm",
                start: ticks(start, VIDEO_HZ),
            });
        }
    }

    fn emit(&mut self, batch: Batch, out: &mut Vec<Piece>) {
        let ms = |f: &Timed, hz: u64, start: u64| f.ticks.saturating_sub(start) * 1000 / hz;
        let audio_start = batch.file_start * AUDIO_HZ / VIDEO_HZ;
        let mut blocks: Vec<(u8, u64, bool, &[u8])> = batch
            .video
            .iter()
            .map(|f| {
                let at = ms(f, VIDEO_HZ, batch.file_start);
                (VIDEO_TRACK, at, f.keyframe, &f.data[..])
            })
            .chain(batch.audio.iter().map(|f| {
                let at = ms(f, AUDIO_HZ, audio_start);
                (AUDIO_TRACK, at, true, &f.data[..])
            }))
            .collect();
        if blocks.is_empty() {
            return;
        }
        // Stable: a video frame stays before the audio frame of the same millisecond.
        blocks.sort_by_key(|b| b.1);
        out.push(Piece::Fragment {
            data: cluster(&blocks),
            end: ticks(batch.end(), VIDEO_HZ),
        });
    }
}

impl Muxer for WebmMuxer {
    fn push_video(&mut self, at: u64, keyframe: bool, frame: Bytes, out: &mut Vec<Piece>) {
        if let Some(batch) = self.fragmenter.push_video(at, keyframe, frame) {
            self.emit(batch, out);
        }
        self.start_file(out);
    }

    fn push_audio(&mut self, at: u64, frame: Bytes, _out: &mut Vec<Piece>) {
        if self.has_audio {
            self.fragmenter.push_audio(at, frame);
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        if let Some(batch) = self.fragmenter.finish() {
            self.emit(batch, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shortest_vints() {
        let mut v = Vec::new();
        put_size(&mut v, 5);
        assert_eq!(v, [0x85]);
        v.clear();
        // 127 is reserved in one byte (all ones): two bytes.
        put_size(&mut v, 127);
        assert_eq!(v, [0x40, 0x7F]);
        v.clear();
        put_size(&mut v, 300);
        assert_eq!(v, [0x41, 0x2C]);
    }

    #[test]
    fn header_and_cluster_layout() {
        let h = header(&WebmTracks {
            width: 640,
            height: 480,
            audio_channels: Some(2),
        });
        assert_eq!(&h[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        let seg = h
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .unwrap();
        assert_eq!(&h[seg + 4..seg + 12], &UNKNOWN_SIZE);
        assert!(h.windows(5).any(|w| w == b"V_VP8"));
        assert!(h.windows(8).any(|w| w == b"OpusHead"));
        let c = cluster(&[(1, 1000, true, b"key"), (2, 1005, true, b"op")]);
        assert_eq!(&c[..4], &[0x1F, 0x43, 0xB6, 0x75]);
        // Timestamp 1000 ms: id E7, size 2, 0x03E8.
        assert_eq!(&c[12..16], &[0xE7, 0x82, 0x03, 0xE8]);
        // First block: id A3, size 7, track 1, +0 ms, keyframe.
        assert_eq!(&c[16..23], &[0xA3, 0x87, 0x81, 0, 0, 0x80, b'k']);
        // Second: track 2, +5 ms.
        assert_eq!(&c[25..31], &[0xA3, 0x86, 0x82, 0, 5, 0x80]);
    }
}
