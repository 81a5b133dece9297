//! A session's delivery figures, read from its connection's WebRTC statistics and the shard's
//! own counts, on request (never per packet).

use super::delivery::SessionStats;
use super::peer::{Peer, Role};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use std::time::Instant;

/// Reads `peer`'s figures now.
pub(crate) fn collect(peer: &mut Peer, now: Instant) -> SessionStats {
    let report = peer.pc.get_stats(now, StatsSelector::None);
    let mut out = SessionStats {
        remote_addr: peer.remote,
        ..SessionStats::default()
    };
    for s in report.outbound_rtp_streams() {
        out.packets_sent += s.sent_rtp_stream_stats.packets_sent;
        out.bytes_sent += s.sent_rtp_stream_stats.bytes_sent;
    }
    for s in report.inbound_rtp_streams() {
        out.packets_received += s.received_rtp_stream_stats.packets_received;
        out.bytes_received += s.bytes_received;
    }
    for entry in report.iter() {
        if let RTCStatsReportEntry::RemoteInboundRtp(r) = entry {
            out.packets_lost += r.received_rtp_stream_stats.packets_lost;
        }
    }
    match &peer.role {
        Role::Viewer(v) => {
            // rtc 0.21 leaves its remote-inbound RTT at 0; ours comes from the reports.
            out.rtt = v.rtt.get();
            out.nacks = v.nacks;
            out.keyframe_requests = v.keyframe_requests;
            out.delivery = v.delivery.settings;
            out.video_held = v.delivery.video_held;
            out.packets_dropped = v.delivery.held_packets + v.write_drops;
            if let Some(direct) = &v.direct {
                out.packets_sent += direct.packets;
                out.bytes_sent += direct.bytes;
            }
        }
        Role::Publisher(p) => out.keyframe_requests = p.keyframe_requests_sent,
    }
    out
}
