//! [`RtcViewer`]: one WHEP viewer made of an `rtc` peer connection on its own thread, for the
//! attack suites: it counts every datagram its socket receives (before SRTP, so resends that
//! SRTP's replay check drops are still seen), and it can send crafted NACKs.
//!
//! The peer itself is the load tool's ([`crate::load::peer::Peer`]): a real ICE, DTLS and SRTP
//! endpoint on a loopback socket.

use crate::load::SrtpChoice;
use crate::load::peer::{Peer, Role, VIDEO_PT};
use crate::load::receive::clear_rtp_header;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A NACK storm: every `every`, one NACK of `pairs` pairs over the newest video packets.
#[derive(Debug, Clone, Copy)]
pub struct NackStorm {
    pub every: Duration,
    pub pairs: usize,
}

/// What the viewer received, counted from the datagrams' clear headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Video RTP datagrams, resends included.
    pub video_datagrams: u64,
    /// Their bytes.
    pub video_bytes: u64,
    /// Distinct video sequence numbers among them.
    pub video_distinct: u64,
    /// Bytes of the first datagram of each distinct sequence number.
    pub distinct_bytes: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
}

impl Received {
    /// Datagrams that repeated a sequence number (resends).
    pub fn resends(&self) -> u64 {
        self.video_datagrams - self.video_distinct
    }

    /// Bytes of those.
    pub fn resent_bytes(&self) -> u64 {
        self.video_bytes - self.distinct_bytes
    }

    /// What was received between `earlier` and `self`.
    pub fn since(&self, earlier: &Received) -> Received {
        Received {
            video_datagrams: self.video_datagrams - earlier.video_datagrams,
            video_bytes: self.video_bytes - earlier.video_bytes,
            video_distinct: self.video_distinct - earlier.video_distinct,
            distinct_bytes: self.distinct_bytes - earlier.distinct_bytes,
            nacks_sent: self.nacks_sent - earlier.nacks_sent,
        }
    }
}

#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    stop: AtomicBool,
    received: Mutex<Received>,
    storm: Mutex<Option<NackStorm>>,
}

/// A running viewer; stopped (its session left to time out) on drop.
pub struct RtcViewer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The edge's answer.
    pub answer: String,
    /// Our offer.
    pub offer: String,
    /// The session resource.
    pub location: String,
    /// The viewer's own socket.
    pub local: SocketAddr,
}

/// Signalling done on the viewer's thread.
struct Joined {
    answer: String,
    offer: String,
    location: String,
    local: SocketAddr,
}

impl RtcViewer {
    /// POSTs an offer to `whep_url` (from `source`, when given: another loopback address as
    /// another client) and runs the connection on a thread of its own. Panics if the POST is
    /// not answered with `201`.
    pub fn join(whep_url: &str, source: Option<IpAddr>) -> RtcViewer {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let url = whep_url.to_owned();
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rtc-viewer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(run(url, source, inner, tx));
            })
            .expect("spawn the viewer thread");
        let joined = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(joined)) => joined,
            Ok(Err(e)) => panic!("WHEP viewer: {e}"),
            Err(e) => panic!("WHEP viewer: no answer ({e})"),
        };
        RtcViewer {
            shared,
            thread: Some(thread),
            answer: joined.answer,
            offer: joined.offer,
            location: joined.location,
            local: joined.local,
        }
    }

    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Waits until ICE and DTLS are done; panics after `timeout`.
    pub fn wait_connected(&self, timeout: Duration) {
        crate::poll_until(
            "the rtc viewer connected",
            timeout,
            Duration::from_millis(20),
            || self.connected().then_some(()),
        );
    }

    /// What it received so far.
    pub fn received(&self) -> Received {
        *self
            .shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or with `None` stops) a NACK storm.
    pub fn storm(&self, storm: Option<NackStorm>) {
        *self.shared.storm.lock().unwrap_or_else(|p| p.into_inner()) = storm;
    }

    /// The edge's media address for this viewer (its answer's host candidate).
    pub fn edge_media_addr(&self) -> SocketAddr {
        candidate_addr(&self.answer).expect("a host candidate in the answer")
    }

    /// `ufrag` of an SDP.
    pub fn ufrag(sdp: &str) -> String {
        crate::offer::sdp_attr(sdp, "ice-ufrag")
            .expect("an ice-ufrag")
            .trim()
            .to_owned()
    }
}

impl Drop for RtcViewer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The address of the first `typ host` candidate of an SDP.
pub fn candidate_addr(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if !fields.first()?.starts_with("a=candidate:") || fields.get(7) != Some(&"host") {
            return None;
        }
        format!("{}:{}", fields.get(4)?, fields.get(5)?)
            .parse()
            .ok()
    })
}

