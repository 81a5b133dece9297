//! The chunk stream, receiving side: turns chunks (all four header formats, extended
//! timestamps, any chunk size) back into whole messages.
//!
//! Owns reassembly and its bounds: a message longer than the configured maximum, too many chunk
//! streams at once, or too many bytes held in partial messages end the connection instead of
//! growing memory. Owns nothing about what messages mean (`message`, `session`).

use super::error::RtmpError;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

/// The chunk size every connection starts with.
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size the protocol allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// Chunk streams a client may keep state on. OBS and ffmpeg use fewer than ten.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// The timestamp field value that announces a 4-byte extended timestamp.
const EXTENDED: u32 = 0x00ff_ffff;

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it came on.
    pub csid: u32,
    /// Timestamp in milliseconds (absolute, as the client counts).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Body.
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    /// The last timestamp field: a delta after type 1/2, the absolute time after type 0.
    /// A type-3 chunk that starts a new message adds it again.
    ts_field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header carried an extended timestamp, so type-3 chunks may repeat it.
    extended: bool,
    /// Whether a header has been seen on this chunk stream.
    known: bool,
    partial: BytesMut,
    in_progress: bool,
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    max_message: u32,
    max_buffered: usize,
    buffered: usize,
    streams: HashMap<u32, ChunkStream>,
}

