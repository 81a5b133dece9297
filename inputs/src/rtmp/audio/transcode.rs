//! AAC frames in, Opus RTP packets out: decode, resample to 48 kHz stereo, cut into 20 ms
//! frames, encode, and stamp each packet with a 48 kHz timestamp counted in samples.
//!
//! Timestamps are anchored to the publisher's first audio timestamp (in ms × 48, the same
//! mapping the video uses at 90 kHz) and then advance by exactly 960 per packet, so an hour of
//! audio is an hour of timestamps. Only a forward jump of the publisher's own clock (a gap in
//! its audio) re-anchors them, so the audio stays in step with the video after the gap.

use super::aac::{self, AacDecoder};
use super::opus::{self, OpusEncoder};
use super::resample::Resampler;
use super::{AudioError, OUTPUT_RATE};
use bytes::Bytes;
use rtc::rtp;

/// RTP payload type on our side (rewritten per viewer).
pub const PAYLOAD_TYPE: u8 = 111;
/// A publisher timestamp this far ahead of the samples received means audio was missing.
const GAP_MS: i64 = 250;
/// Interleaved samples in one Opus frame.
const FRAME_LEN: usize = opus::FRAME_SAMPLES * 2;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Publisher time (ms, unwrapped) of the first input sample since the anchor.
    start_ms: i64,
    /// RTP timestamp of that sample.
    rtp_base: u32,
    /// Input frames (per channel, at the input rate) decoded since the anchor.
    frames_in: u64,
    /// 48 kHz frames encoded since the anchor.
    frames_out: u64,
}

/// The audio pipeline of one publisher.
#[derive(Debug)]
pub struct AudioTranscoder {
    decoder: AacDecoder,
    resampler: Option<Resampler>,
    encoder: OpusEncoder,
    input_rate: u32,
    decoded: Vec<f32>,
    pcm: Vec<f32>,
    ssrc: u32,
    sequence: u16,
    anchor: Option<Anchor>,
    last_ms: Option<(u32, i64)>,
    concealed: u64,
}

impl AudioTranscoder {
    /// A pipeline for the AAC stream described by `asc`, sending with `ssrc`.
    pub fn new(asc: &[u8], ssrc: u32, first_sequence: u16) -> Result<Self, AudioError> {
        let decoder = AacDecoder::new(asc)?;
        let input_rate = decoder.config().sample_rate;
        let resampler = Some(Resampler::new(input_rate, OUTPUT_RATE)).filter(|r| !r.is_identity());
        Ok(Self {
            decoder,
            resampler,
            encoder: OpusEncoder::new()?,
            input_rate,
            decoded: Vec::with_capacity(aac::FRAME_SAMPLES * 2),
            pcm: Vec::with_capacity(FRAME_LEN * 3),
            ssrc,
            sequence: first_sequence,
            anchor: None,
            last_ms: None,
            concealed: 0,
        })
    }

    /// The AAC configuration being decoded.
    pub fn input(&self) -> aac::AacConfig {
        self.decoder.config()
    }

    /// Frames that did not decode and were replaced by silence.
    pub fn concealed_frames(&self) -> u64 {
        self.concealed
    }

    fn unwrap_ms(&mut self, ms: u32) -> i64 {
        let t = match self.last_ms {
            None => i64::from(ms),
            Some((last, last_t)) => last_t + i64::from(ms.wrapping_sub(last) as i32),
        };
        self.last_ms = Some((ms, t));
        t
    }

    /// Transcodes one raw AAC frame with publisher timestamp `ms`, appending the finished Opus
    /// packets to `out`.
    pub fn push(
        &mut self,
        ms: u32,
        frame: &[u8],
        out: &mut Vec<rtp::Packet>,
    ) -> Result<(), AudioError> {
        let t = self.unwrap_ms(ms);
        let rate = u64::from(self.input_rate);
        let resync = match self.anchor {
            None => true,
            Some(a) => {
                let expected = a.start_ms + (a.frames_in * 1000 / rate) as i64;
                t - expected > GAP_MS
            }
        };
        if resync {
            self.pcm.clear();
            self.anchor = Some(Anchor {
                start_ms: t,
                // The RTP clock wraps at 32 bits by definition.
                rtp_base: (t as u64).wrapping_mul(u64::from(OUTPUT_RATE / 1000)) as u32,
                frames_in: 0,
                frames_out: 0,
            });
        }
        self.decoded.clear();
        if self.decoder.decode(frame, &mut self.decoded) == aac::Decoded::Concealed {
            self.concealed += 1;
        }
        match &mut self.resampler {
            Some(r) => r.process(&self.decoded, &mut self.pcm),
            None => self.pcm.extend_from_slice(&self.decoded),
        }
        let Some(anchor) = &mut self.anchor else {
            return Ok(());
        };
        anchor.frames_in += (self.decoded.len() / 2) as u64;
        let mut done = 0;
        while self.pcm.len() - done >= FRAME_LEN {
            let payload = self.encoder.encode(&self.pcm[done..done + FRAME_LEN])?;
            let timestamp = anchor.rtp_base.wrapping_add(anchor.frames_out as u32);
            out.push(rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    // The first packet after an anchor starts a talk spurt.
                    marker: anchor.frames_out == 0,
                    payload_type: PAYLOAD_TYPE,
                    sequence_number: self.sequence,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(payload),
            });
            self.sequence = self.sequence.wrapping_add(1);
            anchor.frames_out += opus::FRAME_SAMPLES as u64;
            done += FRAME_LEN;
        }
        self.pcm.drain(..done);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
