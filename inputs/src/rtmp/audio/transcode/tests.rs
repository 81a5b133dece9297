use super::*;
use crate::rtmp::fixtures::{self, TONE_44K_STEREO, TONE_48K_MONO};
use crate::rtmp::flv::{AudioTag, parse_audio};
use std::time::Instant;

/// The AudioSpecificConfig and the raw frames (with timestamps) of an audio-only FLV.
fn aac_of(file: &[u8]) -> (Bytes, Vec<(u32, Bytes)>) {
    let mut asc = None;
    let mut frames = Vec::new();
    for (ty, ts, body) in fixtures::tags(file) {
        if ty != 8 {
            continue;
        }
        match parse_audio(&body).unwrap() {
            AudioTag::SequenceHeader(c) => asc = Some(c),
            AudioTag::Frame(f) => frames.push((ts, f)),
        }
    }
    (asc.expect("sequence header"), frames)
}

/// Amplitude of `freq` in channel `ch` of interleaved stereo at 48 kHz.
fn amplitude(samples: &[f32], ch: usize, freq: f64) -> f64 {
    let frames = samples.len() / 2;
    let (mut re, mut im) = (0.0, 0.0);
    for i in 0..frames {
        let w = 2.0 * std::f64::consts::PI * freq * i as f64 / 48_000.0;
        re += f64::from(samples[2 * i + ch]) * w.cos();
        im += f64::from(samples[2 * i + ch]) * w.sin();
    }
    2.0 * (re * re + im * im).sqrt() / frames as f64
}

fn decode_opus(packets: &[rtp::Packet]) -> Vec<f32> {
    let mut dec = opus_rs::OpusDecoder::new(48_000, 2).unwrap();
    let mut all = Vec::new();
    let mut pcm = vec![0f32; 960 * 2];
    for p in packets {
        let n = dec.decode(&p.payload, 960, &mut pcm).unwrap();
        all.extend_from_slice(&pcm[..n * 2]);
    }
    all
}

fn check_timeline(packets: &[rtp::Packet]) {
    for w in packets.windows(2) {
        assert_eq!(
            w[1].header.timestamp.wrapping_sub(w[0].header.timestamp),
            960
        );
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1)
        );
    }
    assert!(packets[0].header.marker);
    assert!(packets[1..].iter().all(|p| !p.header.marker));
}

#[test]
fn aac_44k_stereo_tone_comes_out_as_48k_opus_at_the_same_pitch() {
    let (asc, frames) = aac_of(TONE_44K_STEREO);
    let mut t = AudioTranscoder::new(&asc, 7, 0).unwrap();
    assert_eq!(t.input().sample_rate, 44_100);
    let mut packets = Vec::new();
    for (ts, f) in &frames {
        t.push(*ts, f, &mut packets).unwrap();
    }
    assert_eq!(t.concealed_frames(), 0);
    // 1 s of tone plus the encoder's priming and padding frames, in 20 ms packets.
    let expected = frames.len() * 1024 * 48_000 / 44_100 / 960;
    assert!(
        packets.len().abs_diff(expected) <= 1,
        "{} packets, {expected} expected",
        packets.len()
    );
    check_timeline(&packets);
    assert_eq!(packets[0].header.timestamp, frames[0].0 * 48);
    let pcm = decode_opus(&packets);
    // Skip the codec start-up; look at 0.5 s (220 periods of 440 Hz).
    let steady = &pcm[2 * 9_600..2 * 33_600];
    let tone = amplitude(steady, 0, 440.0);
    let other = amplitude(steady, 0, 1_000.0);
    assert!(tone > 0.08, "440 Hz at {tone}");
    assert!(other < tone / 50.0, "1 kHz at {other} vs {tone}");
    assert!(amplitude(steady, 1, 440.0) > 0.08, "right channel");
}