/// What [`ChunkReader::read`] found at the front of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Not a whole chunk yet; nothing consumed.
    NeedMore,
    /// One chunk consumed (`usize` bytes); it completed a message or not.
    Chunk(usize, Option<Message>),
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn be24(&mut self) -> Option<u32> {
        let b = self.data.get(self.pos..self.pos + 3)?;
        self.pos += 3;
        Some(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
    fn be32(&mut self) -> Option<u32> {
        let b = self.peek32()?;
        self.pos += 4;
        Some(b)
    }
    fn peek32(&self) -> Option<u32> {
        let b = self.data.get(self.pos..self.pos + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn le32(&mut self) -> Option<u32> {
        let b = self.data.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl ChunkReader {
    /// A reader that refuses messages longer than `max_message` bytes and holds at most
    /// `max_buffered` bytes of partial messages.
    pub fn new(max_message: u32, max_buffered: usize) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message,
            max_buffered,
            buffered: 0,
            streams: HashMap::new(),
        }
    }

    /// Changes the bounds (raised once a publisher is authorized). Partial messages already
    /// held stay; the new bounds apply from the next chunk on.
    pub fn set_limits(&mut self, max_message: u32, max_buffered: usize) {
        self.max_message = max_message;
        self.max_buffered = max_buffered;
    }

    /// Applies the peer's `Set Chunk Size`.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(RtmpError::InvalidChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Drops the partial message on `csid` (an `Abort` message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            self.buffered -= s.partial.len();
            s.partial = BytesMut::new();
            s.in_progress = false;
        }
    }

    /// Reads one chunk from the front of `input`.
    pub fn read(&mut self, input: &[u8]) -> Result<Read, RtmpError> {
        let mut c = Cursor {
            data: input,
            pos: 0,
        };
        let Some(b0) = c.u8() else {
            return Ok(Read::NeedMore);
        };
        let fmt = b0 >> 6;
        let csid = match b0 & 0x3f {
            0 => match c.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(Read::NeedMore),
            },
            1 => match (c.u8(), c.u8()) {
                (Some(lo), Some(hi)) => 64 + u32::from(lo) + 256 * u32::from(hi),
                _ => return Ok(Read::NeedMore),
            },
            n => u32::from(n),
        };
        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(RtmpError::NoPreviousHeader(csid));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(RtmpError::TooManyChunkStreams(MAX_CHUNK_STREAMS));
            }
        }

        // Parse the header into locals first: nothing changes until the whole chunk is here.
        let prev = self.streams.get(&csid);
        let known = prev.is_some_and(|s| s.known);
        if fmt != 0 && !known {
            return Err(RtmpError::NoPreviousHeader(csid));
        }
        let in_progress = prev.is_some_and(|s| s.in_progress);
        let (mut ts_field, mut length, mut type_id, mut stream_id) = prev
            .map(|s| (s.ts_field, s.length, s.type_id, s.stream_id))
            .unwrap_or_default();
        let mut extended = prev.is_some_and(|s| s.extended);
        match fmt {
            0 => {
                let (Some(ts), Some(len), Some(ty), Some(sid)) =
                    (c.be24(), c.be24(), c.u8(), c.le32())
                else {
                    return Ok(Read::NeedMore);
                };
                (ts_field, length, type_id, stream_id) = (ts, len, ty, sid);
            }
            1 => {
                let (Some(ts), Some(len), Some(ty)) = (c.be24(), c.be24(), c.u8()) else {
                    return Ok(Read::NeedMore);
                };
                (ts_field, length, type_id) = (ts, len, ty);
            }
            2 => {
                let Some(ts) = c.be24() else {
                    return Ok(Read::NeedMore);
                };
                ts_field = ts;
            }
            _ => {}
        }
        if fmt != 3 {
            extended = ts_field == EXTENDED;
        }
        if extended {
            if fmt == 3 && in_progress {
                // Continuation chunk: the spec says the extended timestamp is repeated, and
                // ffmpeg and OBS do, but some encoders omit it. Skip it only if it is there.
                let Some(ext) = c.peek32() else {
                    return Ok(Read::NeedMore);
                };
                if ext == ts_field {
                    c.pos += 4;
                }
            } else {
                let Some(ext) = c.be32() else {
                    return Ok(Read::NeedMore);
                };
                ts_field = ext;
            }
        }
        if length > self.max_message {
            return Err(RtmpError::MessageTooLarge {
                len: length,
                max: self.max_message,
            });
        }
        let starts_message = fmt != 3 || !in_progress;
        let already = if starts_message {
            0
        } else {
            prev.map_or(0, |s| s.partial.len())
        };
        let want = (length as usize - already.min(length as usize)).min(self.chunk_size);
        let header_len = c.pos;
        let Some(body) = input.get(header_len..header_len + want) else {
            return Ok(Read::NeedMore);
        };

        // The whole chunk is here: commit.
        let dropped = if starts_message && in_progress {
            prev.map_or(0, |s| s.partial.len())
        } else {
            0
        };
        if self.buffered - dropped + body.len() > self.max_buffered {
            return Err(RtmpError::BufferBudget(self.max_buffered));
        }
        let s = self.streams.entry(csid).or_default();
        if starts_message {
            // A new header while a message is in progress abandons that message.
            s.partial = BytesMut::new();
            s.timestamp = if fmt == 0 {
                ts_field
            } else {
                s.timestamp.wrapping_add(ts_field)
            };
            s.in_progress = true;
        }
        self.buffered -= dropped;
        s.ts_field = ts_field;
        s.length = length;
        s.type_id = type_id;
        s.stream_id = stream_id;
        s.extended = extended;
        s.known = true;
        s.partial.extend_from_slice(body);
        self.buffered += body.len();
        let consumed = header_len + body.len();
        if s.partial.len() < length as usize {
            return Ok(Read::Chunk(consumed, None));
        }
        let payload = std::mem::take(&mut s.partial).freeze();
        self.buffered -= payload.len();
        s.in_progress = false;
        Ok(Read::Chunk(
            consumed,
            Some(Message {
                csid,
                timestamp: s.timestamp,
                type_id: s.type_id,
                stream_id: s.stream_id,
                payload,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunk_write::ChunkWriter;
    use super::*;

    fn msg(csid: u32, ts: u32, ty: u8, sid: u32, len: usize) -> Message {
        Message {
            csid,
            timestamp: ts,
            type_id: ty,
            stream_id: sid,
            payload: Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>()),
        }
    }

    /// Feeds `bytes` in pieces of `step`, as a socket might deliver them.
    fn read_all(reader: &mut ChunkReader, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                match reader.read(&pending).unwrap() {
                    Read::NeedMore => break,
                    Read::Chunk(n, m) => {
                        pending.drain(..n);
                        out.extend(m);
                    }
                }
            }
        }
        assert!(pending.is_empty(), "{} bytes left over", pending.len());
        out
    }

    #[test]
    fn writer_output_reads_back_with_any_split() {
        let messages = vec![
            msg(3, 0, 20, 0, 300),
            msg(4, 1000, 9, 1, 5000),
            msg(4, 1033, 9, 1, 10),
            msg(5, 0x0100_0000, 8, 1, 700), // extended timestamp, several chunks
            msg(70, 5, 18, 1, 1),           // two-byte chunk stream id
            msg(400, 6, 18, 1, 0),          // three-byte chunk stream id, empty message
        ];
        for chunk_size in [1usize, 128, 4096] {
            let mut w = ChunkWriter::new();
            w.set_chunk_size(chunk_size);
            let mut bytes = BytesMut::new();
            for m in &messages {
                w.write(
                    &mut bytes,
                    m.csid,
                    m.timestamp,
                    m.type_id,
                    m.stream_id,
                    &m.payload,
                );
            }
            for step in [1usize, 7, 1000, bytes.len()] {
                let mut r = ChunkReader::new(1 << 20, 1 << 22);
                r.set_chunk_size(chunk_size as u32).unwrap();
                assert_eq!(
                    read_all(&mut r, &bytes, step),
                    messages,
                    "chunk {chunk_size} step {step}"
                );
            }
        }
    }

    #[test]
    fn type_1_2_3_headers_carry_deltas() {
        let mut b = Vec::new();
        // Type 0: csid 4, ts 1000, len 2, type 8, stream 1.
        b.extend_from_slice(&[
            0x04, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x02, 0x08, 1, 0, 0, 0, 0xaa, 0xbb,
        ]);
        // Type 1: delta 20, len 1, type 9.
        b.extend_from_slice(&[0x44, 0x00, 0x00, 0x14, 0x00, 0x00, 0x01, 0x09, 0xcc]);
        // Type 2: delta 30.
        b.extend_from_slice(&[0x84, 0x00, 0x00, 0x1e, 0xdd]);
        // Type 3 starting a new message: the same delta again.
        b.extend_from_slice(&[0xc4, 0xee]);
        let mut r = ChunkReader::new(1 << 20, 1 << 20);
        let got = read_all(&mut r, &b, 3);
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![1000, 1020, 1050, 1080]);
        assert_eq!(got[1].type_id, 9);
        assert_eq!(got[3].stream_id, 1);
        assert_eq!(&got[3].payload[..], &[0xee]);
    }

    #[test]
    fn continuation_without_repeated_extended_timestamp_is_accepted() {
        let mut b = Vec::new();
        // Type 0 with extended timestamp 0x01000000, length 200 (two 128-byte chunks).
        b.extend_from_slice(&[0x04, 0xff, 0xff, 0xff, 0x00, 0x00, 0xc8, 0x09, 1, 0, 0, 0]);
        b.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
        b.extend_from_slice(&[7u8; 128]);
        // Type 3 continuation that omits the extended timestamp.
        b.push(0xc4);
        b.extend_from_slice(&[8u8; 72]);
        let mut r = ChunkReader::new(1 << 20, 1 << 20);
        let got = read_all(&mut r, &b, 5);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].timestamp, 0x0100_0000);
        assert_eq!(got[0].payload.len(), 200);
        assert_eq!(got[0].payload[199], 8);
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let w = ChunkWriter::new();
        let mut bytes = BytesMut::new();
        w.write(&mut bytes, 4, 0, 9, 1, &[1u8; 300]);
        let mut r = ChunkReader::new(1 << 20, 1 << 20);
        // Only the first chunk (12-byte header + 128 bytes).
        assert_eq!(r.read(&bytes[..140]).unwrap(), Read::Chunk(140, None));
        r.abort(4);
        // A new message on the same chunk stream with a type-1 header.
        let b = [0x44, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x08, 0x55];
        match r.read(&b).unwrap() {
            Read::Chunk(9, Some(m)) => assert_eq!(&m.payload[..], &[0x55]),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.buffered, 0);
    }

    #[test]
    fn bounds_are_enforced() {
        let mut r = ChunkReader::new(1000, 1500);
        // Message longer than the maximum.
        let b = [0x04, 0, 0, 0, 0x00, 0x10, 0x00, 0x09, 1, 0, 0, 0];
        assert!(matches!(r.read(&b), Err(RtmpError::MessageTooLarge { .. })));
        // Type 1 on an unknown chunk stream.
        let mut r = ChunkReader::new(1000, 1500);
        assert!(matches!(
            r.read(&[0x45, 0, 0, 0, 0, 0, 1, 8]),
            Err(RtmpError::NoPreviousHeader(5))
        ));
        // Chunk size 0 and too large.
        assert!(r.set_chunk_size(0).is_err());
        assert!(r.set_chunk_size(0x8000_0000).is_err());
        // Partial messages across chunk streams exceed the budget.
        let mut r = ChunkReader::new(1000, 1500);
        let mut fed = 0;
        let mut err = None;
        for csid in 3..40u8 {
            let mut b = vec![csid, 0, 0, 0, 0x00, 0x03, 0xe8, 0x09, 1, 0, 0, 0];
            b.extend_from_slice(&[0; 128]);
            match r.read(&b) {
                Ok(_) => fed += 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(err, Some(RtmpError::BufferBudget(1500))),
            "{fed} {err:?}"
        );
        // Too many chunk streams.
        let mut r = ChunkReader::new(1000, 1 << 20);
        let mut err = None;
        for csid in 64..200u32 {
            let b = [0x00, (csid - 64) as u8, 0, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0];
            if let Err(e) = r.read(&b) {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(RtmpError::TooManyChunkStreams(_))),
            "{err:?}"
        );
    }
}
