//! How a shard's packets leave it: each viewer's rewrite, the direct seal or `rtc`'s write
//! path, NACK answers from the direct path's history, and the datagrams a connection queued.
//! Sends never wait: a full socket drops and counts.
//!
//! Counting: a shard adds what it sent to its own [`Tally`], and the shard folds the tally into
//! the node's metrics once per tick. A counter every shard adds to per packet is one cache line
//! that every core writes hundreds of thousands of times a second; on several cores those
//! transfers cost more than the count is worth.

use super::Shared;
use super::delivery::Admit;
use super::direct::{DirectPath, Path};
use super::peer::{Peer, Role};
use super::retransmit::Resend;
use super::setup::ViewerTrack;
use crate::media::{MediaPacket, TrackKind};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// What a shard sent since the last tick. Plain cells: only the shard's own task touches them.
#[derive(Debug, Default)]
pub(super) struct Tally {
    packets: Cell<u64>,
    bytes: Cell<u64>,
}

impl Tally {
    fn sent(&self, bytes: usize) {
        self.packets.set(self.packets.get() + 1);
        self.bytes.set(self.bytes.get() + bytes as u64);
    }

    /// Packets and bytes since the last call.
    pub(super) fn take(&self) -> (u64, u64) {
        (self.packets.take(), self.bytes.take())
    }
}

/// What a shard sends through: its sockets, its tally, and the node's shared state (for the
/// rare counters: drops, retransmits, joins).
pub(super) struct Egress {
    pub sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
    pub tally: Tally,
    pub shared: Arc<Shared>,
}

