//! The engine's metric handles, registered once so the media path only does atomic adds.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

pub(crate) struct EngineMetrics {
    pub packets_in: Counter,
    pub bytes_in: Counter,
    pub packets_out: Counter,
    pub bytes_out: Counter,
    pub drops_shard_queue: Counter,
    /// Viewer packets not sent because they were older than the delay bound.
    pub drops_stale: Counter,
    pub drops_socket_full: Counter,
    pub drops_send_error: Counter,
    pub drops_no_route: Counter,
    pub drops_write: Counter,
    pub drops_datagram_queue: Counter,
    pub unroutable: Counter,
    /// Connectivity checks naming a peer whose integrity did not verify (`demux.rs`).
    pub drops_stun_forged: Counter,
    pub plis_sent: Counter,
    pub plis_received: Counter,
    pub nacks_received: Counter,
    pub retransmits: Counter,
    /// NACKed packets not sent again: resent within the window already, or past the viewer's
    /// retransmission budget (`retransmit.rs`).
    pub drops_resend_duplicate: Counter,
    pub drops_resend_budget: Counter,
    /// Viewers refused because every shard was saturated.
    pub viewers_refused_saturated: Counter,
    /// Viewers refused because their client, or the node, had too many still connecting.
    pub viewers_refused_connecting_ip: Counter,
    pub viewers_refused_connecting: Counter,
    /// Viewer sessions answered and not connected yet.
    pub connecting: Gauge,
    /// Trickle PATCHes refused: too fast, too many candidates.
    pub patches_refused_rate: Counter,
    pub patches_refused_candidates: Counter,
    /// Viewer tracks moved to the direct path, and those left on rtc's.
    pub tracks_direct: Counter,
    pub tracks_rtc: Counter,
    pub join_seconds: Histogram,
    publishers: Gauge,
    viewers: Gauge,
}

impl EngineMetrics {
    pub(crate) fn new() -> Self {
        let drops = |cause: &'static str| counter!("waveguide_drops_total", "cause" => cause);
        Self {
            packets_in: counter!("waveguide_packets_in_total", "protocol" => "whip"),
            bytes_in: counter!("waveguide_bytes_in_total", "protocol" => "whip"),
            packets_out: counter!("waveguide_packets_out_total"),
            bytes_out: counter!("waveguide_bytes_out_total"),
            drops_shard_queue: drops("shard_queue_full"),
            drops_stale: drops("stale"),
            drops_socket_full: drops("socket_full"),
            drops_send_error: drops("send_error"),
            drops_no_route: drops("no_route"),
            drops_write: drops("engine_refused"),
            drops_datagram_queue: drops("ingress_queue_full"),
            unroutable: drops("unroutable_datagram"),
            drops_stun_forged: drops("stun_integrity"),
            plis_sent: counter!("waveguide_keyframe_requests_total"),
            plis_received: counter!("waveguide_viewer_plis_total"),
            nacks_received: counter!("waveguide_nacks_total"),
            retransmits: counter!("waveguide_retransmits_total"),
            drops_resend_duplicate: drops("retransmit_duplicate"),
            drops_resend_budget: drops("retransmit_budget"),
            viewers_refused_saturated: counter!("waveguide_viewers_refused_total", "reason" => "saturated"),
            viewers_refused_connecting_ip: counter!("waveguide_viewers_refused_total", "reason" => "connecting_per_ip"),
            viewers_refused_connecting: counter!("waveguide_viewers_refused_total", "reason" => "connecting"),
            connecting: gauge!("waveguide_viewers_connecting"),
            patches_refused_rate: counter!("waveguide_patches_refused_total", "reason" => "rate"),
            patches_refused_candidates: counter!("waveguide_patches_refused_total", "reason" => "candidates"),
            tracks_direct: counter!("waveguide_viewer_tracks_total", "path" => "direct"),
            tracks_rtc: counter!("waveguide_viewer_tracks_total", "path" => "rtc"),
            join_seconds: histogram!("waveguide_join_seconds"),
            publishers: gauge!("waveguide_publishers", "protocol" => "whip"),
            viewers: gauge!("waveguide_viewers", "protocol" => "whep"),
        }
    }

    pub(crate) fn publisher_joined(&self) {
        self.publishers.increment(1.0);
    }
    pub(crate) fn publisher_left(&self) {
        self.publishers.decrement(1.0);
    }
    pub(crate) fn viewer_joined(&self) {
        self.viewers.increment(1.0);
    }
    pub(crate) fn viewer_left(&self) {
        self.viewers.decrement(1.0);
    }
}
