//! A shard's connections: datagrams into a peer's state machine, everything the machine has to
//! say afterwards (datagrams, state changes, a publisher's media, viewers' RTCP), and a
//! session's end.

use super::{Datagram, Shard};
use crate::engine::demux::Route;
use crate::engine::ingest::from_webrtc;
use crate::engine::peer::{PeerId, Role};
use crate::engine::send::{flush, resend};
use crate::media::{MediaPacket, TrackKind};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info};

impl Shard {
    pub(super) fn on_datagram(&mut self, d: Datagram, now: Instant) {
        let id = match self.demux.route(&d.data, d.from) {
            Route::Peer(id) => id,
            Route::Forged => {
                self.out.shared.metrics.drops_stun_forged.increment(1);
                return;
            }
            Route::Unknown => {
                self.out.shared.metrics.unroutable.increment(1);
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.demux.forget_addr(d.from);
            return;
        };
        peer.socket = Some(d.socket);
        peer.remote = Some(d.from);
        self.current = Some(id);
        let local_addr = self.out.sockets[d.socket].1;
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: d.from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d.data,
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            debug!(session = %peer.session, "dropped datagram: {e}");
        }
        if let Role::Viewer(v) = &mut peer.role
            && let Some(direct) = v.direct.as_mut()
        {
            direct.heard_from(d.from);
        }
        self.arrived = Some(d.at);
        self.drain(id, now);
        self.arrived = None;
    }

    /// Runs a peer's outputs dry: datagrams out, events and media handled, next timer noted.
    pub(super) fn drain(&mut self, id: PeerId, now: Instant) {
        // Media in this drain came in the datagram being handled, if any.
        let received = self.arrived.unwrap_or(now);
        self.current = Some(id);
        let mut became_connected = false;
        let mut failed = None;
        let mut out_packets: Vec<Arc<MediaPacket>> = Vec::new();
        let mut keyframe_wanted = false;
        let mut nacks = 0u64;
        {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            flush(peer, &self.out);
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        debug!(session = %peer.session, %state, "connection state");
                        match state {
                            RTCPeerConnectionState::Connected if !peer.connected => {
                                peer.connected = true;
                                became_connected = true;
                            }
                            RTCPeerConnectionState::Failed => failed = Some("connection failed"),
                            // A publisher without ICE consent for 5 s may have dropped off the
                            // network; the tick ends it once its media has stopped too (see
                            // PUBLISHER_SILENCE), rather than after the 15 s failed timeout.
                            RTCPeerConnectionState::Disconnected => {
                                if let Role::Publisher(p) = &mut peer.role {
                                    p.ice_disconnected = true;
                                }
                            }
                            RTCPeerConnectionState::Connected => {
                                if let Role::Publisher(p) = &mut peer.role {
                                    p.ice_disconnected = false;
                                }
                            }
                            RTCPeerConnectionState::Closed => failed = Some("connection closed"),
                            _ => {}
                        }
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        let is_video = peer
                            .pc
                            .rtp_receiver(init.receiver_id)
                            .is_some_and(|r| r.track().kind() == RtpCodecKind::Video);
                        if let Role::Publisher(p) = &mut peer.role
                            && is_video
                            && p.video_receiver.is_none()
                        {
                            p.video_receiver = Some((init.receiver_id, init.ssrc));
                        }
                    }
                    _ => {}
                }
            }
            while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
                match message {
                    RTCMessage::RtpPacket(_, rtp) => {
                        if let Role::Publisher(p) = &mut peer.role
                            && let Some(packet) =
                                from_webrtc(p, peer.stream, rtp, received, &self.out)
                        {
                            out_packets.push(packet);
                        }
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        for p in &packets {
                            let any = p.as_any();
                            if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                                && let Role::Viewer(v) = &mut peer.role
                            {
                                let arrived = std::time::SystemTime::now();
                                for report in &rr.reports {
                                    if let Some(s) = crate::engine::rtt::sample(
                                        report.last_sender_report,
                                        report.delay,
                                        arrived,
                                    ) {
                                        v.rtt.update(s);
                                    }
                                }
                            }
                            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                                self.out.shared.metrics.plis_received.increment(1);
                                keyframe_wanted |= matches!(peer.role, Role::Viewer(_));
                                if let Role::Viewer(v) = &mut peer.role {
                                    v.keyframe_requests += 1;
                                }
                            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                self.out.shared.metrics.nacks_received.increment(1);
                                if let Role::Viewer(v) = &mut peer.role {
                                    v.nacks += 1;
                                }
                                let stream_bps =
                                    self.streams.get(&peer.stream).map_or(0, |l| l.rate.bps());
                                resend(peer, nack, stream_bps, now, &self.out);
                                nacks += u64::from(matches!(peer.role, Role::Viewer(_)));
                            }
                        }
                    }
                    _ => {}
                }
            }
            flush(peer, &self.out);
            peer.next_timeout = peer.pc.poll_timeout();
        }
        let stream = self.peers.get(&id).map(|p| p.stream);
        for packet in out_packets {
            self.out.shared.fan_out(packet);
        }
        if became_connected {
            self.on_connected(id, now);
        }
        if keyframe_wanted && let Some(stream) = stream {
            self.request_keyframe(stream, now);
        }
        if nacks > 0
            && let Some(stream) = stream
        {
            // Rare (loss only): a registry lookup per NACK message is fine here.
            self.out
                .shared
                .streams
                .count_nacks(stream, TrackKind::Video, nacks);
        }
        if let Some(reason) = failed {
            self.close_peer(id, reason, now);
        }
    }

    pub(super) fn close_peer(&mut self, id: PeerId, reason: &'static str, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        let _ = peer.pc.close();
        flush(&mut peer, &self.out);
        self.demux.remove(&peer.local_ufrag, id);
        if let Some(local) = self.streams.get_mut(&peer.stream) {
            local.viewers.retain(|v| *v != id);
            if local.publisher == Some(id) {
                local.publisher = None;
            }
        }
        self.out.shared.forget_session(&peer.session);
        match peer.role {
            Role::Publisher(_) => {
                self.out
                    .shared
                    .streams
                    .publisher_gone(&peer.stream_name, &peer.session, now);
                self.out.shared.metrics.publisher_left();
            }
            Role::Viewer(_) => {
                self.out.shared.streams.add_viewers(&peer.stream_name, -1);
                self.out.shared.metrics.viewer_left();
            }
        }
        info!(session = %peer.session, stream = %peer.stream_name, reason, "session ended");
    }
}
