//! One `rtc` peer connection with its own loopback UDP socket: building it (codecs, SRTP
//! profiles, a host candidate, the offer) and the I/O half of the sans-IO contract — send
//! what `poll_write` gives, feed datagrams to `handle_read`. What the peer does with media
//! (publish, watch) lives in `publisher` and `viewer`.

use super::config::{SrtpChoice, is_loopback_ip};
use super::error::LoadError;
use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    Registry, configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Payload types the tool offers; a server answers with the offerer's numbers.
pub const VIDEO_PT: u8 = 102;
pub const AUDIO_PT: u8 = 111;
/// SSRCs of the publisher's tracks.
pub const VIDEO_SSRC: u32 = 0x5741_5601;
pub const AUDIO_SSRC: u32 = 0x5741_5602;

/// Pace of ICE connectivity checks while connecting (50 attempts: one second).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// What the connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends H.264 and Opus (a WHIP publisher).
    Publish,
    /// Receives them (a WHEP viewer).
    View,
}

fn h264() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                .to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: VIDEO_PT,
    }
}

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: AUDIO_PT,
    }
}

fn transceiver(role: Role, codec: &RTCRtpCodecParameters, ssrc: u32) -> RTCRtpTransceiverInit {
    match role {
        Role::View => RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        },
        Role::Publish => RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        },
    }
}

fn profiles(srtp: SrtpChoice) -> Vec<SrtpProtectionProfile> {
    match srtp {
        // Empty: rtc's own default list (GCM first).
        SrtpChoice::Default => vec![],
        SrtpChoice::Gcm => vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm],
        SrtpChoice::Cm => vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
    }
}

/// A loopback UDP socket with the requested buffers, registered with the current runtime.
fn bind(buffer: usize) -> Result<UdpSocket, LoadError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // Best effort: the kernel caps both at net.core.{r,w}mem_max and that is fine.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// A peer connection, its socket, and counters of what its I/O half dropped.
pub struct Peer {
    pub pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    /// `(video, audio)` senders of a publisher.
    pub senders: Option<(RTCRtpSenderId, RTCRtpSenderId)>,
    /// Datagrams `rtc` addressed off loopback, not sent.
    pub refused: u64,
    /// Sends that failed (full socket buffer, or an error).
    pub send_failures: u64,
    /// Datagrams `rtc` rejected (SRTP authentication failure, malformed, unexpected).
    pub read_errors: u64,
}

impl Peer {
    /// Binds a socket, builds the connection and returns it with its offer (our host
    /// candidate included, so no trickle is needed).
    pub fn offer(
        role: Role,
        srtp: SrtpChoice,
        buffer: usize,
        now: Instant,
    ) -> Result<(Peer, String), LoadError> {
        let socket = bind(buffer)?;
        let local = socket.local_addr()?;
        let mut media = MediaEngine::default();
        media.register_codec(h264(), RtpCodecKind::Video)?;
        media.register_codec(opus(), RtpCodecKind::Audio)?;
        let registry = match role {
            // Sender reports and a NACK responder, as a browser publisher has.
            Role::Publish => configure_rtcp_reports(configure_nack(Registry::new(), &mut media)),
            // Receiver reports only: without NACK, loss stays visible as sequence gaps.
            Role::View => configure_rtcp_reports(Registry::new()),
        };
        let settings = SettingEngineBuilder::new()
            .with_srtp_protection_profiles(profiles(srtp))
            // rtc checks (and so nominates) every 200 ms by default, which alone would put
            // 200 ms into every join time; browsers pace their first checks far faster.
            .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(50))
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(now)?;
        let video = pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(transceiver(role, &h264(), VIDEO_SSRC)),
        )?;
        let audio = pc.add_transceiver_from_kind(
            RtpCodecKind::Audio,
            Some(transceiver(role, &opus(), AUDIO_SSRC)),
        )?;
        let senders = match role {
            Role::View => None,
            Role::Publish => {
                let sender = |pc: &mut RTCPeerConnection, id| {
                    pc.rtp_transceiver(id).and_then(|t| t.sender())
                };
                let v = sender(&mut pc, video);
                let a = sender(&mut pc, audio);
                v.zip(a)
            }
        };
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
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer.clone())?;
        let sdp = pc.local_description().map_or(offer.sdp, |d| d.sdp);
        let peer = Peer {
            pc,
            socket,
            local,
            senders,
            refused: 0,
            send_failures: 0,
            read_errors: 0,
        };
        Ok((peer, sdp))
    }

    /// Applies the server's answer.
    pub fn answer(&mut self, sdp: String, now: Instant) -> Result<(), LoadError> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
        Ok(())
    }

    /// Sends everything queued. Never blocks: a full socket buffer drops and counts, and
    /// nothing is ever sent off loopback, whatever candidates the server gave.
    pub fn flush(&mut self) {
        while let Some(msg) = self.pc.poll_write() {
            let to = msg.transport.peer_addr;
            if !is_loopback_ip(to.ip()) {
                self.refused += 1;
                continue;
            }
            if self.socket.try_send_to(&msg.message, to).is_err() {
                self.send_failures += 1;
            }
        }
    }

    /// Feeds one received datagram to the connection.
    pub fn handle_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if self.pc.handle_read(msg).is_err() {
            self.read_errors += 1;
        }
    }

    /// Runs the connection's timers (callers know one is due: `poll_timeout` sweeps every
    /// handler, so they ask it once per wake-up, not here again).
    pub fn handle_timeout(&mut self, now: Instant) {
        // A timer error (e.g. ICE gave up) also shows as a state change event.
        let _ = self.pc.handle_timeout(now);
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}