async fn run(
    url: String,
    source: Option<IpAddr>,
    shared: Arc<Shared>,
    joined: mpsc::Sender<Result<Joined, String>>,
) {
    let now = Instant::now();
    let (mut peer, offer) = match Peer::offer(Role::View, SrtpChoice::Default, 1 << 22, now) {
        Ok(p) => p,
        Err(e) => {
            let _ = joined.send(Err(e.to_string()));
            return;
        }
    };
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ip) = source {
        client = client.local_address(ip);
    }
    let client = client.build().expect("an HTTP client");
    let response = client
        .post(&url)
        .header("Content-Type", "application/sdp")
        .body(offer.clone())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let _ = joined.send(Err(format!("POST {url}: {e}")));
            return;
        }
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answer = response.text().await.unwrap_or_default();
    if status != 201 {
        let _ = joined.send(Err(format!("POST {url}: {status} {answer}")));
        return;
    }
    if let Err(e) = peer.answer(answer.clone(), Instant::now()) {
        let _ = joined.send(Err(format!("answer: {e}")));
        return;
    }
    let local = peer.socket().local_addr().expect("a local address");
    let _ = joined.send(Ok(Joined {
        answer,
        offer,
        location,
        local,
    }));
    receive(&mut peer, &shared).await;
    let _ = peer.pc.close();
    peer.flush();
}

/// Reads and counts until told to stop: every datagram goes to `rtc` too (ICE, DTLS, SRTP).
async fn receive(peer: &mut Peer, shared: &Shared) {
    let mut buf = vec![0u8; 2048];
    let mut seen = vec![false; 1 << 16];
    let mut newest: Option<u16> = None;
    let mut media_ssrc = None;
    let mut next_nack = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if peer.pc.poll_timeout().is_some_and(|t| t <= now) {
            peer.handle_timeout(now);
        }
        peer.flush();
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => {
                        shared.connected.store(true, Ordering::Relaxed)
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return,
                    _ => {}
                }
            }
        }
        while peer.pc.poll_read().is_some() {}
        let storm = *shared.storm.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(storm), Some(newest), Some(ssrc)) = (storm, newest, media_ssrc)
            && now >= next_nack
        {
            next_nack = now + storm.every;
            if send_nack(peer, storm, newest, ssrc, now) {
                shared
                    .received
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .nacks_sent += 1;
            }
        }
        let deadline = peer
            .pc
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(20))
            .min(now + Duration::from_millis(5))
            .max(now + Duration::from_micros(200));
        let got = tokio::time::timeout_at(deadline.into(), peer.socket().recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = got else {
            continue;
        };
        let mut batch = vec![(buf[..n].to_vec(), from)];
        while batch.len() < 256 {
            match peer.socket().try_recv_from(&mut buf) {
                Ok((n, from)) => batch.push((buf[..n].to_vec(), from)),
                Err(_) => break,
            }
        }
        {
            let mut r = shared.received.lock().unwrap_or_else(|p| p.into_inner());
            for (data, _) in &batch {
                let Some(h) = clear_rtp_header(data) else {
                    continue;
                };
                if h.payload_type != VIDEO_PT {
                    continue;
                }
                media_ssrc = Some(u32::from_be_bytes([data[8], data[9], data[10], data[11]]));
                r.video_datagrams += 1;
                r.video_bytes += data.len() as u64;
                if !seen[usize::from(h.seq)] {
                    seen[usize::from(h.seq)] = true;
                    r.video_distinct += 1;
                    r.distinct_bytes += data.len() as u64;
                    if newest.is_none_or(|s| h.seq.wrapping_sub(s) < 0x8000) {
                        newest = Some(h.seq);
                    }
                }
            }
        }
        for (data, from) in batch {
            peer.handle_datagram(&data, from, Instant::now());
        }
    }
}

/// Pairs per NACK packet: `rtc` marshals at most 253 (its length check is a byte's worth),
/// so a longer list goes as several NACKs in one compound packet, as the RFC allows.
const PAIRS_PER_PACKET: usize = 200;

/// One compound RTCP packet of `storm.pairs` NACK pairs cycling over the 510 packets before
/// `newest` (each pair names 17): a packet is named about `pairs / 30` times. Whether it was
/// written.
fn send_nack(peer: &mut Peer, storm: NackStorm, newest: u16, ssrc: u32, now: Instant) -> bool {
    let pairs: Vec<NackPair> = (0..storm.pairs)
        .map(|k| NackPair {
            packet_id: newest.wrapping_sub(16 + 17 * (k % 30) as u16),
            lost_packets: 0xffff,
        })
        .collect();
    let packets: Vec<Box<dyn rtc::rtcp::Packet>> = pairs
        .chunks(PAIRS_PER_PACKET)
        .map(|chunk| {
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: ssrc,
                nacks: chunk.to_vec(),
            }) as Box<dyn rtc::rtcp::Packet>
        })
        .collect();
    let receivers: Vec<_> = peer.pc.get_receivers().collect();
    let video = receivers.into_iter().find(|r| {
        peer.pc
            .rtp_receiver(*r)
            .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
    });
    let Some(mut receiver) = video.and_then(|r| peer.pc.rtp_receiver(r)) else {
        return false;
    };
    let written = receiver.write_rtcp(now, packets).is_ok();
    peer.flush();
    written
}
