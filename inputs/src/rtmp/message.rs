//! RTMP messages: what a reassembled message's type id means, and the protocol control and
//! user control messages we send.
//!
//! Owns message type ids and the layout of control messages; owns nothing about commands
//! (`commands`) or media (`flv`).

use super::amf0::{self, Value};
use super::chunk_read::Message;
use super::error::RtmpError;
use bytes::{Bytes, BytesMut};

/// `Set Chunk Size`.
pub const SET_CHUNK_SIZE: u8 = 1;
/// `Abort Message`.
pub const ABORT: u8 = 2;
/// `Acknowledgement`.
pub const ACKNOWLEDGEMENT: u8 = 3;
/// `User Control Message`.
pub const USER_CONTROL: u8 = 4;
/// `Window Acknowledgement Size`.
pub const WINDOW_ACK_SIZE: u8 = 5;
/// `Set Peer Bandwidth`.
pub const SET_PEER_BANDWIDTH: u8 = 6;
/// Audio (an FLV audio tag body).
pub const AUDIO: u8 = 8;
/// Video (an FLV video tag body).
pub const VIDEO: u8 = 9;
/// Data message, AMF3 envelope.
pub const DATA_AMF3: u8 = 15;
/// Command message, AMF3 envelope.
pub const COMMAND_AMF3: u8 = 17;
/// Data message, AMF0 (`@setDataFrame`).
pub const DATA_AMF0: u8 = 18;
/// Command message, AMF0.
pub const COMMAND_AMF0: u8 = 20;
/// Aggregate: several FLV tags in one message.
pub const AGGREGATE: u8 = 22;

/// User control event: stream begin.
pub const UC_STREAM_BEGIN: u16 = 0;
/// User control event: ping request.
pub const UC_PING_REQUEST: u16 = 6;
/// User control event: ping response.
pub const UC_PING_RESPONSE: u16 = 7;

/// Chunk stream for protocol control messages (fixed by the spec).
pub const CSID_CONTROL: u32 = 2;
/// Chunk stream for our command replies.
pub const CSID_COMMAND: u32 = 3;

/// A message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The peer's chunk size from now on.
    SetChunkSize(u32),
    /// Drop the partial message on this chunk stream.
    Abort(u32),
    /// The peer has received this many bytes.
    Acknowledgement(u32),
    /// The peer wants an acknowledgement every this many bytes.
    WindowAckSize(u32),
    /// The peer limits our output bandwidth (ignored: we send almost nothing).
    SetPeerBandwidth,
    /// A ping request (answered) or another user control event (ignored).
    UserControl {
        /// Event type.
        event: u16,
        /// Event data.
        data: Bytes,
    },
    /// An FLV audio tag body.
    Audio {
        /// Milliseconds.
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// An FLV video tag body.
    Video {
        /// Milliseconds (decode time).
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// A command (`connect`, `publish` …) as AMF0 values.
    Command {
        /// The message stream it was sent on.
        stream_id: u32,
        /// Name, transaction id, command object, arguments.
        values: Vec<Value>,
    },
    /// A data message (`@setDataFrame`).
    Data(Vec<Value>),
    /// A type we do not use.
    Ignored(u8),
}

fn be32(payload: &[u8], type_id: u8) -> Result<u32, RtmpError> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(RtmpError::MalformedControl(type_id))
}

/// Classifies `message`; aggregates expand to several.
pub fn classify(message: Message, out: &mut Vec<Incoming>) -> Result<(), RtmpError> {
    let Message {
        type_id,
        payload,
        timestamp,
        stream_id,
        ..
    } = message;
    let incoming = match type_id {
        SET_CHUNK_SIZE => Incoming::SetChunkSize(be32(&payload, type_id)? & 0x7fff_ffff),
        ABORT => Incoming::Abort(be32(&payload, type_id)?),
        ACKNOWLEDGEMENT => Incoming::Acknowledgement(be32(&payload, type_id)?),
        WINDOW_ACK_SIZE => Incoming::WindowAckSize(be32(&payload, type_id)?),
        SET_PEER_BANDWIDTH => Incoming::SetPeerBandwidth,
        USER_CONTROL => {
            if payload.len() < 2 {
                return Err(RtmpError::MalformedControl(type_id));
            }
            Incoming::UserControl {
                event: u16::from_be_bytes([payload[0], payload[1]]),
                data: payload.slice(2..),
            }
        }
        AUDIO => Incoming::Audio { timestamp, payload },
        VIDEO => Incoming::Video { timestamp, payload },
        COMMAND_AMF0 => Incoming::Command {
            stream_id,
            values: amf0::decode_all(&payload)?,
        },
        // AMF3 envelopes start with a format byte; the values themselves are AMF0 from OBS
        // and ffmpeg, and an AMF3 switch marker is refused by the decoder.
        COMMAND_AMF3 => Incoming::Command {
            stream_id,
            values: amf0::decode_all(payload.get(1..).unwrap_or_default())?,
        },
        DATA_AMF0 | DATA_AMF3 => {
            let body = if type_id == DATA_AMF3 {
                payload.get(1..).unwrap_or_default()
            } else {
                &payload[..]
            };
            let mut budget = amf0::MAX_VALUES;
            data(body, type_id, &mut budget)?
        }
        AGGREGATE => return aggregate(&payload, timestamp, out),
        other => Incoming::Ignored(other),
    };
    out.push(incoming);
    Ok(())
}