impl std::ops::Deref for Egress {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// Delivers one packet to a viewer as its pause and cap allow. Returns whether the viewer
/// waits for a keyframe (so one should be asked for).
pub(super) fn deliver(
    peer: &mut Peer,
    packet: &Arc<MediaPacket>,
    stream_bps: u64,
    now: Instant,
    out: &Egress,
) -> bool {
    let Role::Viewer(v) = &mut peer.role else {
        return false;
    };
    match v.delivery.admit(packet.kind, stream_bps) {
        Admit::Hold => return false,
        Admit::ResumeVideo => {
            for (track, rewriter) in &mut v.tracks {
                if track.kind == TrackKind::Video {
                    rewriter.restart();
                }
            }
        }
        Admit::Send => {}
    }
    forward(peer, packet, now, out)
}

/// Writes one packet to a viewer, rewritten for it. Returns whether the viewer waits for a
/// keyframe (so one should be asked for).
fn forward(peer: &mut Peer, packet: &Arc<MediaPacket>, now: Instant, out: &Egress) -> bool {
    let Role::Viewer(v) = &mut peer.role else {
        return false;
    };
    let Some((track, rewriter)) = v.tracks.iter_mut().find(|(t, _)| t.kind == packet.kind) else {
        return false;
    };
    let Some((seq, ts)) = rewriter.map(packet, now) else {
        return packet.kind == TrackKind::Video;
    };
    let rtp = for_viewer(packet, track, seq, ts);
    let sender = track.sender;
    if packet.kind == TrackKind::Video && !v.first_video_sent {
        v.first_video_sent = true;
        out.metrics
            .join_seconds
            .record(now.duration_since(peer.created).as_secs_f64());
    }
    if let Some(direct) = v.direct.as_mut() {
        if direct.takes(packet.kind, now) {
            if send_direct(direct, &rtp, out) && packet.kind == TrackKind::Video {
                direct.remember(seq, ts, packet);
            }
            return false;
        }
        direct.expect(packet.kind, &rtp);
    }
    match peer.pc.rtp_sender(sender) {
        Some(mut s) => {
            if let Err(e) = s.write_rtp(now, rtp) {
                v.write_drops += 1;
                out.metrics.drops_write.increment(1);
                debug!(session = %peer.session, "write_rtp: {e}");
            }
        }
        None => {
            v.write_drops += 1;
            out.metrics.drops_write.increment(1);
        }
    }
    false
}

/// `packet` as the viewer's track numbers it: its SSRC and payload type, the rewritten
/// sequence number and timestamp.
pub(super) fn for_viewer(
    packet: &MediaPacket,
    track: &ViewerTrack,
    seq: u16,
    ts: u32,
) -> rtc::rtp::Packet {
    let mut rtp = packet.rtp.clone();
    rtp.header.ssrc = track.ssrc;
    rtp.header.payload_type = track.payload_type;
    rtp.header.sequence_number = seq;
    rtp.header.timestamp = ts;
    rtp
}

/// Seals and sends one packet on a viewer's direct path; whether it left.
fn send_direct(direct: &mut DirectPath, rtp: &rtc::rtp::Packet, out: &Egress) -> bool {
    let Some((index, to, sealed)) = direct.seal(rtp) else {
        out.metrics.drops_write.increment(1);
        return false;
    };
    let Some((socket, _)) = out.sockets.get(index) else {
        out.metrics.drops_no_route.increment(1);
        return false;
    };
    match socket.try_send_to(&sealed, to) {
        Ok(n) => {
            out.tally.sent(n);
            direct.packets += 1;
            // As WebRTC statistics count bytes: payload only.
            direct.bytes += rtp.payload.len() as u64;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            out.metrics.drops_socket_full.increment(1);
            // Kept for a NACK all the same: the viewer will ask for it.
            true
        }
        Err(e) => {
            out.metrics.drops_send_error.increment(1);
            warn!("send to {to}: {e}");
            false
        }
    }
}

/// Answers a viewer's NACK for video sent on its direct path (rtc's responder only holds what
/// went through rtc, and answers that itself), within the viewer's retransmission budget
/// (`retransmit.rs`) for a stream at `stream_bps`.
pub(super) fn resend(
    peer: &mut Peer,
    nack: &TransportLayerNack,
    stream_bps: u64,
    now: Instant,
    out: &Egress,
) {
    let Role::Viewer(v) = &mut peer.role else {
        return;
    };
    let rtt = v.rtt.get();
    let Some(direct) = v.direct.as_mut() else {
        return;
    };
    let Some((track, _)) = v.tracks.iter().find(|(t, _)| t.kind == TrackKind::Video) else {
        return;
    };
    if !direct.is_direct(TrackKind::Video) || nack.media_ssrc != track.ssrc {
        return;
    }
    for pair in &nack.nacks {
        for seq in pair.packet_list() {
            let Some((ts, packet)) = direct.recall(seq).map(|(ts, p)| (ts, Arc::clone(p))) else {
                continue;
            };
            let bytes = packet.rtp.payload.len();
            match direct.resends.admit(seq, bytes, stream_bps, rtt, now) {
                Resend::Send => {}
                Resend::Duplicate => {
                    out.metrics.drops_resend_duplicate.increment(1);
                    continue;
                }
                Resend::OverBudget => {
                    out.metrics.drops_resend_budget.increment(1);
                    continue;
                }
            }
            let rtp = for_viewer(&packet, track, seq, ts);
            if send_direct(direct, &rtp, out) {
                out.metrics.retransmits.increment(1);
            }
        }
    }
}

/// Sends everything the connection has queued, from the socket the peer last reached.
/// A full socket drops (and counts) instead of waiting: a slow viewer never stalls the shard.
pub(super) fn flush(peer: &mut Peer, out: &Egress) {
    while let Some(msg) = peer.pc.poll_write() {
        let index = out
            .sockets
            .iter()
            .position(|(_, a)| *a == msg.transport.local_addr)
            .or(peer.socket);
        if let Role::Viewer(v) = &mut peer.role
            && let Some(direct) = v.direct.as_mut()
            && let Some(i) = index
        {
            match direct.observe(i, msg.transport.peer_addr, &msg.message) {
                Some(Path::Direct) => out.metrics.tracks_direct.increment(1),
                Some(Path::Rtc) => out.metrics.tracks_rtc.increment(1),
                None => {}
            }
        }
        let Some((socket, _)) = index.and_then(|i| out.sockets.get(i)) else {
            out.metrics.drops_no_route.increment(1);
            continue;
        };
        match socket.try_send_to(&msg.message, msg.transport.peer_addr) {
            Ok(n) => out.tally.sent(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                out.metrics.drops_socket_full.increment(1);
            }
            Err(e) => {
                out.metrics.drops_send_error.increment(1);
                warn!(session = %peer.session, "send to {}: {e}", msg.transport.peer_addr);
            }
        }
    }
}
