//! Publishers that are not WebRTC peers: inputs that receive RTP (FTL, the relay) or make it
//! (RTMP) hand packets to an [`Ingest`], which feeds the same fan-out as a WHIP publisher.

use super::peer::PublisherRole;
use super::{Engine, Shared};
use crate::error::{Error, Result};
use crate::media::{Audience, Delivery, MediaPacket, TrackKind, is_keyframe_start};
use crate::service::PublishRequest;
use crate::stream::{IngestProtocol, NewPublisher, TrackCounters, TrackInfo};
use rtc::rtp;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tracing::info;

/// Where packets of one publisher come from: what every ingest path stamps on a packet.
pub(crate) struct Source<'a> {
    pub stream: u64,
    pub epoch: u32,
    pub counters: &'a TrackCounters,
    pub last_media: &'a AtomicU64,
}

impl Source<'_> {
    /// Counts the packet and turns it into the shared form: extensions stripped (their ids are
    /// per connection), keyframe starts marked. Packets for taps only are not counted: the
    /// track's counters and the ingest metrics describe what viewers get (an RTMP publisher's
    /// Opus track counts no AAC frames, and no B-frames that WebRTC viewers never see).
    pub(crate) fn packet(
        &self,
        track: &TrackInfo,
        mut rtp: rtp::Packet,
        now: Instant,
        shared: &Shared,
        delivery: Delivery,
    ) -> Arc<MediaPacket> {
        let bytes = rtp.payload.len() as u64;
        if delivery.audience == Audience::Everyone {
            self.counters.packets.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            shared.metrics.packets_in.increment(1);
            shared.metrics.bytes_in.increment(bytes);
        }
        self.last_media
            .store(shared.streams.clock_ms(now).max(1), Ordering::Relaxed);
        rtp.header.extension = false;
        rtp.header.extension_profile = 0;
        rtp.header.extensions.clear();
        rtp.header.padding = false;
        let keyframe_start =
            track.kind == TrackKind::Video && is_keyframe_start(track.codec.codec, &rtp.payload);
        if keyframe_start {
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.counters
                .last_keyframe_unix_ms
                .store(unix_ms, Ordering::Relaxed);
        }
        Arc::new(MediaPacket {
            stream: self.stream,
            kind: track.kind,
            epoch: self.epoch,
            keyframe_start,
            rtp,
            received: now,
            delivery,
        })
    }
}

/// Turns a WHIP publisher's RTP packet into the shared packet every viewer gets; `None` for a
/// payload type it did not negotiate or a second SSRC on a track.
pub(super) fn from_webrtc(
    p: &mut PublisherRole,
    stream: u64,
    rtp: rtc::rtp::Packet,
    now: Instant,
    shared: &Shared,
) -> Option<Arc<MediaPacket>> {
    let (index, track) = p
        .tracks
        .iter()
        .enumerate()
        .find(|(_, t)| t.payload_type == rtp.header.payload_type)?;
    let kind = track.info.kind;
    let ssrc = &mut p.ssrcs[kind.index()];
    if *ssrc.get_or_insert(rtp.header.ssrc) != rtp.header.ssrc {
        return None;
    }
    let source = Source {
        stream,
        epoch: p.epoch,
        counters: &p.counters[index],
        last_media: &p.last_media,
    };
    Some(source.packet(&track.info, rtp, now, shared, Delivery::default()))
}

/// A live non-WebRTC publisher. Dropping it ends the publish; viewers then wait out the
/// reconnect grace period as for a WHIP publisher.
pub struct Ingest {
    shared: Arc<Shared>,
    protocol: IngestProtocol,
    session: String,
    name: String,
    stream: u64,
    epoch: u32,
    tracks: Vec<TrackInfo>,
    counters: Vec<Arc<TrackCounters>>,
    last_media: Arc<AtomicU64>,
    revoked: Arc<AtomicBool>,
    keyframe_wanted: Arc<AtomicBool>,
    viewers: Arc<AtomicUsize>,
    ended: bool,
}

impl Engine {
    /// Authorizes a non-WebRTC publisher and takes its stream (or `409` while another
    /// publisher is live). `tracks` are what it will send.
    pub async fn start_ingest(
        &self,
        request: PublishRequest<'_>,
        protocol: IngestProtocol,
        tracks: Vec<TrackInfo>,
    ) -> Result<Ingest> {
        self.admit_publisher()?;
        let name = self.service().authorize_publish(protocol, request).await?;
        self.claim_ingest(name, protocol, tracks)
    }

    /// Takes `name` for a stream pulled from another edge, which authorized its publisher
    /// already. Not held to the publisher ceiling: a pull serves viewers this node admitted.
    pub fn start_pulled(&self, name: &str, tracks: Vec<TrackInfo>) -> Result<Ingest> {
        if !crate::stream::is_valid_name(name) {
            return Err(Error::InvalidStreamName(name.to_owned()));
        }
        self.claim_ingest(name.to_owned(), IngestProtocol::Relay, tracks)
    }

