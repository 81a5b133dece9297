//! Media as it travels through the node: one parsed RTP packet shared by every viewer, the
//! codecs we forward, keyframe detection and the keyframe cache.
//!
//! Owns no sockets and no clock: everything here is pure and tested in-process.

mod codec;
mod keyframe;
mod packet;

pub use codec::{Codec, CodecParams, fmtp_value as codec_fmtp_value};
pub use keyframe::{KeyframeCache, is_keyframe_start};
pub use packet::{Audience, Delivery, MediaPacket, TrackKind};
