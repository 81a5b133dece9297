//! The chunk stream, sending side: splits our messages into chunks of the size we announced.
//!
//! Every message starts with a type-0 header and continues with type-3 chunks (valid for every
//! client, and our replies are few). Owns no state beyond the outgoing chunk size.

use super::chunk_read::DEFAULT_CHUNK_SIZE;
use bytes::{BufMut, BytesMut};

const EXTENDED: u32 = 0x00ff_ffff;

/// Writes messages as chunks.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    /// A writer at the protocol's initial chunk size (128).
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Uses `size` from now on; call right after queueing our `Set Chunk Size`.
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.max(1);
    }

    /// Appends `payload` as one message on chunk stream `csid` (2..=65599).
    pub fn write(
        &self,
        out: &mut BytesMut,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        let extended = timestamp >= EXTENDED;
        let ts_field = if extended { EXTENDED } else { timestamp };
        basic_header(out, 0, csid);
        put_be24(out, ts_field);
        // Messages are at most 16 MiB by construction of the protocol; ours are tiny.
        put_be24(out, payload.len().min(0x00ff_ffff) as u32);
        out.put_u8(type_id);
        out.put_u32_le(stream_id);
        if extended {
            out.put_u32(timestamp);
        }
        let mut chunks = payload.chunks(self.chunk_size);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for chunk in chunks {
            basic_header(out, 3, csid);
            if extended {
                out.put_u32(timestamp);
            }
            out.put_slice(chunk);
        }
    }
}

fn put_be24(out: &mut BytesMut, v: u32) {
    out.put_slice(&v.to_be_bytes()[1..]);
}

fn basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        // csid 0 and 1 are the escape codes; callers use 2 and up.
        2..=63 => out.put_u8(fmt | csid as u8),
        64..=319 => {
            out.put_u8(fmt);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid.clamp(320, 65_599) - 64;
            out.put_u8(fmt | 1);
            out.put_u8((v & 0xff) as u8);
            out.put_u8((v >> 8) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_chunk_size_with_type_3_continuations() {
        let mut w = ChunkWriter::new();
        let mut out = BytesMut::new();
        w.write(&mut out, 3, 0, 20, 0, &[1u8; 300]);
        // 12-byte header + 128 + (1 + 128) + (1 + 44)
        assert_eq!(out.len(), 12 + 128 + 1 + 128 + 1 + 44);
        assert_eq!(out[0], 0x03);
        assert_eq!(out[12 + 128], 0xc3);
        w.set_chunk_size(4096);
        let mut out = BytesMut::new();
        w.write(&mut out, 3, 0, 20, 0, &[1u8; 300]);
        assert_eq!(out.len(), 12 + 300);
    }
}
