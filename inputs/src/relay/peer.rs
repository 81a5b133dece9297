//! The relay's WebRTC side: one `rtc` peer connection (the offerer: a full ICE agent, DTLS
//! client) with its own UDP socket, and the I/O half of the sans-IO contract. [`Peer::step`]
//! waits for one wake-up (datagrams or a timer) and reports what came of it: connected, RTP
//! packets by kind, or the end of the connection.

use super::codecs::{self, Negotiated};
use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    Registry, configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tracing::debug;
use waveguide_control::media::TrackKind;
use waveguide_control::{Error, Result};

/// Pace of ICE connectivity checks (browsers check about this fast; rtc's default of 200 ms
/// would add to every pull's join time).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(25);
/// Checks per candidate pair before it is given up (five seconds at the pace above).
const ICE_MAX_CHECKS: u16 = 200;
/// Socket buffers: a keyframe of a high-bitrate stream arrives as one burst.
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read per wake-up before the loop looks at its timers again.
const BATCH: usize = 64;
/// The shortest sleep, so a timer that is due now cannot spin the loop.
const MIN_SLEEP: Duration = Duration::from_micros(200);

/// What a wake-up produced.
#[derive(Debug)]
pub(crate) enum Output {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// One RTP packet of the track of `kind`.
    Rtp(TrackKind, rtp::Packet),
    /// The connection failed or was closed; nothing more will come.
    Closed(String),
}

/// Counters of what the I/O half dropped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PeerCounters {
    /// Sends that failed (full buffer, unreachable candidate).
    pub send_failures: u64,
    /// Datagrams `rtc` rejected.
    pub read_errors: u64,
    /// RTP packets of a payload type the answer did not give.
    pub unknown_payload: u64,
}

/// One connection to an upstream edge.
pub(crate) struct Peer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    /// The address rtc knows our candidate by.
    local: SocketAddr,
    negotiated: Option<Negotiated>,
    timer: Option<Instant>,
    connected: bool,
    closed: bool,
    buf: Vec<u8>,
    /// The SSRC video arrives on, for keyframe requests.
    video_ssrc: Option<u32>,
    pub counters: PeerCounters,
}

fn engine_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("relay {context}: {e}"))
}

