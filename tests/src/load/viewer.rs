//! One WHEP viewer: a real `rtc` peer connection (ICE, DTLS, SRTP decryption and
//! authentication of every packet) that records its join time, loss and per-packet delay.
//! Many run as tasks on one small runtime; each owns its socket and reads datagrams in
//! batches, so per-packet cost is `rtc`'s receive path plus a few counters.

use super::config::SrtpChoice;
use super::peer::{AUDIO_PT, Peer, Role, VIDEO_PT};
use super::receive::{KeyframeTracker, SeqTracker, clear_rtp_header};
use super::sendlog::{SendLog, fingerprint};
use super::signal;
use super::stats::Histogram;
use reqwest::Url;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Datagrams read per wake-up before the task yields to its runtime.
const BATCH: usize = 64;

/// Counters every viewer adds to, read by the sampler for windowed rates.
#[derive(Debug, Default)]
pub struct Totals {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
}

/// What one viewer is to do.
#[derive(Clone)]
pub struct ViewerPlan {
    pub index: usize,
    pub url: Url,
    pub token: Option<String>,
    pub srtp: SrtpChoice,
    pub socket_buffer: usize,
    /// Packets received from here on count in the steady-state window.
    pub steady_from: Instant,
    pub stop: Instant,
    /// Once joined, only one RTP packet in this many goes through `rtc` (decrypted,
    /// authenticated, timed); the others are counted from their clear header. 1: every packet.
    pub verify_every: u32,
    /// Leave (DELETE) as soon as the first complete keyframe arrived, instead of at `stop`
    /// (join/leave churn).
    pub leave_when_joined: bool,
    /// Send times, when this process publishes.
    pub log: Option<Arc<SendLog>>,
    pub totals: Arc<Totals>,
}

/// What one viewer saw.
#[derive(Debug, Default)]
pub struct ViewerResult {
    pub index: usize,
    /// Why the viewer never got going (signalling or set-up failure), or why it ended early.
    pub error: Option<String>,
    /// POST sent → connection state `connected` (ICE + DTLS).
    pub connected: Option<Duration>,
    /// POST sent → first complete keyframe received.
    pub joined: Option<Duration>,
    /// The connection failed or closed after it had connected.
    pub dropped: bool,
    pub video: SeqTracker,
    pub audio: SeqTracker,
    /// RTP packets of neither negotiated payload type.
    pub unknown: u64,
    pub bytes: u64,
    pub datagrams: u64,
    /// Packets sent after the POST, send → receive, microseconds.
    pub delay_all: Histogram,
    /// The same for packets received in the steady-state window.
    pub delay_steady: Histogram,
    pub read_errors: u64,
    pub send_failures: u64,
    pub delete_status: Option<u16>,
    /// RTP packets counted from their clear header without going through `rtc`.
    pub unverified: u64,
}

impl ViewerResult {
    pub(crate) fn failed(index: usize, why: String) -> Self {
        Self {
            index,
            error: Some(why),
            ..Default::default()
        }
    }
}

/// Runs one viewer until `plan.stop`, then deletes its session.
pub async fn run(plan: ViewerPlan, client: reqwest::Client) -> ViewerResult {
    let posted = Instant::now();
    let (mut peer, offer) = match Peer::offer(Role::View, plan.srtp, plan.socket_buffer, posted) {
        Ok(p) => p,
        Err(e) => return ViewerResult::failed(plan.index, e.to_string()),
    };
    let session = match signal::post_offer(&client, &plan.url, plan.token.as_deref(), offer).await {
        Ok(s) => s,
        Err(e) => return ViewerResult::failed(plan.index, e.to_string()),
    };
    if let Err(e) = peer.answer(session.answer, Instant::now()) {
        return ViewerResult::failed(plan.index, e.to_string());
    }
    let mut viewer = Receiving {
        result: ViewerResult {
            index: plan.index,
            ..Default::default()
        },
        keyframe: KeyframeTracker::default(),
        marked: false,
        touched: true,
        rtp_after_join: 0,
        posted,
        batch: Vec::with_capacity(BATCH),
    };
    viewer.receive(&plan, &mut peer).await;
    let mut result = viewer.result;
    result.read_errors = peer.read_errors;
    result.send_failures = peer.send_failures;
    if let Some(location) = &session.location {
        result.delete_status = signal::delete(&client, location, plan.token.as_deref()).await;
    }
    let _ = peer.pc.close();
    peer.flush();
    result
}

struct Receiving {
    result: ViewerResult,
    keyframe: KeyframeTracker,
    /// Whether the trackers were marked at the start of the steady window.
    marked: bool,
    /// Whether `rtc` was given anything since the loop last drained it.
    touched: bool,
    /// RTP packets since the first complete keyframe, for `verify_every` sampling.
    rtp_after_join: u64,
    posted: Instant,
    /// `(fingerprint, receive ns)` of the packets of one batch, for one send-log lookup.
    batch: Vec<(u64, u64)>,
}

