//! The viewer feedback the shard acts on. `rtc`'s interceptor chain ends inbound RTCP at its
//! terminus unless an interceptor marks a packet for the application; nothing in `rtc` marks
//! any, so without this a viewer's PLI (asking for a keyframe), its NACKs and its receiver
//! reports (RTT) would never reach the shard. [`FeedbackTap`] marks exactly those.

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::header::PacketType;
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::time::Instant;

/// Where the tap sits in a viewer's chain: application-ward of the NACK responder and the
/// sender reports (which act on inbound RTCP first), wire-ward of the terminus.
pub(crate) const SLOT: usize = 11_500;

/// Marks inbound RTCP the shard acts on (receiver reports, NACKs, PLI and FIR) for delivery to
/// the application; everything else passes as it came.
#[derive(Default)]
pub(crate) struct FeedbackTap {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether a compound RTCP packet holds anything the shard acts on.
fn wanted(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let h = p.header();
        matches!(
            h.packet_type,
            PacketType::ReceiverReport
                | PacketType::TransportSpecificFeedback
                | PacketType::PayloadSpecificFeedback
        )
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && wanted(packets)
            && !msg.message.has(&Attribute::DeliverToApplication)
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
