//! CMAF / fragmented MP4 writing: the init segment (`ftyp` + `moov` with `avc1`/`avcC`,
//! `Opus`/`dOps` and `mp4a`/`esds` sample entries) and media fragments (`moof` + `mdat`, one `traf` per track).
//!
//! The boxes are written by hand (ISO/IEC 14496-12 and -15, the Opus-in-ISOBMFF mapping)
//! rather than with a crate such as `mp4-atom`: the few boxes a live CMAF rendition needs fit in
//! this file, every byte is under our control and covered by the layout tests below (and
//! ffprobe/Chromium in the e2e test), and there is no fast-moving dependency to pin. Owns bytes
//! only: what goes in a fragment is `segmenter`'s.

/// What a track carries, as the init segment describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackConfig {
    /// H.264 with its parameter sets (NAL units without start codes).
    H264 {
        /// Sequence parameter set.
        sps: Vec<u8>,
        /// Picture parameter set.
        pps: Vec<u8>,
        /// Picture size in pixels.
        width: u16,
        /// Picture size in pixels.
        height: u16,
    },
    /// Opus at 48 kHz.
    Opus {
        /// Output channels.
        channels: u8,
    },
    /// AAC as the publisher sent it (RTMP), in its own sample rate.
    Aac {
        /// The `AudioSpecificConfig`.
        config: Vec<u8>,
        /// Its sample rate in Hz (the track's timescale).
        sample_rate: u32,
        /// Its channel count.
        channels: u8,
    },
}

impl TrackConfig {
    /// Ticks per second of the track's media time.
    pub fn timescale(&self) -> u32 {
        match self {
            TrackConfig::H264 { .. } => 90_000,
            TrackConfig::Opus { .. } => 48_000,
            TrackConfig::Aac { sample_rate, .. } => *sample_rate,
        }
    }

    /// The RFC 6381 codec string for the playlist's `CODECS`.
    pub fn codec_string(&self) -> String {
        match self {
            TrackConfig::H264 { sps, .. } => match sps.get(1..4) {
                Some(p) => format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2]),
                None => "avc1.42e01f".to_owned(),
            },
            TrackConfig::Opus { .. } => "opus".to_owned(),
            // The audio object type is the config's first five bits (2: AAC-LC).
            TrackConfig::Aac { config, .. } => {
                format!("mp4a.40.{}", config.first().map_or(2, |b| b >> 3))
            }
        }
    }

    fn is_video(&self) -> bool {
        matches!(self, TrackConfig::H264 { .. })
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale.
    pub composition_offset: i32,
    /// A sync sample (an IDR picture; every audio frame).
    pub sync: bool,
    /// The sample bytes (H.264: 4-byte length-prefixed NAL units).
    pub data: bytes::Bytes,
}

/// One track's run of samples in a fragment.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The track's 1-based id (its index in the init segment plus one).
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    /// The samples, in decode order.
    pub samples: &'a [Sample],
    /// Whether the track is video (per-sample flags and composition offsets are written).
    pub video: bool,
}

/// Writes one box: size, type, then whatever `body` appends.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes one full box (version and flags after the type).
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(out);
    });
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The init segment for `tracks` (track ids 1, 2, … in this order).
pub fn init_segment(tracks: &[TrackConfig]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32be(o, 0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            u32be(o, 0); // creation time
            u32be(o, 0); // modification time
            u32be(o, 1000); // timescale
            u32be(o, 0); // duration: unknown (live)
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            UNITY_MATRIX.iter().for_each(|&m| u32be(o, m));
            o.extend_from_slice(&[0; 24]);
            u32be(o, u32::try_from(tracks.len()).unwrap_or(0) + 1); // next track id
        });
        for (i, track) in tracks.iter().enumerate() {
            trak(o, u32::try_from(i).unwrap_or(0) + 1, track);
        }
        boxed(o, b"mvex", |o| {
            for i in 0..tracks.len() {
                full(o, b"trex", 0, 0, |o| {
                    u32be(o, u32::try_from(i).unwrap_or(0) + 1);
                    u32be(o, 1); // sample description index
                    u32be(o, 0);
                    u32be(o, 0);
                    u32be(o, 0);
                });
            }
        });
    });
    out
}

