//! `rtc`'s NACK responder behind the viewer's retransmission budget.
//!
//! `rtc` answers a viewer's NACKs for the packets that went through its own write path (a
//! viewer not on the direct path, the first packets of each track, one a second after): it
//! resends every packet a NACK names, as often as it is named. [`ResendGate`] stands in the
//! responder's slot and hands it a NACK cut down to what [`Retransmits`] allows: packets it saw
//! written, each at most once per window, within a budget from the rate written through it.
//! The original NACK goes on up the chain unchanged, for the shard (which answers for the
//! direct path under a budget of its own).

use super::delivery::RateMeter;
use super::retransmit::{Resend, Retransmits};
use rtc::interceptor::{
    AttributedPacket, Interceptor, NackResponderBuilder, NackResponderInterceptor, Packet,
    StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::time::Instant;

/// As `rtc`'s responder buffers: the packets it could resend.
const SLOTS: usize = 1024;

pub(crate) struct ResendGate {
    inner: NackResponderInterceptor,
    budget: Retransmits,
    /// `(sequence number, payload bytes)` of the packets written through `rtc`, by slot.
    written: Vec<Option<(u16, usize)>>,
    rate: RateMeter,
    read_queue: VecDeque<TaggedPacket>,
    duplicate: metrics::Counter,
    over_budget: metrics::Counter,
}

impl ResendGate {
    pub(crate) fn new() -> Self {
        let drops =
            |cause: &'static str| metrics::counter!("waveguide_drops_total", "cause" => cause);
        Self {
            inner: NackResponderBuilder::new().build(),
            budget: Retransmits::default(),
            written: vec![None; SLOTS],
            rate: RateMeter::default(),
            read_queue: VecDeque::new(),
            duplicate: drops("retransmit_duplicate"),
            over_budget: drops("retransmit_budget"),
        }
    }

    /// `nack` with only the packets the budget allows now.
    fn allowed(&mut self, nack: &TransportLayerNack, now: Instant) -> TransportLayerNack {
        let mut nacks = Vec::new();
        for pair in &nack.nacks {
            for seq in pair.packet_list() {
                let Some((_, bytes)) =
                    self.written[usize::from(seq) % SLOTS].filter(|(written, _)| *written == seq)
                else {
                    continue;
                };
                match self.budget.admit(seq, bytes, self.rate.bps(), None, now) {
                    Resend::Send => nacks.push(NackPair::new(seq)),
                    Resend::Duplicate => self.duplicate.increment(1),
                    Resend::OverBudget => self.over_budget.increment(1),
                }
            }
        }
        TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks,
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ResendGate {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let nacks: Vec<TransportLayerNack> = packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
                .map(|nack| self.allowed(nack, msg.now))
                .filter(|nack| !nack.nacks.is_empty())
                .collect();
            if !nacks.is_empty() {
                let cut = TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message: AttributedPacket::new(Packet::Rtcp(
                        nacks
                            .into_iter()
                            .map(|n| Box::new(n) as Box<dyn rtc::rtcp::Packet>)
                            .collect(),
                    )),
                };
                self.inner.handle_read(cut)?;
                // The responder passes what it reads on unchanged; the original goes on instead.
                while self.inner.poll_read().is_some() {}
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet {
            let seq = rtp.header.sequence_number;
            let bytes = rtp.payload.len();
            self.written[usize::from(seq) % SLOTS] = Some((seq, bytes));
            self.rate.add(bytes, msg.now);
        }
        self.inner.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.inner.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close()
    }
}

impl Interceptor for ResendGate {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Header;

    fn written(gate: &mut ResendGate, ssrc: u32, seq: u16, now: Instant) {
        let rtp = rtc::rtp::Packet {
            header: Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                payload_type: 96,
                ..Default::default()
            },
            payload: vec![0u8; 1000].into(),
        };
        let msg = TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        };
        gate.handle_write(msg).expect("written");
        while gate.poll_write().is_some() {}
    }

    fn nack(ssrc: u32, pairs: Vec<NackPair>, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: ssrc,
                nacks: pairs,
            })])),
        }
    }

    /// Resends the responder queued, by sequence number.
    fn resent(gate: &mut ResendGate) -> Vec<u16> {
        let mut out = Vec::new();
        while let Some(m) = gate.poll_write() {
            if let Packet::Rtp(p) = m.message.packet {
                out.push(p.header.sequence_number);
            }
        }
        out
    }

    #[test]
    fn a_nack_naming_a_packet_350_times_resends_it_once() {
        let mut gate = ResendGate::new();
        let ssrc = 0x1234;
        gate.bind_local_stream(&StreamInfo {
            ssrc,
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        let t = Instant::now();
        for seq in 0..20 {
            written(&mut gate, ssrc, seq, t);
        }
        let pair = NackPair {
            packet_id: 0,
            lost_packets: 0xffff,
        };
        gate.handle_read(nack(ssrc, vec![pair; 350], t))
            .expect("read");
        let up = gate.poll_read().expect("the NACK goes on up");
        let Packet::Rtcp(packets) = &up.message.packet else {
            panic!("not RTCP");
        };
        let original = packets[0]
            .as_any()
            .downcast_ref::<TransportLayerNack>()
            .expect("a NACK");
        assert_eq!(original.nacks.len(), 350, "unchanged for the shard");
        assert_eq!(resent(&mut gate), (0..17).collect::<Vec<u16>>());
        // Again at once: nothing.
        gate.handle_read(nack(ssrc, vec![pair; 350], t))
            .expect("read");
        assert!(resent(&mut gate).is_empty());
    }
}