/// The address to announce for a socket bound to `ip`: itself, or for an unspecified bind the
/// first non-loopback IPv4 address of the host (loopback if there is none).
fn candidate_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    waveguide_control::engine::local_ipv4_addresses()
        .ok()
        .and_then(|ips| ips.into_iter().find(|ip| !ip.is_loopback()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn bind(ip: IpAddr) -> io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: the kernel caps both at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

impl Peer {
    /// Binds a socket on `bind_ip`, builds a receive-only connection (video and audio, every
    /// codec the node forwards) and returns it with its offer. The offer carries our host
    /// candidate, so no trickle is needed.
    pub fn offer(bind_ip: IpAddr, now: Instant) -> Result<(Peer, String)> {
        let socket =
            bind(bind_ip).map_err(|e| engine_err(&format!("UDP socket on {bind_ip}"), e))?;
        let bound = socket
            .local_addr()
            .map_err(|e| engine_err("UDP socket", e))?;
        let local = SocketAddr::new(candidate_ip(bound.ip()), bound.port());
        let mut media = MediaEngine::default();
        for (kind, codec) in codecs::offered() {
            media
                .register_codec(codec, kind)
                .map_err(|e| engine_err("codec", e))?;
        }
        // NACKs for what the link between edges loses, and receiver reports.
        let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut media));
        let settings = SettingEngineBuilder::new()
            // GCM first: it avoids the HMAC that dominates SRTP cost on both edges.
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_CHECKS))
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| engine_err("peer connection", e))?;
        for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .map_err(|e| engine_err("transceiver", e))?;
        }
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .map_err(|e| engine_err("host candidate", e))?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(|e| engine_err("host candidate", e))?;
        pc.add_local_candidate(init)
            .map_err(|e| engine_err("host candidate", e))?;
        let offer = pc.create_offer(None).map_err(|e| engine_err("offer", e))?;
        pc.set_local_description(now, offer.clone())
            .map_err(|e| engine_err("offer", e))?;
        let sdp = pc.local_description().map_or(offer.sdp, |d| d.sdp);
        let peer = Peer {
            pc,
            socket,
            local,
            negotiated: None,
            timer: None,
            connected: false,
            closed: false,
            buf: vec![0; 2048],
            video_ssrc: None,
            counters: PeerCounters::default(),
        };
        Ok((peer, sdp))
    }

    /// Applies the upstream's answer; `negotiated` is what it was read as.
    pub fn answer(&mut self, sdp: String, negotiated: Negotiated, now: Instant) -> Result<()> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|_| Error::ServiceFailed("the upstream edge's answer is not valid SDP"))?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| engine_err("answer", e))?;
        self.negotiated = Some(negotiated);
        self.timer = Some(now);
        Ok(())
    }

    /// Whether ICE and DTLS completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Waits for datagrams or the connection's next timer, but not past `until`, and appends
    /// what happened to `out`, in order.
    pub async fn step(&mut self, until: Instant, out: &mut Vec<Output>) {
        if self.closed {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        let now = Instant::now();
        if self.timer.is_some_and(|t| now >= t) {
            // A timer error (ICE gave up) also shows as a state change event.
            let _ = self.pc.handle_timeout(now);
            self.drain(out);
        }
        let wake = self
            .timer
            .map_or(until, |t| t.min(until))
            .max(now + MIN_SLEEP);
        let first = tokio::select! {
            biased;
            received = self.socket.recv_from(&mut self.buf) => received.ok(),
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        if let Some((n, from)) = first {
            self.datagram(n, from, out);
            for _ in 1..BATCH {
                if self.closed {
                    break;
                }
                let Ok((n, from)) = self.socket.try_recv_from(&mut self.buf) else {
                    break;
                };
                self.datagram(n, from, out);
            }
        }
    }

    /// Feeds the datagram in `buf[..n]` and drains what it produced. Events are drained
    /// after every datagram: rtc installs the SRTP keys when the DTLS completion event is
    /// polled, and media fed before that would be dropped.
    fn datagram(&mut self, n: usize, from: SocketAddr, out: &mut Vec<Output>) {
        let now = Instant::now();
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(&self.buf[..n]),
        };
        if self.pc.handle_read(msg).is_err() {
            self.counters.read_errors += 1;
        }
        self.drain(out);
    }

    /// Sends what is queued, reports state changes and received media, notes the next timer.
    fn drain(&mut self, out: &mut Vec<Output>) {
        while let Some(event) = self.pc.poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
                continue;
            };
            match state {
                RTCPeerConnectionState::Connected if !self.connected => {
                    self.connected = true;
                    out.push(Output::Connected);
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed if !self.closed => {
                    self.closed = true;
                    out.push(Output::Closed(format!("peer connection {state}")));
                }
                _ => {}
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(_, packet) = msg.message else {
                continue;
            };
            match self
                .negotiated
                .as_ref()
                .and_then(|n| n.kind_of(packet.header.payload_type))
            {
                Some(kind) => {
                    if kind == TrackKind::Video {
                        self.video_ssrc = Some(packet.header.ssrc);
                    }
                    out.push(Output::Rtp(kind, packet));
                }
                None => self.counters.unknown_payload += 1,
            }
        }
        self.flush();
        self.timer = self.pc.poll_timeout();
    }

    /// Asks the upstream for a keyframe (a PLI on the video receiver), as a local viewer needs
    /// one. Nothing happens before video has arrived: the upstream replays its cached GOP to a
    /// new pull anyway.
    pub fn request_keyframe(&mut self) {
        let Some(media_ssrc) = self.video_ssrc else {
            return;
        };
        let receivers: Vec<_> = self.pc.get_receivers().collect();
        let Some(video) = receivers.into_iter().find(|r| {
            self.pc
                .rtp_receiver(*r)
                .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
        }) else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Some(mut r) = self.pc.rtp_receiver(video)
            && let Err(e) = r.write_rtcp(Instant::now(), vec![Box::new(pli)])
        {
            debug!("relay PLI not sent: {e}");
        }
        self.flush();
    }

    /// Sends everything queued; never blocks (a full socket buffer drops and counts).
    fn flush(&mut self) {
        while let Some(msg) = self.pc.poll_write() {
            if self
                .socket
                .try_send_to(&msg.message, msg.transport.peer_addr)
                .is_err()
            {
                self.counters.send_failures += 1;
            }
        }
    }

    /// Closes the connection (DTLS close_notify to the upstream, best effort).
    pub fn close(&mut self) {
        if !self.closed {
            let _ = self.pc.close();
            self.flush();
            self.closed = true;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offer_is_recvonly_with_every_forwarded_codec_and_a_host_candidate() {
        let (peer, sdp) =
            Peer::offer(IpAddr::V4(Ipv4Addr::LOCALHOST), Instant::now()).expect("an offer");
        let port = peer.local.port();
        let video = sdp.find("m=video").expect("a video section");
        let audio = sdp.find("m=audio").expect("an audio section");
        assert!(video < audio, "video first: {sdp}");
        let (video_section, audio_section) = if video < audio {
            (&sdp[video..audio], &sdp[audio..])
        } else {
            (&sdp[video..], &sdp[audio..video])
        };
        for section in [video_section, audio_section] {
            assert!(section.contains("a=recvonly"), "{section}");
        }
        for needle in [
            "H264/90000",
            "profile-level-id=42e01f",
            "profile-level-id=4d001f",
            "profile-level-id=64001f",
            "VP8/90000",
            "VP9/90000",
            "AV1/90000",
            "a=rtcp-fb:102 nack",
            "a=rtcp-fb:102 nack pli",
        ] {
            assert!(
                video_section.contains(needle),
                "{needle} in {video_section}"
            );
        }
        assert!(
            !video_section.contains("packetization-mode=0"),
            "{video_section}"
        );
        assert!(audio_section.contains("opus/48000/2"), "{audio_section}");
        assert!(!audio_section.contains("H264"), "{audio_section}");
        assert!(
            sdp.contains(&format!("127.0.0.1 {port} typ host")),
            "host candidate: {sdp}"
        );
        assert!(sdp.contains("a=setup:actpass"), "{sdp}");
    }
}
