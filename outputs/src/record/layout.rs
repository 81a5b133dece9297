//! Reading back what the recorder wrote: how much of a file is whole (up to its last complete
//! fragment) and how long its media runs. Start-up repair and the REST listing use it.
//!
//! Only box and element headers are read (and each `moof`), never the media: a 600 s file is
//! a few hundred small reads.

use super::webm::id;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// What a recording file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The file's length.
    pub len: u64,
    /// The end of its last complete fragment; 0 when not even the header is whole.
    pub whole: u64,
    /// Seconds of media in the whole fragments.
    pub duration: f64,
}

/// MP4 timescales of the recorder's tracks: video (track 1) 90 kHz, Opus (track 2) 48 kHz.
fn timescale(track: u32) -> f64 {
    if track == 2 { 48_000.0 } else { 90_000.0 }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The media end (seconds) of one `moof`'s runs: the latest `tfdt` + sample durations.
fn moof_end(moof: &[u8]) -> Option<f64> {
    let mut end: f64 = 0.0;
    let mut at = 0;
    while at + 8 <= moof.len() {
        let size = be32(moof, at)? as usize;
        if size < 8 || at + size > moof.len() {
            return None;
        }
        if &moof[at + 4..at + 8] == b"traf" {
            let traf = &moof[at + 8..at + size];
            let (mut track, mut base, mut total) = (1u32, 0u64, 0u64);
            let mut t = 0;
            while t + 8 <= traf.len() {
                let bsize = be32(traf, t)? as usize;
                if bsize < 12 || t + bsize > traf.len() {
                    return None;
                }
                let b = &traf[t..t + bsize];
                match &b[4..8] {
                    b"tfhd" => track = be32(b, 12)?,
                    b"tfdt" => {
                        base = if b[8] == 1 {
                            be64(b, 12)?
                        } else {
                            u64::from(be32(b, 12)?)
                        }
                    }
                    b"trun" => {
                        let flags = be32(b, 8)? & 0x00ff_ffff;
                        let count = be32(b, 12)? as usize;
                        let mut p = 16;
                        if flags & 0x001 != 0 {
                            p += 4;
                        }
                        if flags & 0x004 != 0 {
                            p += 4;
                        }
                        let per = [0x100, 0x200, 0x400, 0x800]
                            .iter()
                            .filter(|&&f| flags & f != 0)
                            .count()
                            * 4;
                        for i in 0..count {
                            if flags & 0x100 != 0 {
                                total += u64::from(be32(b, p + i * per)?);
                            }
                        }
                    }
                    _ => {}
                }
                t += bsize;
            }
            end = end.max((base + total) as f64 / timescale(track));
        }
        at += size;
    }
    Some(end)
}

/// The layout of a fragmented MP4 recording: `ftyp`, `moov`, then `moof` + `mdat` pairs.
pub fn mp4(file: &mut File) -> io::Result<Layout> {
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    r.seek(SeekFrom::Start(0))?;
    let (mut at, mut whole, mut duration) = (0u64, 0u64, 0.0f64);
    let mut moov = false;
    let mut pending_end: Option<f64> = None;
    while at + 8 <= len {
        let mut head = [0u8; 8];
        r.read_exact(&mut head)?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let mut header = 8;
        if size == 1 {
            let mut large = [0u8; 8];
            if at + 16 > len {
                break;
            }
            r.read_exact(&mut large)?;
            size = u64::from_be_bytes(large);
            header = 16;
        }
        if size < header || at + size > len {
            break;
        }
        let kind = [head[4], head[5], head[6], head[7]];
        match &kind {
            b"moov" => {
                moov = true;
                whole = at + size;
                r.seek_relative((size - header) as i64)?;
            }
            b"moof" => {
                let mut body = vec![0u8; (size - header) as usize];
                r.read_exact(&mut body)?;
                pending_end = moof_end(&body);
            }
            b"mdat" => {
                if moov && let Some(end) = pending_end.take() {
                    whole = at + size;
                    duration = duration.max(end);
                }
                r.seek_relative((size - header) as i64)?;
            }
            _ => r.seek_relative((size - header) as i64)?,
        }
        at += size;
    }
    Ok(Layout {
        len,
        whole,
        duration,
    })
}

/// An EBML id (its marker bits kept, as ids are written) or a size (marker removed).
fn vint(r: &mut impl Read, keep_marker: bool) -> io::Result<Option<(u64, u64)>> {
    let mut first = [0u8; 1];
    if r.read(&mut first)? == 0 {
        return Ok(None);
    }
    let len = first[0].leading_zeros() as usize + 1;
    if len > 8 {
        return Ok(None);
    }
    let mut rest = [0u8; 8];
    r.read_exact(&mut rest[..len - 1])?;
    let mut v = if keep_marker {
        u64::from(first[0])
    } else {
        u64::from(first[0]) & (0xff >> len)
    };
    let mut all_ones = v == (0xff >> len);
    for &b in &rest[..len - 1] {
        v = (v << 8) | u64::from(b);
        all_ones &= b == 0xff;
    }
    // The all-ones size is "unknown"; returned as u64::MAX.
    if !keep_marker && all_ones {
        v = u64::MAX;
    }
    Ok(Some((v, len as u64)))
}

/// The layout of a WebM recording: EBML header, Segment (unknown size), Info, Tracks, then
/// Clusters of unknown size.
pub fn webm(file: &mut File) -> io::Result<Layout> {
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    r.seek(SeekFrom::Start(0))?;
    let mut at = 0u64;
    let mut whole = 0u64;
    let mut duration_ms = 0u64;
    // Cluster being read: its start, its timestamp and its latest block (ms).
    let mut cluster: Option<(u64, u64, u64)> = None;
    let mut tracks_seen = false;
    loop {
        let start = at;
        let Ok(Some((element, id_len))) = vint(&mut r, true) else {
            break;
        };
        let Ok(Some((size, size_len))) = vint(&mut r, false) else {
            break;
        };
        at += id_len + size_len;
        let element = element as u32;
        if element == id::SEGMENT {
            continue; // its children follow
        }
        if element == id::CLUSTER {
            if let Some((_, ts, last)) = cluster.take() {
                whole = start;
                duration_ms = duration_ms.max(ts + last);
            }
            cluster = Some((start, 0, 0));
            continue;
        }
        if size == u64::MAX || at + size > len {
            break;
        }
        match element {
            id::TIMESTAMP if cluster.is_some() => {
                let mut b = vec![0u8; size as usize];
                r.read_exact(&mut b)?;
                let ts = b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x));
                if let Some(c) = &mut cluster {
                    c.1 = ts;
                }
            }
            id::SIMPLE_BLOCK if size >= 4 => {
                let mut b = [0u8; 4];
                r.read_exact(&mut b)?;
                let relative = i16::from_be_bytes([b[1], b[2]]);
                if let Some(c) = &mut cluster {
                    c.2 = c.2.max(u64::try_from(relative).unwrap_or(0));
                }
                r.seek_relative((size - 4) as i64)?;
            }
            _ => r.seek_relative(size as i64)?,
        }
        at += size;
        if element == id::TRACKS {
            tracks_seen = true;
            whole = at;
        }
    }
    if let Some((_, ts, last)) = cluster.filter(|_| at == len) {
        // The file ends exactly after a complete child of the last cluster.
        whole = len;
        duration_ms = duration_ms.max(ts + last);
    }
    if !tracks_seen {
        whole = 0;
    }
    Ok(Layout {
        len,
        whole,
        duration: duration_ms as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::super::webm::{WebmTracks, cluster, header};
    use super::*;
    use crate::hls::fmp4::{self, Run, Sample, TrackConfig};
    use std::io::Write;

    fn temp(name: &str, bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("wg-layout-{}-{name}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        File::open(&path).unwrap()
    }

    fn fragment(seq: u32, base: u64) -> Vec<u8> {
        let s = [Sample {
            duration: 90_000,
            composition_offset: 0,
            sync: true,
            data: bytes::Bytes::from_static(b"picture"),
        }];
        fmp4::fragment(
            seq,
            &[Run {
                track_id: 1,
                base_decode_time: base,
                samples: &s,
                video: true,
            }],
        )
    }

    #[test]
    fn mp4_whole_up_to_the_last_complete_fragment() {
        let init = fmp4::init_segment(&[TrackConfig::Opus { channels: 2 }]);
        let mut file = init.clone();
        file.extend(fragment(1, 0));
        file.extend(fragment(2, 90_000));
        let full = file.len() as u64;
        let l = mp4(&mut temp("full.mp4", &file)).unwrap();
        assert_eq!((l.len, l.whole, l.duration), (full, full, 2.0));
        // Cut inside the third fragment's moof, then inside its mdat.
        let third = fragment(3, 180_000);
        for cut in [20, third.len() - 3] {
            let mut torn = file.clone();
            torn.extend(&third[..cut]);
            let l = mp4(&mut temp("torn.mp4", &torn)).unwrap();
            assert_eq!((l.whole, l.duration), (full, 2.0), "cut at {cut}");
        }
        let l = mp4(&mut temp("init.mp4", &init[..init.len() - 1])).unwrap();
        assert_eq!(l.whole, 0);
    }

    #[test]
    fn webm_whole_up_to_the_last_complete_cluster() {
        let mut file = header(&WebmTracks {
            width: 64,
            height: 48,
            audio_channels: None,
        });
        let head = file.len() as u64;
        let l = webm(&mut temp("head.webm", &file)).unwrap();
        assert_eq!(l.whole, head);
        file.extend(cluster(&[(1, 0, true, b"k"), (1, 500, false, b"d")]));
        file.extend(cluster(&[(1, 1000, true, b"k"), (1, 1500, false, b"d")]));
        let full = file.len() as u64;
        let l = webm(&mut temp("full.webm", &file)).unwrap();
        assert_eq!((l.whole, l.duration), (full, 1.5));
        let mut torn = file.clone();
        let next = cluster(&[(1, 2000, true, b"key"), (1, 2500, false, b"delta")]);
        torn.extend(&next[..next.len() - 2]);
        let l = webm(&mut temp("torn.webm", &torn)).unwrap();
        assert_eq!((l.whole, l.duration), (full, 1.5));
    }
}
