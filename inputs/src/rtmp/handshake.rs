//! The RTMP handshake, server side: C0+C1 in, S0+S1+S2 out, C2 in.
//!
//! This is the "simple" handshake (no HMAC digests): S1 carries zero version bytes, which tells
//! ffmpeg, OBS (librtmp) and GStreamer's `rtmp2sink` not to look for a digest, and S2 echoes
//! C1 exactly. Owns no socket and no clock: the caller passes the random bytes and the time.

use super::error::RtmpError;

/// The only RTMP version spoken (plain, unencrypted RTMP).
pub const VERSION: u8 = 3;
/// Size of C1/C2/S1/S2.
pub const PACKET_LEN: usize = 1536;
/// Random bytes in S1 (after the 4-byte time and 4 zero bytes).
pub const RANDOM_LEN: usize = PACKET_LEN - 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for C0 + C1.
    C0C1,
    /// S0S1S2 sent; waiting for C2.
    C2,
    /// Done.
    Done,
}

/// The server side of one handshake.
#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
    time_ms: u32,
    random: Box<[u8; RANDOM_LEN]>,
}

/// What one call to [`Handshake::receive`] did.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes used; the rest belongs to the chunk stream.
    pub consumed: usize,
    /// Bytes to send to the client.
    pub reply: Option<Vec<u8>>,
    /// Whether the handshake is complete.
    pub done: bool,
}

impl Handshake {
    /// A handshake whose S1 carries `time_ms` and `random`.
    pub fn new(time_ms: u32, random: Box<[u8; RANDOM_LEN]>) -> Self {
        Self {
            stage: Stage::C0C1,
            time_ms,
            random,
        }
    }

    /// Whether C2 has been received.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Feeds the bytes received so far (not yet consumed). Consumes nothing until a whole
    /// stage is present.
    pub fn receive(&mut self, input: &[u8]) -> Result<Progress, RtmpError> {
        let mut progress = Progress::default();
        if self.stage == Stage::C0C1 {
            let Some(&version) = input.first() else {
                return Ok(progress);
            };
            if version != VERSION {
                return Err(RtmpError::UnsupportedVersion(version));
            }
            if input.len() < 1 + PACKET_LEN {
                return Ok(progress);
            }
            let c1 = &input[1..1 + PACKET_LEN];
            let mut reply = Vec::with_capacity(1 + 2 * PACKET_LEN);
            reply.push(VERSION);
            reply.extend_from_slice(&self.time_ms.to_be_bytes());
            reply.extend_from_slice(&[0; 4]);
            reply.extend_from_slice(&self.random[..]);
            reply.extend_from_slice(c1);
            progress.consumed = 1 + PACKET_LEN;
            progress.reply = Some(reply);
            self.stage = Stage::C2;
        }
        if self.stage == Stage::C2 {
            // C2 should echo S1; clients differ in how faithfully, and nothing depends on it.
            if input.len() - progress.consumed >= PACKET_LEN {
                progress.consumed += PACKET_LEN;
                self.stage = Stage::Done;
            }
        }
        progress.done = self.stage == Stage::Done;
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&1234u32.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend((0..RANDOM_LEN).map(|i| (i * 7) as u8));
        v
    }

    #[test]
    fn replies_s0_s1_s2_echoing_c1_then_waits_for_c2() {
        let mut h = Handshake::new(42, Box::new([9; RANDOM_LEN]));
        let client = c0c1();
        // Split reads: nothing happens until C0+C1 is whole.
        let p = h.receive(&client[..700]).unwrap();
        assert_eq!(p.consumed, 0);
        assert!(p.reply.is_none());
        let p = h.receive(&client).unwrap();
        assert_eq!(p.consumed, 1 + PACKET_LEN);
        let reply = p.reply.unwrap();
        assert_eq!(reply.len(), 1 + 2 * PACKET_LEN);
        assert_eq!(reply[0], VERSION);
        assert_eq!(&reply[1..5], &42u32.to_be_bytes());
        assert_eq!(&reply[5..9], &[0; 4], "zero version: simple handshake");
        assert_eq!(&reply[1 + PACKET_LEN..], &client[1..], "S2 echoes C1");
        assert!(!p.done);

        // C2 followed by the first chunk bytes in the same read.
        let mut rest = vec![0u8; PACKET_LEN];
        rest.extend_from_slice(&[0x02, 0x00]);
        let p = h.receive(&rest[..100]).unwrap();
        assert_eq!(p.consumed, 0);
        let p = h.receive(&rest).unwrap();
        assert_eq!(p.consumed, PACKET_LEN);
        assert!(p.done && h.is_done());
    }

    #[test]
    fn c0c1c2_in_one_read() {
        let mut h = Handshake::new(0, Box::new([0; RANDOM_LEN]));
        let mut all = c0c1();
        all.extend_from_slice(&[1; PACKET_LEN]);
        let p = h.receive(&all).unwrap();
        assert_eq!(p.consumed, all.len());
        assert!(p.done);
    }

    #[test]
    fn refuses_other_versions_and_http() {
        let mut h = Handshake::new(0, Box::new([0; RANDOM_LEN]));
        assert!(matches!(
            h.receive(b"GET / HTTP/1.1\r\n"),
            Err(RtmpError::UnsupportedVersion(b'G'))
        ));
        let mut h = Handshake::new(0, Box::new([0; RANDOM_LEN]));
        assert!(matches!(
            h.receive(&[6]),
            Err(RtmpError::UnsupportedVersion(6))
        ));
    }
}
