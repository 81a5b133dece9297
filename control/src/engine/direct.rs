//! Media to a viewer sealed and sent by the shard itself, past `rtc`'s write path.
//!
//! Through `rtc`, each packet to each viewer is moved through every handler and interceptor
//! stage of the connection (a copy per stage) before it is sealed: at 300 viewers that was
//! 37 % of the edge's busy time, against 54 % for the kernel's `sendto`. Once a viewer's SRTP
//! key is known, [`DirectPath`] seals the packet with it and sends it on the viewer's media
//! route, one copy and one seal per packet.
//!
//! The key is proven, not assumed: the first packets of each track still go through `rtc`,
//! and a captured candidate key (see `srtp_keys.rs`) is accepted only if it opens the packet
//! `rtc` sealed and yields exactly the bytes we would have sealed ourselves. So a wrong key,
//! another SRTP profile, or a header `rtc` would have written differently keeps that viewer
//! on the `rtc` path; it never gets a packet it cannot open.
//!
//! What `rtc` no longer sees, this module does instead: NACKs for direct packets are
//! answered from [`DirectPath`]'s own history (the source packets are shared, so it holds
//! references, not copies). `rtc` still writes one packet per track a second, so its sender
//! reports map RTP time from a recent packet; their packet and octet counts cover only those.

use super::retransmit::Retransmits;
use super::srtp_keys::KeyCapture;
use crate::media::{MediaPacket, TrackKind};
use rtc::rtp::Packet as RtpPacket;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// The profiles the edge offers (`setup.rs`), tried in turn.
const PROFILES: [ProtectionProfile; 2] = [
    ProtectionProfile::AeadAes128Gcm,
    ProtectionProfile::Aes128CmHmacSha1_80,
];
/// Packets `rtc` seals for a track before the viewer stays on the `rtc` path for it.
const MAX_PROOF_ATTEMPTS: u8 = 8;
/// One packet per track per this interval still goes through `rtc`, so its sender reports map
/// RTP time from a recent packet: a paused or capped viewer's timestamps resume where they
/// stopped, which extrapolating from an older packet would not know.
const RTC_REFRESH: Duration = Duration::from_secs(1);
/// Video packets kept for retransmission: ≈ 1.8 s at 2.5 Mbps, longer than any NACK is useful.
const HISTORY: usize = 512;

/// One track's state on the direct path.
#[derive(Default)]
enum TrackPath {
    /// Not proven yet; the packet last handed to `rtc` waits to be matched.
    #[default]
    Proving,
    /// Sealed and sent by the shard.
    Direct,
    /// Stays on the `rtc` path (no key opened its packets).
    Rtc,
}

/// Where a track's packets settled.
pub(crate) enum Path {
    Direct,
    Rtc,
}

/// A packet handed to `rtc` while its track is being proven.
struct Pending {
    ssrc: u32,
    seq: u16,
    plain: Vec<u8>,
}

/// A video packet sent directly, kept for NACKs.
struct Sent {
    seq: u16,
    ts: u32,
    packet: Arc<MediaPacket>,
}

/// A viewer's direct path: its proven key, its route, its retransmission history.
pub(crate) struct DirectPath {
    keys: Arc<KeyCapture>,
    seal: Option<Context>,
    tracks: [TrackPath; 2],
    pending: [Option<Pending>; 2],
    attempts: [u8; 2],
    /// When each track last sent a packet through `rtc`.
    last_rtc: [Option<Instant>; 2],
    /// Shard socket and address of the last SRTP or SRTCP packet `rtc` sent: its selected pair.
    route: Option<(usize, SocketAddr)>,
    history: Vec<Option<Sent>>,
    /// What the viewer's NACKs may still make us resend (`retransmit.rs`).
    pub resends: Retransmits,
    scratch: Vec<u8>,
    /// Sent directly, for the session's statistics.
    pub packets: u64,
    pub bytes: u64,
}

impl DirectPath {
    pub(crate) fn new(keys: Arc<KeyCapture>) -> Self {
        Self {
            keys,
            seal: None,
            tracks: Default::default(),
            pending: Default::default(),
            attempts: [0; 2],
            last_rtc: [None; 2],
            route: None,
            history: Vec::new(),
            resends: Retransmits::default(),
            scratch: Vec::new(),
            packets: 0,
            bytes: 0,
        }
    }