#[test]
fn aac_48k_mono_is_duplicated_to_stereo_without_resampling() {
    let (asc, frames) = aac_of(TONE_48K_MONO);
    let mut t = AudioTranscoder::new(&asc, 7, 0).unwrap();
    assert!(t.resampler.is_none());
    let mut packets = Vec::new();
    for (ts, f) in &frames {
        t.push(*ts, f, &mut packets).unwrap();
    }
    check_timeline(&packets);
    let pcm = decode_opus(&packets);
    let steady = &pcm[2 * 4_800..2 * 19_200];
    let left = amplitude(steady, 0, 1_000.0);
    let right = amplitude(steady, 1, 1_000.0);
    assert!(left > 0.08 && right > 0.08, "{left} {right}");
    assert!((left - right).abs() < 0.02, "{left} {right}");
}

#[test]
fn timestamps_do_not_drift_and_gaps_reanchor() {
    let (asc, frames) = aac_of(TONE_44K_STEREO);
    let mut t = AudioTranscoder::new(&asc, 7, 0).unwrap();
    let mut packets = Vec::new();
    // 30 s of frames with the publisher's millisecond-rounded timestamps.
    let n = 30 * 44_100 / 1024;
    for i in 0..n {
        let ms = (i as u64 * 1024 * 1000 / 44_100) as u32 + 1_000;
        let (_, f) = &frames[i % frames.len()];
        t.push(ms, f, &mut packets).unwrap();
    }
    check_timeline(&packets);
    let produced = packets.len() as u64 * 960;
    let expected = n as u64 * 1024 * 48_000 / 44_100;
    assert!(
        produced.abs_diff(expected) < 960 * 2,
        "{produced} vs {expected}"
    );

    // The publisher's clock jumps 2 s ahead: audio was missing, the timestamps follow.
    let before = packets.len();
    let last_ts = packets[before - 1].header.timestamp;
    let ms = (n as u64 * 1024 * 1000 / 44_100) as u32 + 3_000;
    for i in 0..10 {
        t.push(ms + i * 23, &frames[0].1, &mut packets).unwrap();
    }
    let first_after = &packets[before];
    assert!(first_after.header.marker);
    let jump = first_after.header.timestamp.wrapping_sub(last_ts);
    assert!((94_000..=98_000).contains(&jump), "jump {jump}");
}

/// The transcode's CPU cost per stream. Run it optimized:
/// `cargo test --release -p waveguide-inputs transcode_cost -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run in release"]
fn transcode_cost() {
    let (asc, frames) = aac_of(TONE_44K_STEREO);
    let mut t = AudioTranscoder::new(&asc, 7, 0).unwrap();
    let mut packets = Vec::new();
    let seconds = 60;
    let n = seconds * 44_100 / 1024;
    let started = Instant::now();
    for i in 0..n {
        let ms = (i as u64 * 1024 * 1000 / 44_100) as u32;
        t.push(ms, &frames[i % frames.len()].1, &mut packets)
            .unwrap();
        packets.clear();
    }
    let spent = started.elapsed();
    println!(
        "transcode: {seconds} s of 44.1 kHz stereo AAC in {spent:?} = {:.2} % of one core per stream",
        spent.as_secs_f64() / seconds as f64 * 100.0
    );
    let (mut dec_t, mut res_t, mut enc_t) = (0.0, 0.0, 0.0);
    let mut dec = AacDecoder::new(&asc).unwrap();
    let mut r = Resampler::new(44_100, 48_000);
    let mut e = OpusEncoder::new().unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        a.clear();
        let s = Instant::now();
        dec.decode(&frames[i % frames.len()].1, &mut a);
        dec_t += s.elapsed().as_secs_f64();
        let s = Instant::now();
        r.process(&a, &mut b);
        res_t += s.elapsed().as_secs_f64();
        let s = Instant::now();
        let mut done = 0;
        while b.len() - done >= FRAME_LEN {
            e.encode(&b[done..done + FRAME_LEN]).unwrap();
            done += FRAME_LEN;
        }
        b.drain(..done);
        enc_t += s.elapsed().as_secs_f64();
    }
    let pct = |x: f64| x / seconds as f64 * 100.0;
    println!(
        "  AAC decode {:.2} %, resample {:.2} %, Opus encode {:.2} %",
        pct(dec_t),
        pct(res_t),
        pct(enc_t)
    );
}