impl Receiving {
    async fn receive(&mut self, plan: &ViewerPlan, peer: &mut Peer) {
        let mut buf = vec![0u8; 2048];
        let sleep = tokio::time::sleep_until(plan.stop.into());
        tokio::pin!(sleep);
        let mut armed = plan.stop;
        let mut timer = plan.stop;
        loop {
            let now = Instant::now();
            if now >= plan.stop {
                return;
            }
            if now >= timer {
                peer.handle_timeout(now);
                self.touched = true;
            }
            // Packets counted from their clear header leave the connection as it was: only
            // when `rtc` was fed is there anything to send, report or reschedule.
            if std::mem::take(&mut self.touched) {
                peer.flush();
                if !self.events(peer, now) {
                    return;
                }
                timer = peer.pc.poll_timeout().unwrap_or(plan.stop);
            }
            let next = timer.max(now + Duration::from_micros(200)).min(plan.stop);
            if next != armed {
                sleep.as_mut().reset(next.into());
                armed = next;
            }
            tokio::select! {
                biased;
                received = peer.socket().recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    let mut alive = self.datagram(plan, peer, &buf[..n], from, Instant::now());
                    let mut bytes = n as u64;
                    let mut count: u64 = 1;
                    while alive && count < BATCH as u64 {
                        let Ok((n, from)) = peer.socket().try_recv_from(&mut buf) else { break };
                        alive = self.datagram(plan, peer, &buf[..n], from, Instant::now());
                        bytes += n as u64;
                        count += 1;
                    }
                    plan.totals.bytes.fetch_add(bytes, Ordering::Relaxed);
                    plan.totals.packets.fetch_add(count, Ordering::Relaxed);
                    self.lookup_delays(plan);
                    if !alive || (plan.leave_when_joined && self.result.joined.is_some()) {
                        return;
                    }
                }
                _ = &mut sleep => {}
            }
        }
    }

    /// Handles state changes; `false` once the connection is over.
    fn events(&mut self, peer: &mut Peer, now: Instant) -> bool {
        while let Some(event) = peer.pc.poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
                continue;
            };
            match state {
                RTCPeerConnectionState::Connected if self.result.connected.is_none() => {
                    self.result.connected = Some(now.duration_since(self.posted));
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    self.result.dropped = self.result.connected.is_some();
                    self.result.error = Some(format!("connection {state}"));
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    /// Feeds one datagram and drains what it produced. Until connected, events go first: `rtc`
    /// installs the SRTP keys while delivering the DTLS handshake's completion event, so media
    /// read in the same batch before that drain would be dropped. `false` once the connection
    /// is over.
    fn datagram(
        &mut self,
        plan: &ViewerPlan,
        peer: &mut Peer,
        data: &[u8],
        from: std::net::SocketAddr,
        now: Instant,
    ) -> bool {
        self.result.bytes += data.len() as u64;
        self.result.datagrams += 1;
        if now >= plan.steady_from && !self.marked {
            self.marked = true;
            self.result.video.mark();
            self.result.audio.mark();
        }
        if plan.verify_every > 1
            && self.keyframe.done()
            && let Some(h) = clear_rtp_header(data)
        {
            self.rtp_after_join += 1;
            if !self
                .rtp_after_join
                .is_multiple_of(u64::from(plan.verify_every))
            {
                self.result.unverified += 1;
                match h.payload_type {
                    VIDEO_PT => self.result.video.on_packet(h.seq),
                    AUDIO_PT => self.result.audio.on_packet(h.seq),
                    _ => self.result.unknown += 1,
                }
                return true;
            }
        }
        peer.handle_datagram(data, from, now);
        self.touched = true;
        // Once connected, the loop's once-per-batch drain of events is enough.
        let alive = self.result.connected.is_some() || self.events(peer, now);
        while let Some(msg) = peer.pc.poll_read() {
            let RTCMessage::RtpPacket(_, rtp) = msg.message else {
                continue;
            };
            let h = &rtp.header;
            match h.payload_type {
                VIDEO_PT => {
                    self.result.video.on_packet(h.sequence_number);
                    if !self.keyframe.done()
                        && self.keyframe.on_packet(
                            h.sequence_number,
                            h.timestamp,
                            h.marker,
                            &rtp.payload,
                        )
                    {
                        self.result.joined = Some(now.duration_since(self.posted));
                    }
                }
                AUDIO_PT => self.result.audio.on_packet(h.sequence_number),
                _ => self.result.unknown += 1,
            }
            if let Some(log) = &plan.log {
                self.batch.push((fingerprint(&rtp.payload), log.nanos(now)));
            }
        }
        alive
    }

    /// Turns the batch's receive times into delays, for packets sent after the POST (the
    /// server's keyframe-cache replay of older packets is join time, not delay).
    fn lookup_delays(&mut self, plan: &ViewerPlan) {
        let Some(log) = &plan.log else {
            return;
        };
        let posted = log.nanos(self.posted);
        let steady = log.nanos(plan.steady_from);
        let (all, steady_h) = (&mut self.result.delay_all, &mut self.result.delay_steady);
        log.lookup(&self.batch, |sent, received| {
            if sent < posted {
                return;
            }
            let micros = received.saturating_sub(sent) / 1_000;
            all.record(micros);
            if received >= steady {
                steady_h.record(micros);
            }
        });
        self.batch.clear();
    }
}