fn trak(o: &mut Vec<u8>, id: u32, track: &TrackConfig) {
    let (width, height) = match track {
        TrackConfig::H264 { width, height, .. } => (*width, *height),
        TrackConfig::Opus { .. } | TrackConfig::Aac { .. } => (0, 0),
    };
    boxed(o, b"trak", |o| {
        full(o, b"tkhd", 0, 0x3, |o| {
            u32be(o, 0);
            u32be(o, 0);
            u32be(o, id);
            u32be(o, 0); // reserved
            u32be(o, 0); // duration
            o.extend_from_slice(&[0; 8]);
            u16be(o, 0); // layer
            u16be(o, 0); // alternate group
            u16be(o, if track.is_video() { 0 } else { 0x0100 });
            u16be(o, 0);
            UNITY_MATRIX.iter().for_each(|&m| u32be(o, m));
            u32be(o, u32::from(width) << 16);
            u32be(o, u32::from(height) << 16);
        });
        boxed(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, track.timescale());
                u32be(o, 0);
                u16be(o, 0x55c4); // "und"
                u16be(o, 0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                u32be(o, 0);
                o.extend_from_slice(if track.is_video() { b"vide" } else { b"soun" });
                o.extend_from_slice(&[0; 12]);
                o.extend_from_slice(if track.is_video() {
                    b"Video\0".as_slice()
                } else {
                    b"Audio\0".as_slice()
                });
            });
            boxed(o, b"minf", |o| {
                if track.is_video() {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                } else {
                    full(o, b"smhd", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                }
                boxed(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        u32be(o, 1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        u32be(o, 1);
                        sample_entry(o, track);
                    });
                    full(o, b"stts", 0, 0, |o| u32be(o, 0));
                    full(o, b"stsc", 0, 0, |o| u32be(o, 0));
                    full(o, b"stsz", 0, 0, |o| {
                        u32be(o, 0);
                        u32be(o, 0);
                    });
                    full(o, b"stco", 0, 0, |o| u32be(o, 0));
                });
            });
        });
    });
}

fn sample_entry(o: &mut Vec<u8>, track: &TrackConfig) {
    match track {
        TrackConfig::H264 {
            sps,
            pps,
            width,
            height,
        } => boxed(o, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1); // data reference index
            o.extend_from_slice(&[0; 16]);
            u16be(o, *width);
            u16be(o, *height);
            u32be(o, 0x0048_0000); // 72 dpi
            u32be(o, 0x0048_0000);
            u32be(o, 0);
            u16be(o, 1); // frame count
            o.extend_from_slice(&[0; 32]); // compressor name
            u16be(o, 0x0018); // depth
            u16be(o, 0xffff); // pre-defined -1
            boxed(o, b"avcC", |o| {
                o.push(1);
                o.extend_from_slice(sps.get(1..4).unwrap_or(&[0x42, 0xe0, 0x1f]));
                o.push(0xff); // 4-byte NAL lengths
                o.push(0xe1); // one SPS
                u16be(o, u16::try_from(sps.len()).unwrap_or(0));
                o.extend_from_slice(sps);
                o.push(1); // one PPS
                u16be(o, u16::try_from(pps.len()).unwrap_or(0));
                o.extend_from_slice(pps);
            });
        }),
        TrackConfig::Opus { channels } => boxed(o, b"Opus", |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1);
            o.extend_from_slice(&[0; 8]);
            u16be(o, u16::from(*channels));
            u16be(o, 16); // sample size
            u32be(o, 0);
            u32be(o, 48_000 << 16);
            boxed(o, b"dOps", |o| {
                o.push(0); // version
                o.push(*channels);
                u16be(o, 0); // pre-skip: a live join starts mid-stream
                u32be(o, 48_000);
                u16be(o, 0); // output gain
                o.push(0); // channel mapping family
            });
        }),
        TrackConfig::Aac {
            config,
            sample_rate,
            channels,
        } => boxed(o, b"mp4a", |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1);
            o.extend_from_slice(&[0; 8]);
            u16be(o, u16::from(*channels));
            u16be(o, 16); // sample size
            u32be(o, 0);
            // 16.16 fixed point; rates above 65535 Hz are read from the esds instead.
            u32be(o, u32::from(u16::try_from(*sample_rate).unwrap_or(0)) << 16);
            full(o, b"esds", 0, 0, |o| esds(o, config));
        }),
    }
}

/// The MPEG-4 elementary stream descriptor (ISO/IEC 14496-1 §7.2.6.5) of an AAC track.
fn esds(o: &mut Vec<u8>, config: &[u8]) {
    // An `AudioSpecificConfig` is a few bytes: every length fits one byte.
    let config = &config[..config.len().min(64)];
    let specific = 2 + config.len();
    let decoder = 2 + 13 + specific;
    let sl = 3;
    o.push(0x03); // ES_Descriptor
    o.push((3 + decoder + sl) as u8);
    u16be(o, 0); // ES_ID
    o.push(0); // no dependency, URL or OCR stream
    o.push(0x04); // DecoderConfigDescriptor
    o.push((decoder - 2) as u8);
    o.push(0x40); // object type: MPEG-4 audio
    o.push(0x15); // stream type audio (5 << 2), upstream 0, reserved 1
    o.extend_from_slice(&[0; 3]); // buffer size
    u32be(o, 0); // max bitrate: unknown
    u32be(o, 0); // average bitrate: unknown
    o.push(0x05); // DecoderSpecificInfo
    o.push(config.len() as u8);
    o.extend_from_slice(config);
    o.push(0x06); // SLConfigDescriptor
    o.push(1);
    o.push(2); // predefined: MP4
}