    fn claim_ingest(
        &self,
        name: String,
        protocol: IngestProtocol,
        tracks: Vec<TrackInfo>,
    ) -> Result<Ingest> {
        let session = super::session::new_session_id();
        let last_media = Arc::new(AtomicU64::new(0));
        let revoked = Arc::new(AtomicBool::new(false));
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let claim = self.shared.streams.claim(
            &name,
            protocol,
            tracks.clone(),
            NewPublisher {
                session: session.clone(),
                shard: None,
                last_media: Arc::clone(&last_media),
                revoked: Arc::clone(&revoked),
                keyframe_wanted: Some(Arc::clone(&keyframe_wanted)),
            },
            Instant::now(),
        )?;
        self.take_over(&name, &claim);
        ::metrics::gauge!("waveguide_publishers", "protocol" => protocol.as_str()).increment(1.0);
        info!(%session, stream = %name, protocol = protocol.as_str(), publishes = claim.epoch + 1, "publisher started");
        Ok(Ingest {
            shared: Arc::clone(&self.shared),
            protocol,
            session,
            name,
            stream: claim.stream,
            epoch: claim.epoch,
            tracks,
            counters: claim.counters,
            last_media,
            revoked,
            keyframe_wanted,
            viewers: claim.viewers,
            ended: false,
        })
    }
}

impl Ingest {
    /// The public stream name the key resolved to.
    pub fn stream(&self) -> &str {
        &self.name
    }

    /// Tells the operator something about this publisher, in the stream's REST status.
    pub fn notice(&self, text: &str) {
        self.shared.streams.add_notice(&self.name, text);
    }

    /// Whether anyone watches (a WebRTC viewer or a tap such as HLS muxing): work only viewers need (an audio transcode) can wait for one.
    pub fn has_viewers(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
            || self.shared.streams.taps().is_tapped(self.stream)
    }

    /// Whether a WebRTC viewer (or a relay pull) watches: work only they need (the AAC → Opus
    /// transcode of an RTMP publisher, whose taps take the AAC as sent) can wait for one.
    pub fn has_webrtc_viewers(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
    }

    /// Taps (LL-HLS) get this publisher's original AAC audio, described by `config` (its
    /// `AudioSpecificConfig`), as taps-only packets beside the transcode viewers get.
    pub fn set_source_audio(&self, config: bytes::Bytes) {
        self.shared.streams.set_source_audio(&self.name, config);
    }

    /// Whether a viewer asked for a keyframe since the last call. An input that can ask its
    /// source for one (the relay: a PLI upstream) should, and the request is counted on the
    /// video track; others (RTMP, FTL) never ask and rely on the keyframe cache.
    pub fn take_keyframe_request(&self) -> bool {
        let wanted = self.keyframe_wanted.swap(false, Ordering::Relaxed);
        if wanted && let Some(index) = self.tracks.iter().position(|t| t.kind == TrackKind::Video) {
            self.counters[index]
                .keyframe_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        wanted
    }

    /// Whether a newer publisher took the stream over; the input should then disconnect.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Sends one RTP packet of the `kind` track to every viewer. SSRC and payload type are
    /// the input's own; they are rewritten per viewer.
    pub fn send(&self, kind: TrackKind, rtp: rtp::Packet) -> Result<()> {
        self.send_with(kind, rtp, Delivery::default())
    }

    /// [`Ingest::send`] for a packet that only some outputs get, or whose decode time differs
    /// from its presentation time (an RTMP publisher's B-frames).
    pub fn send_with(&self, kind: TrackKind, rtp: rtp::Packet, delivery: Delivery) -> Result<()> {
        if self.is_revoked() {
            return Err(Error::StreamBusy(self.name.clone()));
        }
        let Some(index) = self.tracks.iter().position(|t| t.kind == kind) else {
            return Ok(());
        };
        let source = Source {
            stream: self.stream,
            epoch: self.epoch,
            counters: &self.counters[index],
            last_media: &self.last_media,
        };
        let packet = source.packet(
            &self.tracks[index],
            rtp,
            Instant::now(),
            &self.shared,
            delivery,
        );
        self.shared.fan_out(packet);
        Ok(())
    }
}

impl Ingest {
    /// The publisher ended the stream on purpose: viewers end now instead of waiting out the
    /// reconnect grace period (which is what dropping the `Ingest` gives them).
    pub fn end(mut self) {
        self.ended = true;
        self.shared.end_stream(&self.name, &self.session);
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.ended {
            self.shared
                .streams
                .publisher_gone(&self.name, &self.session, Instant::now());
        }
        ::metrics::gauge!("waveguide_publishers", "protocol" => self.protocol.as_str())
            .decrement(1.0);
        info!(session = %self.session, stream = %self.name, "publisher ended");
    }
}
