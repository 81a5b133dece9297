//! A shard's media: one publisher packet to this shard's viewers (or skipped when too old),
//! the GOP replay that starts a joining or resumed viewer, and keyframe requests upstream.

use super::{Command, KEYFRAME_REQUEST_INTERVAL, Shard};
use crate::engine::Delivery;
use crate::engine::peer::{Peer, PeerId, Role};
use crate::engine::send::{deliver, flush};
use crate::media::{MediaPacket, TrackKind};
use crate::stream::KeyframeRoute;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{debug, info};

impl Shard {
    /// Delivers one publisher packet to this shard's viewers of its stream, unless it is too
    /// old to be live: then video viewers skip to the next keyframe (asked for at once) rather
    /// than being served late.
    pub(super) fn on_media(&mut self, shared_packet: &Arc<MediaPacket>, now: Instant) {
        let age = now.saturating_duration_since(shared_packet.received);
        self.meter.packet_age(age);
        let owned;
        let packet = if self.local_copy {
            owned = Arc::new(shared_packet.copy_for_shard());
            &owned
        } else {
            shared_packet
        };
        let local = self.streams.entry(packet.stream).or_default();
        // The GOP is kept even when nobody here watches yet: it is what a joining viewer sees first.
        if packet.kind == TrackKind::Video {
            local.video_cache.push(packet);
        }
        local.rate.add(packet.rtp.payload.len(), now);
        if local.viewers.is_empty() {
            return;
        }
        if age > self.meter.max_delay() {
            let skipped = skip_stale(&local.viewers, &mut self.peers, packet.kind);
            self.meter.stale(skipped);
            self.out.metrics.drops_stale.increment(skipped);
            if packet.kind == TrackKind::Video && skipped > 0 {
                self.request_keyframe(packet.stream, now);
            }
            return;
        }
        let stream_bps = local.rate.bps();
        let mut want_keyframe = false;
        for id in &local.viewers {
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            self.current = Some(*id);
            want_keyframe |= deliver(peer, packet, stream_bps, now, &self.out);
            flush(peer, &self.out);
        }
        if want_keyframe {
            self.request_keyframe(packet.stream, now);
        }
    }

    pub(super) fn request_keyframe(&mut self, stream: u64, now: Instant) {
        let Some(local) = self.streams.get_mut(&stream) else {
            return;
        };
        if local
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        local.last_keyframe_request = Some(now);
        match self.out.shared.streams.keyframe_route(stream) {
            Some(KeyframeRoute::Shard(shard)) => {
                if let Some(tx) = self.out.shared.commands.get(shard) {
                    let _ = tx.send(Command::RequestKeyframe { stream });
                }
            }
            Some(KeyframeRoute::Flag(flag)) => flag.store(true, Ordering::Relaxed),
            None => {}
        }
    }

    pub(super) fn send_keyframe_request(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        if p.last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        if p.video_receiver.is_none()
            && let Some(ssrc) = p.ssrcs[TrackKind::Video.index()]
        {
            // No track event named the video receiver (some clients' tracks open late): find
            // it by kind, with the SSRC the media arrives on.
            let receivers: Vec<_> = peer.pc.get_receivers().collect();
            p.video_receiver = receivers
                .into_iter()
                .find(|r| {
                    peer.pc
                        .rtp_receiver(*r)
                        .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
                })
                .map(|r| (r, ssrc));
        }
        let Some((receiver, media_ssrc)) = p.video_receiver else {
            return;
        };
        p.keyframe_request_pending = false;
        p.last_keyframe_request = Some(now);
        p.keyframe_requests_sent += 1;
        if let Some(index) = p
            .tracks
            .iter()
            .position(|t| t.info.kind == TrackKind::Video)
            && let Some(counters) = p.counters.get(index)
        {
            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.out.shared.keyframe_requested(&peer.session);
        if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match r.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => self.out.shared.metrics.plis_sent.increment(1),
                Err(e) => debug!(session = %peer.session, "PLI not sent: {e}"),
            }
        }
        flush(peer, &self.out);
    }

    pub(super) fn on_connected(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        info!(session = %peer.session, stream = %peer.stream_name, "connected");
        self.out.shared.session_connected(&peer.session);
        if !matches!(peer.role, Role::Viewer(_)) {
            return;
        }
        let stream = peer.stream;
        if let Some(local) = self.streams.get(&stream) {
            // Replay the newest GOP so the first picture does not wait for the next keyframe.
            let stream_bps = local.rate.bps();
            for packet in local.video_cache.packets() {
                deliver(peer, packet, stream_bps, now, &self.out);
                flush(peer, &self.out);
            }
        }
        // A WebRTC publisher also gets one (rate-limited) request, so the picture is fresh.
        self.request_keyframe(stream, now);
    }

    /// Applies an operator's pause or cap. A resumed viewer starts again at the newest cached
    /// keyframe, numbering on from where it stopped.
    pub(super) fn set_delivery(&mut self, id: PeerId, delivery: Delivery, now: Instant) {
        self.current = Some(id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Role::Viewer(v) = &mut peer.role else {
            return;
        };
        let resumed = v.delivery.settings.paused && !delivery.paused;
        v.delivery.settings = delivery;
        if !resumed || !peer.connected {
            return;
        }
        for (_, rewriter) in &mut v.tracks {
            rewriter.restart();
        }
        v.delivery.video_held = true;
        let stream = peer.stream;
        let mut want_keyframe = true;
        if let Some(local) = self.streams.get(&stream) {
            let stream_bps = local.rate.bps();
            for (i, packet) in local.video_cache.packets().enumerate() {
                let waits = deliver(peer, packet, stream_bps, now, &self.out);
                // A cache that starts with a keyframe serves the picture at once.
                if i == 0 {
                    want_keyframe = waits;
                }
                flush(peer, &self.out);
            }
        }
        if want_keyframe {
            self.request_keyframe(stream, now);
        }
    }
}

/// A packet too old to send: each connected viewer of it on this shard misses it, and video
/// viewers wait for the next keyframe instead of decoding on from a gap. Returns the viewers
/// that missed it.
fn skip_stale(viewers: &[PeerId], peers: &mut HashMap<PeerId, Peer>, kind: TrackKind) -> u64 {
    let mut skipped = 0;
    for id in viewers {
        let Some(peer) = peers.get_mut(id) else {
            continue;
        };
        let Role::Viewer(v) = &mut peer.role else {
            continue;
        };
        if !peer.connected {
            continue;
        }
        skipped += 1;
        if kind == TrackKind::Video {
            for (track, rewriter) in &mut v.tracks {
                if track.kind == TrackKind::Video {
                    rewriter.restart();
                }
            }
        }
    }
    skipped
}