const SYNC_FLAGS: u32 = 0x0200_0000; // depends on no other sample
const NON_SYNC_FLAGS: u32 = 0x0101_0000; // depends on others, not a sync sample

/// One media fragment: `moof` (one `traf` per run) and its `mdat`.
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Vec<u8> {
    let data_len: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut out = Vec::with_capacity(256 + 16 * runs.len() + data_len);
    let mut offset_fields = Vec::with_capacity(runs.len());
    boxed(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| u32be(o, sequence));
        for run in runs {
            boxed(o, b"traf", |o| {
                // default-base-is-moof: data offsets count from the start of the moof.
                full(o, b"tfhd", 0, 0x02_0000, |o| u32be(o, run.track_id));
                full(o, b"tfdt", 1, 0, |o| {
                    o.extend_from_slice(&run.base_decode_time.to_be_bytes());
                });
                let flags = if run.video { 0xf01 } else { 0x301 };
                full(o, b"trun", 1, flags, |o| {
                    u32be(o, u32::try_from(run.samples.len()).unwrap_or(0));
                    offset_fields.push(o.len());
                    u32be(o, 0); // data offset, patched below
                    for s in run.samples {
                        u32be(o, s.duration);
                        u32be(o, u32::try_from(s.data.len()).unwrap_or(u32::MAX));
                        if run.video {
                            u32be(o, if s.sync { SYNC_FLAGS } else { NON_SYNC_FLAGS });
                            o.extend_from_slice(&s.composition_offset.to_be_bytes());
                        }
                    }
                });
            });
        }
    });
    let mut data_offset = out.len() + 8;
    for (run, &field) in runs.iter().zip(&offset_fields) {
        let v = u32::try_from(data_offset).unwrap_or(u32::MAX);
        out[field..field + 4].copy_from_slice(&v.to_be_bytes());
        data_offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    boxed(&mut out, b"mdat", |o| {
        for s in runs.iter().flat_map(|r| r.samples.iter()) {
            o.extend_from_slice(&s.data);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (type, offset, size) of every box of `data` at one level.
    fn boxes(data: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned();
            assert!(size >= 8 && at + size <= data.len(), "box {kind} overruns");
            out.push((kind, at, size));
            at += size;
        }
        assert_eq!(at, data.len(), "trailing bytes");
        out
    }

    fn child<'a>(data: &'a [u8], path: &[&str]) -> &'a [u8] {
        let mut cur = data;
        for (depth, name) in path.iter().enumerate() {
            let skip = if depth == 0 { 0 } else { 8 };
            let inner = &cur[skip..];
            let (_, at, size) = boxes(inner)
                .into_iter()
                .find(|(k, ..)| k == name)
                .unwrap_or_else(|| panic!("no {name}"));
            cur = &inner[at..at + size];
        }
        cur
    }

    fn h264() -> TrackConfig {
        TrackConfig::H264 {
            sps: vec![0x67, 0x64, 0x00, 0x1f, 0xac],
            pps: vec![0x68, 0xee, 0x3c, 0x80],
            width: 640,
            height: 480,
        }
    }

    #[test]
    fn init_segment_has_both_sample_entries() {
        let init = init_segment(&[h264(), TrackConfig::Opus { channels: 2 }]);
        let top: Vec<String> = boxes(&init).into_iter().map(|b| b.0).collect();
        assert_eq!(top, ["ftyp", "moov"]);
        let moov = child(&init, &["moov"]);
        let kinds: Vec<String> = boxes(&moov[8..]).into_iter().map(|b| b.0).collect();
        assert_eq!(kinds, ["mvhd", "trak", "trak", "mvex"]);
        let avc1 = child(&init, &["moov", "trak", "mdia", "minf", "stbl"]);
        let stsd = child(avc1, &["stbl", "stsd"]);
        // stsd: header 8 + version/flags 4 + count 4, then the entry.
        assert_eq!(&stsd[20..24], b"avc1");
        let entry = &stsd[16..];
        assert_eq!(u16::from_be_bytes([entry[32], entry[33]]), 640);
        assert_eq!(u16::from_be_bytes([entry[34], entry[35]]), 480);
        let avcc = &entry[86..];
        assert_eq!(&avcc[4..8], b"avcC");
        assert_eq!(&avcc[8..13], &[1, 0x64, 0x00, 0x1f, 0xff]);
        assert_eq!(&avcc[13..16], &[0xe1, 0, 5]);
        assert!(init.windows(4).any(|w| w == b"Opus"));
        let dops = init.windows(4).position(|w| w == b"dOps").unwrap();
        assert_eq!(
            &init[dops + 4..dops + 15],
            &[0, 2, 0, 0, 0, 0, 0xbb, 0x80, 0, 0, 0]
        );
        assert_eq!(h264().codec_string(), "avc1.64001f");
    }

    #[test]
    fn aac_sample_entry_carries_the_audio_specific_config() {
        let aac = TrackConfig::Aac {
            config: vec![0x12, 0x10],
            sample_rate: 44_100,
            channels: 2,
        };
        assert_eq!(aac.codec_string(), "mp4a.40.2");
        assert_eq!(aac.timescale(), 44_100);
        let init = init_segment(&[h264(), aac]);
        let mp4a = init.windows(4).position(|w| w == b"mp4a").unwrap() - 4;
        let size = u32::from_be_bytes(init[mp4a..mp4a + 4].try_into().unwrap()) as usize;
        let entry = &init[mp4a..mp4a + size];
        assert_eq!(u16::from_be_bytes([entry[24], entry[25]]), 2, "channels");
        assert_eq!(&entry[32..34], &44_100u16.to_be_bytes(), "rate");
        let esds = &entry[36..];
        assert_eq!(&esds[4..8], b"esds");
        assert_eq!(
            u32::from_be_bytes(esds[0..4].try_into().unwrap()) as usize,
            esds.len()
        );
        // ES_Descriptor(DecoderConfigDescriptor(MPEG-4 audio, DecoderSpecificInfo(ASC)), SL).
        assert_eq!(
            &esds[12..],
            &[
                0x03, 25, 0, 0, 0, 0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05, 2,
                0x12, 0x10, 0x06, 1, 2
            ]
        );
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_samples() {
        let video = [
            Sample {
                duration: 3000,
                composition_offset: 0,
                sync: true,
                data: bytes::Bytes::from_static(b"KEYFRAME"),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                sync: false,
                data: bytes::Bytes::from_static(b"delta"),
            },
        ];
        let audio = [Sample {
            duration: 960,
            composition_offset: 0,
            sync: true,
            data: bytes::Bytes::from_static(b"opus"),
        }];
        let frag = fragment(
            7,
            &[
                Run {
                    track_id: 1,
                    base_decode_time: 90_000,
                    samples: &video,
                    video: true,
                },
                Run {
                    track_id: 2,
                    base_decode_time: 1 << 33,
                    samples: &audio,
                    video: false,
                },
            ],
        );
        let top = boxes(&frag);
        assert_eq!(top[0].0, "moof");
        assert_eq!(top[1].0, "mdat");
        let moof = child(&frag, &["moof"]);
        let mfhd = child(moof, &["moof", "mfhd"]);
        assert_eq!(&mfhd[12..16], &7u32.to_be_bytes());
        let trafs: Vec<_> = boxes(&moof[8..])
            .into_iter()
            .filter(|b| b.0 == "traf")
            .collect();
        assert_eq!(trafs.len(), 2);
        let mut payloads = Vec::new();
        for (_, at, size) in trafs {
            let traf = &moof[8 + at..8 + at + size];
            let tfdt = child(traf, &["traf", "tfdt"]);
            assert_eq!(tfdt[8], 1, "64-bit decode time");
            let trun = child(traf, &["traf", "trun"]);
            assert_eq!(trun[8], 1, "version 1: signed composition offsets");
            let count = u32::from_be_bytes(trun[12..16].try_into().unwrap()) as usize;
            let offset = u32::from_be_bytes(trun[16..20].try_into().unwrap()) as usize;
            let video = trun[10] & 0x04 != 0;
            let per = if video { 16 } else { 8 };
            let mut at = offset;
            let mut got = Vec::new();
            for i in 0..count {
                let e = &trun[20 + i * per..];
                let size = u32::from_be_bytes(e[4..8].try_into().unwrap()) as usize;
                got.push(frag[at..at + size].to_vec());
                at += size;
                if video && i == 1 {
                    assert_eq!(&e[8..12], &NON_SYNC_FLAGS.to_be_bytes());
                    assert_eq!(i32::from_be_bytes(e[12..16].try_into().unwrap()), -3000);
                }
            }
            payloads.push(got);
        }
        assert_eq!(payloads[0], [b"KEYFRAME".to_vec(), b"delta".to_vec()]);
        assert_eq!(payloads[1], [b"opus".to_vec()]);
    }
}
