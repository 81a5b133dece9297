//! One FTL stream's media as a sans-IO state machine: classifies each datagram (RTP video or
//! audio, ping to echo, sender report) and asks for lost video packets with generic NACKs.

use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use waveguide_control::media::TrackKind;

/// FTL clients send ping packets with payload type 250, which an RTP parser reads as
/// marker + 122.
const PING_PAYLOAD_TYPE: u8 = 122;
/// Gaps larger than this are a restart or reorder storm, not loss worth asking for.
const MAX_NACK_GAP: u16 = 64;

/// What to do with a datagram.
#[derive(Debug)]
pub enum MediaAction {
    /// A media packet for the viewers.
    Forward(TrackKind, rtp::Packet),
    /// Send these bytes back to the client (ping echo, NACK).
    Reply(Vec<u8>),
    /// Sender reports and anything unknown.
    Ignore,
}

/// The SSRCs and payload types a client declared in its attributes.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// `VideoIngestSSRC` and `VideoPayloadType`.
    pub video: Option<(u32, u8)>,
    /// `AudioIngestSSRC` and `AudioPayloadType`.
    pub audio: Option<(u32, u8)>,
}

/// One stream's media state.
#[derive(Debug)]
pub struct MediaSession {
    declared: Declared,
    highest_video_seq: Option<u16>,
}

impl MediaSession {
    /// A session expecting what the client declared.
    pub fn new(declared: Declared) -> Self {
        Self {
            declared,
            highest_video_seq: None,
        }
    }

    /// Classifies one datagram; the NACK for a gap comes before the packet that revealed it.
    pub fn on_datagram(&mut self, data: &[u8]) -> Vec<MediaAction> {
        if data.len() < 12 || data[0] >> 6 != 2 {
            return vec![MediaAction::Ignore];
        }
        let second = data[1];
        if (200..=207).contains(&second) {
            // RTCP (sender report and friends): accepted, nothing to do.
            return vec![MediaAction::Ignore];
        }
        if second & 0x7f == PING_PAYLOAD_TYPE {
            return vec![MediaAction::Reply(data.to_vec())];
        }
        let mut buf = data;
        let Ok(packet) = rtp::Packet::unmarshal(&mut buf) else {
            return vec![MediaAction::Ignore];
        };
        let (ssrc, pt) = (packet.header.ssrc, packet.header.payload_type);
        if self.declared.audio == Some((ssrc, pt)) {
            return vec![MediaAction::Forward(TrackKind::Audio, packet)];
        }
        if self.declared.video != Some((ssrc, pt)) {
            return vec![MediaAction::Ignore];
        }
        let mut actions = Vec::new();
        let seq = packet.header.sequence_number;
        match self.highest_video_seq {
            None => self.highest_video_seq = Some(seq),
            Some(high) => {
                let ahead = seq.wrapping_sub(high);
                if ahead != 0 && ahead < 0x8000 {
                    if ahead > 1 && ahead - 1 <= MAX_NACK_GAP {
                        let lost: Vec<u16> = (1..ahead).map(|i| high.wrapping_add(i)).collect();
                        if let Some(nack) = nack_bytes(ssrc, &lost) {
                            actions.push(MediaAction::Reply(nack));
                        }
                    }
                    self.highest_video_seq = Some(seq);
                }
            }
        }
        actions.push(MediaAction::Forward(TrackKind::Video, packet));
        actions
    }
}

/// A generic NACK (RTCP 205, FMT 1) for `lost` sequence numbers of `media_ssrc`.
fn nack_bytes(media_ssrc: u32, lost: &[u16]) -> Option<Vec<u8>> {
    let mut pairs: Vec<NackPair> = Vec::new();
    for &seq in lost {
        if let Some(last) = pairs.last_mut() {
            let diff = seq.wrapping_sub(last.packet_id);
            if (1..=16).contains(&diff) {
                last.lost_packets |= 1 << (diff - 1);
                continue;
            }
        }
        pairs.push(NackPair {
            packet_id: seq,
            lost_packets: 0,
        });
    }
    let nack = TransportLayerNack {
        sender_ssrc: 0,
        media_ssrc,
        nacks: pairs,
    };
    nack.marshal().ok().map(|b| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp_bytes(ssrc: u32, pt: u8, seq: u16) -> Vec<u8> {
        let mut p = rtp::Packet::default();
        p.header.version = 2;
        p.header.ssrc = ssrc;
        p.header.payload_type = pt;
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::from_static(&[0x65, 1, 2]);
        p.marshal().unwrap().to_vec()
    }

    #[test]
    fn forwards_echoes_and_nacks() {
        let mut m = MediaSession::new(Declared {
            video: Some((10, 96)),
            audio: Some((11, 97)),
        });
        assert!(matches!(
            m.on_datagram(&rtp_bytes(11, 97, 1))[..],
            [MediaAction::Forward(TrackKind::Audio, _)]
        ));
        assert!(matches!(
            m.on_datagram(&rtp_bytes(10, 96, 100))[..],
            [MediaAction::Forward(TrackKind::Video, _)]
        ));
        let a = m.on_datagram(&rtp_bytes(10, 96, 104));
        let [MediaAction::Reply(nack), MediaAction::Forward(..)] = &a[..] else {
            panic!("expected NACK then packet, got {a:?}");
        };
        let mut buf = &nack[..];
        let parsed = TransportLayerNack::unmarshal(&mut buf).unwrap();
        assert_eq!(parsed.nacks[0].packet_id, 101);
        assert_eq!(parsed.nacks[0].lost_packets, 0b11);
        // Ping: PT 250 on the wire.
        let mut ping = rtp_bytes(10, 122, 5);
        ping[1] |= 0x80;
        assert!(matches!(m.on_datagram(&ping)[..], [MediaAction::Reply(_)]));
        // Unknown SSRC and garbage are ignored.
        assert!(matches!(
            m.on_datagram(&rtp_bytes(99, 96, 1))[..],
            [MediaAction::Ignore]
        ));
        assert!(matches!(
            m.on_datagram(b"garbage")[..],
            [MediaAction::Ignore]
        ));
    }
}
