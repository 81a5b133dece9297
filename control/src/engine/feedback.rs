//! The viewer feedback the shard acts on. `rtc`'s interceptor chain ends inbound RTCP at its
//! terminus unless an interceptor marks a packet for the application; nothing in `rtc` marks
//! any, so without this a viewer's PLI (asking for a keyframe), its NACKs and its receiver
//! reports (RTT) would never reach the shard. [`FeedbackTap`] marks exactly those.
//!
//! The tap wraps the viewer's sender-report interceptor rather than adding a stage of its own:
//! every packet to every viewer walks every stage of the chain, one copy each.

use rtc::interceptor::{
    Attribute, Interceptor, Packet, SenderReportBuilder, SenderReportInterceptor, StreamInfo,
    TaggedPacket,
};
use rtc::rtcp::header::PacketType;
use rtc::sansio::Protocol;
use std::time::Instant;

/// Sender reports, plus the marking of inbound RTCP the shard acts on (receiver reports, NACKs,
/// PLI and FIR) for delivery to the application.
pub(crate) struct FeedbackTap {
    reports: SenderReportInterceptor,
}

impl FeedbackTap {
    pub(crate) fn new() -> Self {
        Self {
            reports: SenderReportBuilder::new().build(),
        }
    }
}

/// Whether a compound RTCP packet holds anything the shard acts on.
fn wanted(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        matches!(
            p.header().packet_type,
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
        self.reports.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reports.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.reports.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.reports.poll_write()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.reports.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.reports.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        self.reports.close()
    }
}

impl Interceptor for FeedbackTap {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.reports.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.reports.unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.reports.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.reports.unbind_remote_stream(info);
    }
}