    /// Whether `kind` is sealed and sent by the shard.
    pub(crate) fn is_direct(&self, kind: TrackKind) -> bool {
        matches!(self.tracks[kind.index()], TrackPath::Direct)
    }

    /// Whether this packet of `kind` goes on the direct path (else through `rtc`, see
    /// [`RTC_REFRESH`]).
    pub(crate) fn takes(&mut self, kind: TrackKind, now: Instant) -> bool {
        if !self.is_direct(kind) {
            return false;
        }
        let last = &mut self.last_rtc[kind.index()];
        if last.is_some_and(|t| now.saturating_duration_since(t) < RTC_REFRESH) {
            return true;
        }
        *last = Some(now);
        false
    }

    /// A datagram came from the viewer at `from`. From an address other than the route's (an
    /// ICE restart moving it, or a check on another pair), the next packet of each track goes
    /// through `rtc`, whose next SRTP then shows the pair it has selected.
    pub(crate) fn heard_from(&mut self, from: SocketAddr) {
        if self.route.is_some_and(|(_, to)| to != from) {
            self.last_rtc = [None; 2];
        }
    }

    /// Notes a packet about to be written through `rtc`, so its sealed form can prove a key.
    pub(crate) fn expect(&mut self, kind: TrackKind, rtp: &RtpPacket) {
        let i = kind.index();
        if !matches!(self.tracks[i], TrackPath::Proving) {
            return;
        }
        match rtp.marshal() {
            Ok(plain) => {
                self.pending[i] = Some(Pending {
                    ssrc: rtp.header.ssrc,
                    seq: rtp.header.sequence_number,
                    plain: plain.to_vec(),
                })
            }
            Err(_) => self.pending[i] = None,
        }
    }

    /// Looks at a datagram `rtc` sends from shard socket `socket` to `to`: SRTP and SRTCP mark
    /// the media route, and a packet we wait for is tried against the captured keys. Returns
    /// the path a track settled on, when one did.
    pub(crate) fn observe(
        &mut self,
        socket: usize,
        to: SocketAddr,
        datagram: &[u8],
    ) -> Option<Path> {
        // RFC 7983: 128..=191 is RTP or RTCP; RTCP packet types 192..=223 sit in byte 1.
        if datagram.len() < 12 || !(128..=191).contains(&datagram[0]) {
            return None;
        }
        self.route = Some((socket, to));
        if (192..=223).contains(&datagram[1]) {
            return None;
        }
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
        let i = (0..2).find(|&i| {
            self.pending[i]
                .as_ref()
                .is_some_and(|p| p.ssrc == ssrc && p.seq == seq)
        })?;
        let pending = self.pending[i].take()?;
        if self.prove(&pending, datagram) {
            self.tracks[i] = TrackPath::Direct;
            self.last_rtc[i] = Some(Instant::now());
            debug!(ssrc, "track switched to the direct path");
            if i == TrackKind::Video.index() {
                self.history.resize_with(HISTORY, || None);
            }
            return Some(Path::Direct);
        }
        self.attempts[i] += 1;
        if self.attempts[i] >= MAX_PROOF_ATTEMPTS {
            self.tracks[i] = TrackPath::Rtc;
            debug!(
                ssrc,
                "no captured SRTP key opens this track's packets: it stays on rtc"
            );
            return Some(Path::Rtc);
        }
        None
    }

    /// Whether a captured key opens `sealed` into exactly `pending`; if so it becomes the
    /// sealing key, primed with this packet so its rollover counting continues from it.
    fn prove(&mut self, pending: &Pending, sealed: &[u8]) -> bool {
        let crypto = self.keys.crypto();
        for key in self.keys.candidates() {
            for profile in PROFILES {
                let Some(salt) = key.salt(profile.salt_len()) else {
                    continue;
                };
                let Ok(mut open) = Context::new(&key.key, salt, profile, None, None, crypto) else {
                    continue;
                };
                if !open
                    .decrypt_rtp(sealed)
                    .is_ok_and(|plain| plain[..] == pending.plain[..])
                {
                    continue;
                }
                if self.seal.is_none() {
                    self.seal = Context::new(&key.key, salt, profile, None, None, crypto).ok();
                }
                return self
                    .seal
                    .as_mut()
                    .is_some_and(|seal| seal.encrypt_rtp(&pending.plain).is_ok());
            }
        }
        false
    }