/// A data message (`@setDataFrame`): metadata is optional, so one holding more values than
/// the decoder takes is skipped rather than ending the connection; malformed AMF still does.
fn data(body: &[u8], type_id: u8, budget: &mut usize) -> Result<Incoming, RtmpError> {
    match amf0::decode_all_within(body, budget) {
        Ok(values) => Ok(Incoming::Data(values)),
        Err(amf0::AmfError::TooManyValues) => Ok(Incoming::Ignored(type_id)),
        Err(e) => Err(e.into()),
    }
}

/// Sub-messages of an aggregate are FLV tags: type, size, timestamp, stream id, body, back
/// pointer. Their timestamps are offsets from the first one, re-based on the message's.
fn aggregate(payload: &Bytes, timestamp: u32, out: &mut Vec<Incoming>) -> Result<(), RtmpError> {
    let mut pos = 0;
    let mut first_ts = None;
    // One value budget for all the data tags: they are all held at once.
    let mut budget = amf0::MAX_VALUES;
    while pos < payload.len() {
        let head = payload
            .get(pos..pos + 11)
            .ok_or(RtmpError::MalformedAggregate)?;
        let ty = head[0];
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let ts = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body_start = pos + 11;
        let body_end = body_start + size;
        if body_end + 4 > payload.len() {
            return Err(RtmpError::MalformedAggregate);
        }
        let base = *first_ts.get_or_insert(ts);
        let sub_ts = timestamp.wrapping_add(ts.wrapping_sub(base));
        let body = payload.slice(body_start..body_end);
        match ty {
            AUDIO => out.push(Incoming::Audio {
                timestamp: sub_ts,
                payload: body,
            }),
            VIDEO => out.push(Incoming::Video {
                timestamp: sub_ts,
                payload: body,
            }),
            DATA_AMF0 => out.push(data(&body, ty, &mut budget)?),
            other => out.push(Incoming::Ignored(other)),
        }
        pos = body_end + 4;
    }
    Ok(())
}

/// Body of `Set Chunk Size`, `Window Acknowledgement Size`, `Acknowledgement`.
pub fn u32_body(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// Body of `Set Peer Bandwidth` (limit type 2 = dynamic).
pub fn peer_bandwidth_body(window: u32) -> [u8; 5] {
    let w = window.to_be_bytes();
    [w[0], w[1], w[2], w[3], 2]
}

/// Body of a user control message with a 4-byte argument.
pub fn user_control_body(event: u16, arg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + arg.len());
    v.extend_from_slice(&event.to_be_bytes());
    v.extend_from_slice(arg);
    v
}

/// An AMF0 command or data body.
pub fn amf_body(values: &[Value]) -> BytesMut {
    amf0::encode_all(values)
}

/// Body helper for tests and the aggregate builder: one FLV tag as in an aggregate.
#[cfg(test)]
pub fn flv_tag(ty: u8, ts: u32, body: &[u8]) -> Vec<u8> {
    use bytes::BufMut;
    let mut v = BytesMut::new();
    v.put_u8(ty);
    v.put_slice(&(body.len() as u32).to_be_bytes()[1..]);
    let t = ts.to_be_bytes();
    v.put_slice(&[t[1], t[2], t[3], t[0]]);
    v.put_slice(&[0, 0, 0]);
    v.put_slice(body);
    v.put_u32(11 + body.len() as u32);
    v.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_expand_with_rebased_timestamps() {
        let mut payload = flv_tag(VIDEO, 5000, &[0x17, 1, 0, 0, 0]);
        payload.extend(flv_tag(AUDIO, 5020, &[0xaf, 1, 0x21]));
        let m = Message {
            csid: 4,
            timestamp: 100,
            type_id: AGGREGATE,
            stream_id: 1,
            payload: Bytes::from(payload),
        };
        let mut out = Vec::new();
        classify(m, &mut out).unwrap();
        assert!(matches!(&out[0], Incoming::Video { timestamp: 100, .. }));
        assert!(matches!(&out[1], Incoming::Audio { timestamp: 120, .. }));
    }

    #[test]
    fn data_tags_of_one_aggregate_share_one_value_budget() {
        // 300 data tags of 4000 `null`s each: each alone is within the budget, together
        // they would hold 1.2 M values. Those past the budget are skipped.
        let mut payload = Vec::new();
        for i in 0..300 {
            payload.extend(flv_tag(DATA_AMF0, i, &[0x05; 4000]));
        }
        let m = Message {
            csid: 4,
            timestamp: 0,
            type_id: AGGREGATE,
            stream_id: 1,
            payload: Bytes::from(payload),
        };
        let mut out = Vec::new();
        classify(m, &mut out).unwrap();
        let decoded: usize = out
            .iter()
            .map(|i| match i {
                Incoming::Data(v) => v.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(decoded, 4000);
        assert_eq!(out.len(), 300);
    }

    #[test]
    fn short_control_messages_are_errors() {
        let m = Message {
            csid: 2,
            timestamp: 0,
            type_id: SET_CHUNK_SIZE,
            stream_id: 0,
            payload: Bytes::from_static(&[0, 0]),
        };
        assert!(classify(m, &mut Vec::new()).is_err());
    }
}
