//! The registry of streams, behind one short-held std mutex (never held across `.await`, never
//! taken per packet).

use super::{IngestProtocol, StreamStatus, TrackStatus};
use crate::error::{Error, Result};
use crate::media::{CodecParams, TrackKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A publisher whose last packet is older than this may be replaced by a new one with the same
/// credentials (OBS reconnecting after a network blip never sends DELETE).
const STALE_PUBLISHER: Duration = Duration::from_millis(1500);
/// A publisher still connecting is protected this long before it counts as stale.
const CONNECTING_GRACE: Duration = Duration::from_secs(5);

/// Counters one track's publisher updates per packet (atomics only).
#[derive(Debug, Default)]
pub struct TrackCounters {
    /// Payload bytes received.
    pub bytes: AtomicU64,
    /// Packets received.
    pub packets: AtomicU64,
    /// NACK feedback messages viewers sent about this track.
    pub nacks: AtomicU64,
    /// Keyframe requests (PLI) sent to the publisher for this track.
    pub keyframe_requests: AtomicU64,
    /// When the last keyframe started (Unix milliseconds; 0: none yet).
    pub last_keyframe_unix_ms: AtomicU64,
}

/// A track as the registry knows it.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// Audio or video.
    pub kind: TrackKind,
    /// What the publisher negotiated.
    pub codec: CodecParams,
}

/// What a viewer needs to join a stream.
#[derive(Debug, Clone)]
pub struct StreamRef {
    /// Numeric id used on the media path.
    pub id: u64,
    /// Public name.
    pub name: String,
    /// Tracks, audio first when present.
    pub tracks: Vec<TrackInfo>,
    /// The shard holding the publisher, when one is connected (for keyframe requests).
    pub publisher_shard: Option<usize>,
    /// Its viewers now (relay pulls included).
    pub viewers: usize,
}

/// The outcome of a publisher taking a stream.
#[derive(Debug)]
pub struct PublisherClaim {
    /// Numeric id of the stream (unchanged when a publisher comes back).
    pub stream: u64,
    /// The new publisher generation.
    pub epoch: u32,
    /// Counters the publisher updates, one per track, in `tracks` order.
    pub counters: Vec<Arc<TrackCounters>>,
    /// The publisher session that was replaced (stale), which must be closed.
    pub replaced: Option<String>,
    /// Whether viewers held from the previous publisher can continue (same codecs).
    pub viewers_continue: bool,
    /// Viewers of the stream right now (read without the registry lock).
    pub viewers: Arc<AtomicUsize>,
}

/// A publisher asking for a stream.
#[derive(Debug)]
pub struct NewPublisher {
    /// Its session id.
    pub session: String,
    /// The shard holding its peer connection; `None` for inputs that cannot take keyframe
    /// requests (RTMP, FTL).
    pub shard: Option<usize>,
    /// Where it stamps the time of its last packet (milliseconds of [`Streams::clock_ms`]).
    pub last_media: Arc<AtomicU64>,
    /// Set when a newer publisher takes the stream over; the input then stops.
    pub revoked: Arc<AtomicBool>,
    /// Set when a viewer needs a keyframe, for inputs without a shard that can ask their
    /// source for one (the relay); `None` for those that cannot (RTMP, FTL).
    pub keyframe_wanted: Option<Arc<AtomicBool>>,
}

/// Where a stream's keyframe requests go.
#[derive(Debug, Clone)]
pub enum KeyframeRoute {
    /// The shard holding the WebRTC publisher (it sends the PLI).
    Shard(usize),
    /// A flag the input polls (the relay sends a PLI upstream).
    Flag(Arc<AtomicBool>),
}

#[derive(Debug)]
struct Publisher {
    session: String,
    shard: Option<usize>,
    since: Instant,
    last_media: Arc<AtomicU64>,
    revoked: Arc<AtomicBool>,
    keyframe_wanted: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    protocol: IngestProtocol,
    started: Instant,
    tracks: Vec<(
        TrackInfo,
        Arc<TrackCounters>,
        u64, /* bytes at last sample */
        u64, /* bps */
    )>,
    publisher: Option<Publisher>,
    offline_since: Option<Instant>,
    epoch: u32,
    /// Shared with the publisher, which may skip work nobody watches (the RTMP audio transcode).
    viewers: Arc<AtomicUsize>,
    /// Things the operator should know about the current publisher (B-frames dropped …).
    notices: Vec<String>,
    /// The current publisher's AAC `AudioSpecificConfig`, when its audio reaches viewers
    /// transcoded (RTMP): taps that can carry AAC get the original frames.
    source_audio: Option<bytes::Bytes>,
}