    /// Seals `rtp` for this viewer; with the route to send it on.
    pub(crate) fn seal(&mut self, rtp: &RtpPacket) -> Option<(usize, SocketAddr, bytes::BytesMut)> {
        let route = self.route?;
        let seal = self.seal.as_mut()?;
        self.scratch.resize(rtp.marshal_size(), 0);
        let n = rtp.marshal_to(&mut self.scratch).ok()?;
        let sealed = seal
            .encrypt_rtp_with_header(&self.scratch[..n], &rtp.header)
            .ok()?;
        Some((route.0, route.1, sealed))
    }

    /// Remembers a video packet sent directly, for NACKs.
    pub(crate) fn remember(&mut self, seq: u16, ts: u32, packet: &Arc<MediaPacket>) {
        if let Some(slot) = self.history.get_mut(usize::from(seq) % HISTORY) {
            *slot = Some(Sent {
                seq,
                ts,
                packet: packet.clone(),
            });
        }
    }

    /// The packet sent as `seq`, with its timestamp, if still held.
    pub(crate) fn recall(&self, seq: u16) -> Option<(u32, &Arc<MediaPacket>)> {
        match self.history.get(usize::from(seq) % HISTORY)? {
            Some(s) if s.seq == seq => Some((s.ts, &s.packet)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::crypto::RTCCryptoProvider;
    use rtc::rtp::Header;

    const KEY: [u8; 16] = [7; 16];
    const SALT: [u8; 14] = [9; 14];
    const ROUTE: (usize, SocketAddr) = (
        0,
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000),
    );

    fn packet(seq: u16) -> RtpPacket {
        RtpPacket {
            header: Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 3000 * u32::from(seq),
                ssrc: 0x1234_5678,
                ..Header::default()
            },
            payload: bytes::Bytes::from(vec![seq as u8; 200]),
        }
    }

    /// A context as rtc builds its own for `profile`, derived through `keys` (which records).
    fn context(keys: &KeyCapture, key: &[u8], profile: ProtectionProfile) -> Context {
        let salt = &SALT[..profile.salt_len()];
        Context::new(
            key,
            salt,
            profile,
            None,
            None,
            RTCCryptoProvider::crypto(keys),
        )
        .expect("an SRTP context")
    }

    /// A receiver holding the right key.
    fn receiver(profile: ProtectionProfile) -> Context {
        let crypto = rtc::crypto::default_provider().expect("a provider");
        let salt = &SALT[..profile.salt_len()];
        Context::new(&KEY, salt, profile, None, None, crypto.crypto()).expect("a context")
    }

    fn proven_with(profile: ProtectionProfile) {
        let keys = Arc::new(KeyCapture::new().expect("a provider"));
        // rtc derives the remote key and ours through the capture.
        let mut rtc_local = context(&keys, &KEY, profile);
        let _rtc_remote = context(&keys, &[3; 16], profile);
        let mut path = DirectPath::new(keys);
        assert!(!path.is_direct(TrackKind::Video));

        let first = packet(65534);
        path.expect(TrackKind::Video, &first);
        let sealed_by_rtc = rtc_local.encrypt_rtp(&first.marshal().unwrap()).unwrap();
        let mut viewer = receiver(profile);
        assert!(viewer.decrypt_rtp(&sealed_by_rtc).is_ok());
        let settled = path.observe(ROUTE.0, ROUTE.1, &sealed_by_rtc);
        assert!(matches!(settled, Some(Path::Direct)));
        assert!(path.is_direct(TrackKind::Video));

        // Across the sequence wrap, the viewer opens what the shard seals, as it would rtc's.
        for seq in [65535, 0, 1] {
            let p = packet(seq);
            let (socket, to, sealed) = path.seal(&p).expect("sealed");
            assert_eq!((socket, to), ROUTE);
            let opened = viewer.decrypt_rtp(&sealed).expect("the viewer opens it");
            assert_eq!(opened[..], p.marshal().unwrap()[..]);
            let by_rtc = rtc_local.encrypt_rtp(&p.marshal().unwrap()).unwrap();
            assert_eq!(sealed, by_rtc, "the same bytes rtc would have sent");
        }
    }

    #[test]
    fn one_packet_a_second_per_track_still_goes_through_rtc() {
        let keys = Arc::new(KeyCapture::new().expect("a provider"));
        let mut rtc_local = context(&keys, &KEY, ProtectionProfile::AeadAes128Gcm);
        let mut path = DirectPath::new(keys);
        let t0 = Instant::now();
        assert!(!path.takes(TrackKind::Video, t0), "not proven yet");
        let first = packet(1);
        path.expect(TrackKind::Video, &first);
        let sealed = rtc_local.encrypt_rtp(&first.marshal().unwrap()).unwrap();
        assert!(matches!(
            path.observe(ROUTE.0, ROUTE.1, &sealed),
            Some(Path::Direct)
        ));
        let t0 = Instant::now();
        assert!(path.takes(TrackKind::Video, t0));
        assert!(path.takes(TrackKind::Video, t0 + Duration::from_millis(900)));
        assert!(!path.takes(TrackKind::Video, t0 + Duration::from_millis(1100)));
        assert!(path.takes(TrackKind::Video, t0 + Duration::from_millis(1200)));
        assert!(
            !path.takes(TrackKind::Audio, t0),
            "audio is proven on its own"
        );

        // A datagram from another address: the next packet checks rtc's pair again.
        let t1 = t0 + Duration::from_millis(1300);
        path.heard_from(ROUTE.1);
        assert!(
            path.takes(TrackKind::Video, t1),
            "same address: nothing changes"
        );
        path.heard_from(SocketAddr::from(([127, 0, 0, 1], 6000)));
        assert!(!path.takes(TrackKind::Video, t1));
        assert!(path.takes(TrackKind::Video, t1));
    }

    #[test]
    fn a_proven_gcm_key_seals_what_the_viewer_opens() {
        proven_with(ProtectionProfile::AeadAes128Gcm);
    }

    #[test]
    fn a_proven_aes_cm_key_seals_what_the_viewer_opens() {
        proven_with(ProtectionProfile::Aes128CmHmacSha1_80);
    }

    #[test]
    fn a_track_whose_packets_no_key_opens_stays_on_rtc() {
        let keys = Arc::new(KeyCapture::new().expect("a provider"));
        let _remote = context(&keys, &[3; 16], ProtectionProfile::AeadAes128Gcm);
        // rtc seals with a key the capture never saw.
        let crypto = rtc::crypto::default_provider().expect("a provider");
        let mut unseen = Context::new(
            &[5; 16],
            &SALT[..12],
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            crypto.crypto(),
        )
        .unwrap();
        let mut path = DirectPath::new(keys);
        let mut settled = None;
        for seq in 0..u16::from(MAX_PROOF_ATTEMPTS) {
            let p = packet(seq);
            path.expect(TrackKind::Video, &p);
            let sealed = unseen.encrypt_rtp(&p.marshal().unwrap()).unwrap();
            settled = path.observe(ROUTE.0, ROUTE.1, &sealed);
        }
        assert!(matches!(settled, Some(Path::Rtc)));
        assert!(!path.is_direct(TrackKind::Video));
        assert!(path.seal(&packet(100)).is_none());
    }

    #[test]
    fn a_header_rtc_writes_differently_keeps_the_track_on_rtc() {
        let keys = Arc::new(KeyCapture::new().expect("a provider"));
        let mut rtc_local = context(&keys, &KEY, ProtectionProfile::AeadAes128Gcm);
        let mut path = DirectPath::new(keys);
        let ours = packet(10);
        path.expect(TrackKind::Video, &ours);
        // rtc sent the same packet with the marker set: the key opens it, the bytes differ.
        let mut theirs = ours.clone();
        theirs.header.marker = true;
        let sealed = rtc_local.encrypt_rtp(&theirs.marshal().unwrap()).unwrap();
        assert!(path.observe(ROUTE.0, ROUTE.1, &sealed).is_none());
        assert!(!path.is_direct(TrackKind::Video));
    }

    #[test]
    fn history_recalls_only_the_sequence_number_it_holds() {
        let keys = Arc::new(KeyCapture::new().expect("a provider"));
        let mut path = DirectPath::new(keys);
        path.history.resize_with(HISTORY, || None);
        let media = Arc::new(MediaPacket {
            stream: 1,
            kind: TrackKind::Video,
            epoch: 0,
            keyframe_start: false,
            rtp: packet(7),
            received: Instant::now(),
            delivery: Default::default(),
        });
        path.remember(7, 700, &media);
        assert_eq!(path.recall(7).map(|(ts, _)| ts), Some(700));
        // The slot 7 + HISTORY shares holds 7, not it.
        assert!(path.recall(7 + HISTORY as u16).is_none());
        assert!(path.recall(8).is_none());
    }
}
