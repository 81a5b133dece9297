//! Sample-rate conversion of interleaved stereo by an exact rational ratio (44.1 kHz → 48 kHz
//! is 160/147), with a windowed-sinc polyphase filter.
//!
//! The ratio is kept as integers, so over any length of input the output has exactly
//! `input × L / M` frames: no drift, however long the stream runs. Owns no clock.

/// Taps per polyphase branch: ≈ 80 dB stop band from 22 kHz with the passband flat to
/// 17 kHz (AAC encoders low-pass below that at streaming bitrates).
const TAPS: usize = 48;
/// Kaiser window shape (≈ 80 dB side lobes).
const KAISER_BETA: f64 = 8.0;
/// Cut-off as a fraction of the lower Nyquist frequency.
const CUTOFF: f64 = 0.885;

/// A fixed-ratio stereo resampler.
#[derive(Debug)]
pub struct Resampler {
    /// Interpolation factor (output rate / gcd).
    up: usize,
    /// Decimation factor (input rate / gcd).
    down: usize,
    /// `up` branches of `TAPS` coefficients, each stored reversed so a branch is a dot
    /// product with the last `TAPS` input frames in their natural order.
    branches: Vec<[f32; TAPS]>,
    /// Input history per channel: the last `TAPS - 1` frames plus what is not consumed yet.
    left: Vec<f32>,
    right: Vec<f32>,
    /// Index in `left`/`right` of the newest input frame the next output uses.
    next_input: usize,
    /// Phase of the next output within the current input frame (0..up).
    phase: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Zeroth-order modified Bessel function of the first kind (for the Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A resampler from `input_rate` to `output_rate`.
    pub fn new(input_rate: u32, output_rate: u32) -> Self {
        let g = gcd(input_rate as usize, output_rate as usize).max(1);
        let up = (output_rate as usize / g).max(1);
        let down = (input_rate as usize / g).max(1);
        // The prototype low-pass runs at input_rate × up; its cut-off is at the lower of the
        // two Nyquist frequencies.
        let len = up * TAPS;
        let fc = CUTOFF / (2.0 * up.max(down) as f64);
        let centre = (len - 1) as f64 / 2.0;
        let norm = bessel_i0(KAISER_BETA);
        let prototype: Vec<f64> = (0..len)
            .map(|n| {
                let x = n as f64 - centre;
                let sinc = if x == 0.0 {
                    2.0 * fc
                } else {
                    (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
                };
                let r = 2.0 * n as f64 / (len - 1) as f64 - 1.0;
                let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / norm;
                // Gain `up` restores the level lost by zero-stuffing.
                sinc * window * up as f64
            })
            .collect();
        let branches = (0..up)
            .map(|p| {
                let mut b = [0f32; TAPS];
                for (k, slot) in b.iter_mut().rev().enumerate() {
                    *slot = prototype[p + k * up] as f32;
                }
                b
            })
            .collect();
        Self {
            up,
            down,
            branches,
            left: vec![0.0; TAPS - 1],
            right: vec![0.0; TAPS - 1],
            next_input: TAPS - 1,
            phase: 0,
        }
    }

    /// Whether input and output rates are the same (the caller may skip the resampler).
    pub fn is_identity(&self) -> bool {
        self.up == 1 && self.down == 1
    }

    /// Resamples interleaved stereo `input`, appending interleaved stereo to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        for frame in input.chunks_exact(2) {
            self.left.push(frame[0]);
            self.right.push(frame[1]);
        }
        while self.next_input < self.left.len() {
            let start = self.next_input + 1 - TAPS;
            let taps = &self.branches[self.phase];
            let l = &self.left[start..=self.next_input];
            let r = &self.right[start..=self.next_input];
            let (mut yl, mut yr) = (0f32, 0f32);
            for k in 0..TAPS {
                yl += taps[k] * l[k];
                yr += taps[k] * r[k];
            }
            out.push(yl);
            out.push(yr);
            self.phase += self.down;
            self.next_input += self.phase / self.up;
            self.phase %= self.up;
        }
        // Keep the history the next outputs need.
        let keep_from = (self.next_input + 1)
            .saturating_sub(TAPS)
            .min(self.left.len());
        self.left.drain(..keep_from);
        self.right.drain(..keep_from);
        self.next_input -= keep_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f64, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() * 0.5;
                [v as f32, (v * 0.5) as f32]
            })
            .collect()
    }

    /// Amplitude of `freq` in channel `ch` (single-bin DFT over whole periods).
    fn amplitude(samples: &[f32], ch: usize, rate: u32, freq: f64) -> f64 {
        let frames = samples.len() / 2;
        let (mut re, mut im) = (0.0, 0.0);
        for i in 0..frames {
            let w = 2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64;
            re += f64::from(samples[2 * i + ch]) * w.cos();
            im += f64::from(samples[2 * i + ch]) * w.sin();
        }
        2.0 * (re * re + im * im).sqrt() / frames as f64
    }

    #[test]
    fn exact_frame_count_over_many_calls() {
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        // AAC-sized pieces for ten seconds: the count is exact up to the filter's history.
        let piece = tone(44_100, 440.0, 1024);
        for _ in 0..431 {
            r.process(&piece, &mut out);
        }
        let input_frames = 431 * 1024;
        let expected = input_frames * 160 / 147;
        let got = out.len() / 2;
        assert!(
            got.abs_diff(expected) <= TAPS,
            "got {got} frames, expected {expected}"
        );
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_level() {
        for (from, to) in [(44_100, 48_000), (32_000, 48_000), (96_000, 48_000)] {
            let mut r = Resampler::new(from, to);
            let mut out = Vec::new();
            for piece in tone(from, 1000.0, from as usize).chunks(2048) {
                r.process(piece, &mut out);
            }
            // Skip the filter's start-up.
            let steady = &out[2 * TAPS * 2..2 * (to as usize / 2)];
            let a = amplitude(steady, 0, to, 1000.0);
            let b = amplitude(steady, 1, to, 1000.0);
            assert!((a - 0.5).abs() < 0.01, "{from}->{to}: left {a}");
            assert!((b - 0.25).abs() < 0.01, "{from}->{to}: right {b}");
            let off = amplitude(steady, 0, to, 1100.0);
            assert!(off < 0.01, "{from}->{to}: leakage {off}");
        }
    }

    #[test]
    fn images_are_suppressed() {
        // Upsampling 44.1 kHz makes an image of a 21.5 kHz tone at 44.1 - 21.5 = 22.6 kHz,
        // inside the 48 kHz band; the filter must remove it.
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        r.process(&tone(44_100, 21_500.0, 44_100), &mut out);
        let steady = &out[2 * TAPS * 2..2 * 48_000 - 2 * TAPS * 2];
        let image = amplitude(steady, 0, 48_000, 22_600.0);
        assert!(image < 0.5 * 1e-3, "image at {image}");
    }
}
