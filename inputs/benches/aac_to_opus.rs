//! What RTMP audio costs the edge: AAC-LC decoded, resampled to 48 kHz and encoded to Opus,
//! per second of audio, as a share of one core. The edge does this for an RTMP stream only
//! while it has viewers (an unwatched stream's AAC frames are not decoded), so this is the
//! cost of a watched stream; an unwatched one costs ~0.
//!
//! `cargo bench -p waveguide-inputs --bench aac_to_opus` (fixtures: ffmpeg-made sine tones in
//! `src/rtmp/testdata/`, looped to a minute of audio with continuous timestamps).

use bytes::Bytes;
use std::time::{Duration, Instant};
use waveguide_inputs::rtmp::audio::AudioTranscoder;
use waveguide_inputs::rtmp::flv::{AudioTag, file_tags, parse_audio};

/// Seconds of audio transcoded per run.
const AUDIO_SECS: u32 = 60;
/// Runs per fixture; the fastest is reported (the least disturbed by the rest of the host).
const RUNS: usize = 5;

struct Fixture {
    name: &'static str,
    file: &'static [u8],
}

const FIXTURES: [Fixture; 2] = [
    Fixture {
        name: "AAC-LC 44.1 kHz stereo 64 kbps",
        file: include_bytes!("../src/rtmp/testdata/tone-44k-stereo.flv"),
    },
    Fixture {
        name: "AAC-LC 48 kHz mono 48 kbps",
        file: include_bytes!("../src/rtmp/testdata/tone-48k-mono.flv"),
    },
];

/// The AudioSpecificConfig, the raw frames with their timestamps, and the file's duration.
fn aac_of(file: &[u8]) -> (Bytes, Vec<(u32, Bytes)>, u32) {
    let mut asc = None;
    let mut frames = Vec::new();
    for (kind, ms, body) in file_tags(file).expect("a whole FLV fixture") {
        if kind != 8 {
            continue;
        }
        match parse_audio(&body).expect("AAC audio tags") {
            AudioTag::SequenceHeader(c) => asc = Some(c),
            AudioTag::Frame(f) => frames.push((ms, f)),
        }
    }
    let step = frames
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .min()
        .unwrap_or(21);
    let span = frames.last().map_or(0, |f| f.0) + step;
    (asc.expect("an AAC sequence header"), frames, span)
}

/// Transcodes `AUDIO_SECS` of the fixture once; the time it took and the Opus packets made.
fn run(asc: &[u8], frames: &[(u32, Bytes)], span_ms: u32) -> (Duration, usize) {
    let mut transcoder = AudioTranscoder::new(asc, 0x1234, 0).expect("the fixture's AAC config");
    let mut out = Vec::new();
    let mut packets = 0;
    let loops = (AUDIO_SECS * 1000).div_ceil(span_ms);
    let started = Instant::now();
    for i in 0..loops {
        for (ms, frame) in frames {
            transcoder
                .push(i * span_ms + ms, frame, &mut out)
                .expect("transcode");
            packets += out.len();
            out.clear();
        }
    }
    (started.elapsed(), packets)
}

fn main() {
    println!(
        "AAC → Opus (decode, resample to 48 kHz, encode 20 ms frames), {AUDIO_SECS} s of audio, best of {RUNS}:"
    );
    for fixture in &FIXTURES {
        let (asc, frames, span) = aac_of(fixture.file);
        let loops = (AUDIO_SECS * 1000).div_ceil(span);
        let audio = Duration::from_millis(u64::from(loops * span));
        let (best, packets) = (0..RUNS)
            .map(|_| run(&asc, &frames, span))
            .min_by_key(|(d, _)| *d)
            .expect("RUNS > 0");
        let share = best.as_secs_f64() / audio.as_secs_f64() * 100.0;
        println!(
            "  {:<32} {:>7.1} ms per {:.0} s of audio = {:.2} % of one core per watched stream ({} Opus packets)",
            fixture.name,
            best.as_secs_f64() * 1000.0,
            audio.as_secs_f64(),
            share,
            packets
        );
    }
}