/// All streams of the node.
#[derive(Debug)]
pub struct Streams {
    inner: Mutex<Inner>,
    /// Origin of the millisecond clock publishers store in `last_media`.
    clock_base: Instant,
    /// Bumped whenever a stream starts, changes publisher or ends, so the cluster reporter
    /// tells the orchestrator at once instead of at its next heartbeat.
    changes: tokio::sync::watch::Sender<u64>,
    /// Outputs that read a stream's packets without being WebRTC peers (HLS).
    taps: Arc<super::Taps>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, Entry>,
    next_id: u64,
    last_sample: Option<Instant>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            clock_base: Instant::now(),
            changes: tokio::sync::watch::Sender::new(0),
            taps: Arc::default(),
        }
    }
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock is a bug elsewhere; the data stays consistent
        // (every update is a single assignment), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The taps the fan-out feeds.
    pub fn taps(&self) -> &Arc<super::Taps> {
        &self.taps
    }

    /// `name` as a viewer joins it, with a tap on its packets holding up to `capacity` unread.
    pub fn tap(&self, name: &str, capacity: usize) -> Option<(StreamRef, super::Tap)> {
        let stream = self.get(name)?;
        let tap = self.taps.open(stream.id, capacity);
        Some((stream, tap))
    }

    /// Wakes when the set of streams (or a stream's publisher) changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Milliseconds since the registry started, for `last_media` stamps.
    pub fn clock_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.clock_base).as_millis() as u64
    }

    /// A publisher takes `name`: creates the stream, resumes it after a drop, or refuses (409)
    /// while another publisher is live.
    pub fn claim(
        &self,
        name: &str,
        protocol: IngestProtocol,
        tracks: Vec<TrackInfo>,
        publisher: NewPublisher,
        now: Instant,
    ) -> Result<PublisherClaim> {
        let now_ms = self.clock_ms(now);
        let mut inner = self.lock();
        if !inner.by_name.contains_key(name) {
            inner.next_id += 1;
            let id = inner.next_id;
            inner.by_name.insert(
                name.to_owned(),
                Entry {
                    id,
                    protocol,
                    started: now,
                    tracks: Vec::new(),
                    publisher: None,
                    offline_since: None,
                    epoch: 0,
                    viewers: Arc::default(),
                    notices: Vec::new(),
                    source_audio: None,
                },
            );
        }
        let entry = inner
            .by_name
            .get_mut(name)
            .expect("inserted just above under the same lock");
        let mut replaced = None;
        if let Some(p) = &entry.publisher {
            let last = p.last_media.load(Ordering::Relaxed);
            let idle = Duration::from_millis(now_ms.saturating_sub(last));
            let connecting = last == 0 && now.duration_since(p.since) < CONNECTING_GRACE;
            if connecting || (last != 0 && idle < STALE_PUBLISHER) {
                return Err(Error::StreamBusy(name.to_owned()));
            }
            p.revoked.store(true, Ordering::Relaxed);
            replaced = Some(p.session.clone());
        }
        let first_publish = entry.tracks.is_empty();
        let viewers_continue = first_publish
            || (entry.tracks.len() == tracks.len()
                && entry
                    .tracks
                    .iter()
                    .zip(&tracks)
                    .all(|(a, b)| a.0.codec == b.codec));
        if !first_publish {
            entry.epoch += 1;
        }
        entry.protocol = protocol;
        entry.notices.clear();
        entry.source_audio = None;
        entry.tracks = tracks
            .into_iter()
            .map(|t| (t, Arc::new(TrackCounters::default()), 0, 0))
            .collect();
        entry.publisher = Some(Publisher {
            session: publisher.session,
            shard: publisher.shard,
            since: now,
            last_media: publisher.last_media,
            revoked: publisher.revoked,
            keyframe_wanted: publisher.keyframe_wanted,
        });
        entry.offline_since = None;
        let claim = PublisherClaim {
            stream: entry.id,
            epoch: entry.epoch,
            counters: entry.tracks.iter().map(|t| Arc::clone(&t.1)).collect(),
            replaced,
            viewers_continue,
            viewers: Arc::clone(&entry.viewers),
        };
        drop(inner);
        self.changed();
        Ok(claim)
    }

    /// The publisher `session` of `name` is gone; viewers wait for the grace period.
    pub fn publisher_gone(&self, name: &str, session: &str, now: Instant) {
        let mut inner = self.lock();
        if let Some(e) = inner.by_name.get_mut(name)
            && e.publisher.as_ref().is_some_and(|p| p.session == session)
        {
            e.publisher = None;
            e.offline_since = Some(now);
        }
    }

    /// The publisher `session` ended `name` on purpose (WHIP DELETE, RTMP deleteStream, FTL
    /// DISCONNECT): the stream is over now, without a grace period. Returns its id.
    pub fn end(&self, name: &str, session: &str) -> Option<u64> {
        let mut inner = self.lock();
        let current = inner
            .by_name
            .get(name)
            .is_some_and(|e| e.publisher.as_ref().is_some_and(|p| p.session == session));
        if !current {
            return None;
        }
        let id = inner.by_name.remove(name).map(|e| e.id);
        drop(inner);
        self.changed();
        id
    }

    /// Ends `name` whoever publishes it (an operator's kick): the publisher is revoked (a
    /// non-WebRTC input disconnects on its next packet). Returns the stream id and the
    /// publisher's session, if one was live.
    pub fn kick(&self, name: &str) -> Option<(u64, Option<String>)> {
        let mut inner = self.lock();
        let entry = inner.by_name.remove(name)?;
        drop(inner);
        let session = entry.publisher.map(|p| {
            p.revoked.store(true, Ordering::Relaxed);
            p.session
        });
        self.changed();
        Some((entry.id, session))
    }

    /// Removes streams whose publisher has been gone longer than `grace`; returns their ids.
    pub fn expire(&self, grace: Duration, now: Instant) -> Vec<(u64, String)> {
        let mut inner = self.lock();
        let expired: Vec<(u64, String)> = inner
            .by_name
            .iter()
            .filter(|(_, e)| {
                e.offline_since
                    .is_some_and(|t| now.duration_since(t) >= grace)
            })
            .map(|(n, e)| (e.id, n.clone()))
            .collect();
        for (_, name) in &expired {
            inner.by_name.remove(name);
        }
        drop(inner);
        if !expired.is_empty() {
            self.changed();
        }
        expired
    }

    /// Recomputes per-track bitrates; called about once a second.
    pub fn sample_bitrates(&self, now: Instant) {
        let mut inner = self.lock();
        let elapsed = inner
            .last_sample
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        inner.last_sample = Some(now);
        for e in inner.by_name.values_mut() {
            for (_, counters, last_bytes, bps) in &mut e.tracks {
                let bytes = counters.bytes.load(Ordering::Relaxed);
                if elapsed > 0.0 {
                    *bps = ((bytes.saturating_sub(*last_bytes)) as f64 * 8.0 / elapsed) as u64;
                }
                *last_bytes = bytes;
            }
        }
    }

    /// What a viewer needs to join `name`.
    pub fn get(&self, name: &str) -> Option<StreamRef> {
        let inner = self.lock();
        inner.by_name.get(name).map(|e| StreamRef {
            id: e.id,
            name: name.to_owned(),
            tracks: e.tracks.iter().map(|t| t.0.clone()).collect(),
            publisher_shard: e.publisher.as_ref().and_then(|p| p.shard),
            viewers: e.viewers.load(Ordering::Relaxed),
        })
    }

    /// Where keyframe requests for stream `id` go now; `None` when its publisher (if any)
    /// cannot take them.
    pub fn keyframe_route(&self, id: u64) -> Option<KeyframeRoute> {
        let inner = self.lock();
        let p = inner
            .by_name
            .values()
            .find(|e| e.id == id)?
            .publisher
            .as_ref()?;
        match (p.shard, &p.keyframe_wanted) {
            (Some(shard), _) => Some(KeyframeRoute::Shard(shard)),
            (None, Some(flag)) => Some(KeyframeRoute::Flag(Arc::clone(flag))),
            (None, None) => None,
        }
    }

    /// Counts NACK feedback viewers sent about the `kind` track of stream `id`.
    pub fn count_nacks(&self, id: u64, kind: TrackKind, nacks: u64) {
        let inner = self.lock();
        if let Some(e) = inner.by_name.values().find(|e| e.id == id)
            && let Some((_, c, ..)) = e.tracks.iter().find(|(t, ..)| t.kind == kind)
        {
            c.nacks.fetch_add(nacks, Ordering::Relaxed);
        }
    }

    /// Records something the operator should know about `name`'s current publisher; shown
    /// in the stream's REST status. Repeats are kept once.
    pub fn add_notice(&self, name: &str, notice: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.by_name.get_mut(name)
            && !e.notices.iter().any(|n| n == notice)
            && e.notices.len() < 16
        {
            e.notices.push(notice.to_owned());
        }
    }

    /// Records the AAC `AudioSpecificConfig` of `name`'s current publisher, whose original audio
    /// frames taps get beside the transcode viewers get.
    pub fn set_source_audio(&self, name: &str, config: bytes::Bytes) {
        if let Some(e) = self.lock().by_name.get_mut(name) {
            e.source_audio = Some(config);
        }
    }

    /// The AAC `AudioSpecificConfig` of `name`'s current publisher, if its audio is AAC.
    pub fn source_audio(&self, name: &str) -> Option<bytes::Bytes> {
        self.lock().by_name.get(name)?.source_audio.clone()
    }

    /// Counts a viewer in or out.
    pub fn add_viewers(&self, name: &str, delta: isize) {
        let mut inner = self.lock();
        if let Some(e) = inner.by_name.get_mut(name) {
            let now = e
                .viewers
                .load(Ordering::Relaxed)
                .saturating_add_signed(delta);
            e.viewers.store(now, Ordering::Relaxed);
        }
    }

    /// Every stream, sorted by name.
    pub fn statuses(&self, now: Instant) -> Vec<StreamStatus> {
        let inner = self.lock();
        let mut out: Vec<StreamStatus> = inner
            .by_name
            .iter()
            .map(|(name, e)| status_of(name, e, now))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One stream.
    pub fn status(&self, name: &str, now: Instant) -> Option<StreamStatus> {
        let inner = self.lock();
        inner.by_name.get(name).map(|e| status_of(name, e, now))
    }

    /// Streams with a connected publisher, by protocol (for gauges).
    pub fn live_counts(&self) -> (usize, usize) {
        let inner = self.lock();
        let live = inner
            .by_name
            .values()
            .filter(|e| e.publisher.is_some())
            .count();
        let viewers = inner
            .by_name
            .values()
            .map(|e| e.viewers.load(Ordering::Relaxed))
            .sum();
        (live, viewers)
    }
}

fn status_of(name: &str, e: &Entry, now: Instant) -> StreamStatus {
    StreamStatus {
        name: name.to_owned(),
        protocol: e.protocol,
        state: if e.publisher.is_some() {
            "live"
        } else {
            "reconnecting"
        },
        tracks: e
            .tracks
            .iter()
            .map(|(t, c, _, bps)| TrackStatus {
                kind: t.kind,
                codec: t.codec.codec,
                fmtp: t.codec.fmtp.clone(),
                bitrate_bps: *bps,
                packets: c.packets.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                nacks: c.nacks.load(Ordering::Relaxed),
                keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
                last_keyframe_unix_ms: Some(c.last_keyframe_unix_ms.load(Ordering::Relaxed))
                    .filter(|&ms| ms != 0),
            })
            .collect(),
        viewers: e.viewers.load(Ordering::Relaxed),
        uptime_secs: now.duration_since(e.started).as_secs(),
        publishes: e.epoch + 1,
        notices: e.notices.clone(),
    }
}
