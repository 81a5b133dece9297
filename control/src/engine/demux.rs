//! Which peer a datagram on a shared socket belongs to: by the STUN USERNAME (our ufrag comes
//! first) for connectivity checks, by the learned remote address for everything else.
//!
//! An address is learned only from a check whose MESSAGE-INTEGRITY verifies with the peer's
//! local ICE password (RFC 8445 §7.2.2: short-term credentials, the answerer's password). The
//! ufrag is no secret (it travels in the clear in every check, and an attacker who saw one can
//! repeat it), so learning from the USERNAME alone let anyone grow the table with fresh source
//! ports, or re-point a victim's address to their own. A forged check is dropped here, before
//! the peer's connection sees it, and nothing is learned.
//!
//! The table is bounded: each peer keeps at most [`MAX_ADDRS_PER_PEER`] addresses (the oldest
//! goes first), so it holds at most that many per peer whatever arrives. Owns no socket and no
//! clock; the crypto provider only computes the HMAC.

use super::peer::PeerId;
use rtc::crypto::RTCCryptoProvider;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, is_stun_message};
use rtc::stun::textattrs::Username;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

/// Remote addresses one peer may be known by at once: its candidates that reach us (a host
/// address or two, a server- or peer-reflexive one, a relay), with room for a network change.
pub(crate) const MAX_ADDRS_PER_PEER: usize = 8;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// To this peer.
    Peer(PeerId),
    /// A check naming a peer's ufrag whose integrity does not verify: dropped.
    Forged,
    /// Neither a known ufrag nor a learned address.
    Unknown,
}

/// A peer's local ICE credentials.
#[derive(Debug)]
struct Local {
    id: PeerId,
    pwd: String,
}

pub(crate) struct Demux {
    by_ufrag: HashMap<String, Local>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Each peer's learned addresses, oldest first.
    addrs: HashMap<PeerId, VecDeque<SocketAddr>>,
    crypto: Option<Arc<dyn RTCCryptoProvider>>,
}

impl Demux {
    pub(crate) fn new() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs: HashMap::new(),
            // Without a provider no check verifies, so nothing connects: `rtc` itself could not
            // answer a check either.
            crypto: rtc::crypto::default_provider().ok(),
        }
    }

    /// Routes checks that name `ufrag` to peer `id`, if their integrity verifies with `pwd`.
    pub(crate) fn add_ufrag(&mut self, ufrag: &str, pwd: &str, id: PeerId) {
        self.by_ufrag.insert(
            ufrag.to_owned(),
            Local {
                id,
                pwd: pwd.to_owned(),
            },
        );
    }

    /// Stops routing checks by `ufrag` (an ICE restart replaced it); learned addresses stay.
    pub(crate) fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    /// The peer for a datagram from `from`, learning the address from a verified check.
    pub(crate) fn route(&mut self, data: &[u8], from: SocketAddr) -> Route {
        if is_stun_message(data)
            && let Some(mut msg) = parse(data)
            && let Some(ufrag) = local_ufrag(&msg)
            && let Some(local) = self.by_ufrag.get(&ufrag)
        {
            let id = local.id;
            if !self.verified(&mut msg, &local.pwd) {
                return Route::Forged;
            }
            self.learn(from, id);
            return Route::Peer(id);
        }
        self.by_addr
            .get(&from)
            .copied()
            .map_or(Route::Unknown, Route::Peer)
    }

    fn verified(&self, msg: &mut Message, pwd: &str) -> bool {
        self.crypto.as_ref().is_some_and(|provider| {
            MessageIntegrity::check(msg, pwd.as_bytes(), provider.crypto()).is_ok()
        })
    }

    /// `from` is `id`'s now (a verified check names its peer, even from an address another
    /// peer used before); the peer's oldest address goes past the bound.
    fn learn(&mut self, from: SocketAddr, id: PeerId) {
        match self.by_addr.insert(from, id) {
            Some(previous) if previous == id => return,
            Some(previous) => {
                if let Some(list) = self.addrs.get_mut(&previous) {
                    list.retain(|a| *a != from);
                }
            }
            None => {}
        }
        let list = self.addrs.entry(id).or_default();
        list.push_back(from);
        while list.len() > MAX_ADDRS_PER_PEER {
            if let Some(oldest) = list.pop_front()
                && self.by_addr.get(&oldest) == Some(&id)
            {
                self.by_addr.remove(&oldest);
            }
        }
    }

    /// Forgets an address whose peer is gone.
    pub(crate) fn forget_addr(&mut self, addr: SocketAddr) {
        if let Some(id) = self.by_addr.remove(&addr)
            && let Some(list) = self.addrs.get_mut(&id)
        {
            list.retain(|a| *a != addr);
        }
    }

    /// Forgets peer `id`: its ufrag and every address it was learned at.
    pub(crate) fn remove(&mut self, ufrag: &str, id: PeerId) {
        if self.by_ufrag.get(ufrag).is_some_and(|l| l.id == id) {
            self.by_ufrag.remove(ufrag);
        }
        for a in self.addrs.remove(&id).unwrap_or_default() {
            if self.by_addr.get(&a) == Some(&id) {
                self.by_addr.remove(&a);
            }
        }
    }

    /// Addresses learned now (the `waveguide_demux_addresses` gauge).
    pub(crate) fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

fn parse(data: &[u8]) -> Option<Message> {
    let mut msg = Message::new();
    msg.unmarshal_binary(data).ok()?;
    Some(msg)
}

/// The local half of a binding request's USERNAME (`local:remote`).
fn local_ufrag(msg: &Message) -> Option<String> {
    let username = Username::get_from_as(msg, ATTR_USERNAME).ok()?;
    let (local, _) = username.text.split_once(':')?;
    Some(local.to_owned())
}

/// Our ICE password in an SDP we made (the key of the checks sent to us).
pub(crate) fn local_pwd(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-pwd:"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::message::{BINDING_REQUEST, Setter, TransactionId};

    const UFRAG: &str = "srvr";
    const PWD: &str = "a-password-of-twenty-two";

    /// A binding request as a client sends it to us: USERNAME `ours:theirs`, integrity keyed
    /// with `pwd`.
    fn check(ufrag: &str, pwd: &str) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().expect("a provider");
        let username = Username::new(ATTR_USERNAME, format!("{ufrag}:clnt"));
        let integrity =
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.into(), provider.crypto());
        let mut msg = Message::new();
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(username),
            Box::new(integrity),
            Box::new(FINGERPRINT),
        ];
        msg.build(&setters).expect("a binding request");
        msg.raw
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_verified_check_teaches_the_address() {
        let mut demux = Demux::new();
        demux.add_ufrag(UFRAG, PWD, 7);
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Unknown);
        assert_eq!(demux.route(&check(UFRAG, PWD), addr(5000)), Route::Peer(7));
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Peer(7));
        assert_eq!(demux.addresses(), 1);
    }

    #[test]
    fn a_forged_check_teaches_nothing_and_repoints_nothing() {
        let mut demux = Demux::new();
        demux.add_ufrag(UFRAG, PWD, 7);
        assert_eq!(demux.route(&check(UFRAG, PWD), addr(5000)), Route::Peer(7));
        // The right USERNAME, the wrong key, from a thousand ports.
        for port in 6000..7000 {
            assert_eq!(
                demux.route(&check(UFRAG, "not-the-password-at-all"), addr(port)),
                Route::Forged
            );
            assert_eq!(demux.route(b"\x90media", addr(port)), Route::Unknown);
        }
        assert_eq!(demux.addresses(), 1, "the table did not grow");
        // Another peer's verified check from the victim's address would re-point it; a forged
        // one from the victim's address changes nothing.
        demux.add_ufrag("othr", "another-password-twenty", 8);
        assert_eq!(
            demux.route(&check("othr", "wrong-password-entirely"), addr(5000)),
            Route::Forged
        );
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Peer(7));
        // Without integrity at all: forged too.
        assert_eq!(
            demux.route(&check_without_integrity(), addr(9000)),
            Route::Forged
        );
    }

    fn check_without_integrity() -> Vec<u8> {
        let mut msg = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, format!("{UFRAG}:clnt"))),
        ];
        msg.build(&setters).expect("a binding request");
        msg.raw
    }

    #[test]
    fn a_peer_keeps_a_bounded_number_of_addresses() {
        let mut demux = Demux::new();
        demux.add_ufrag(UFRAG, PWD, 7);
        let good = check(UFRAG, PWD);
        for port in 5000..5100 {
            assert_eq!(demux.route(&good, addr(port)), Route::Peer(7));
        }
        assert_eq!(demux.addresses(), MAX_ADDRS_PER_PEER);
        // The newest are kept, the oldest forgotten.
        assert_eq!(demux.route(b"\x90media", addr(5099)), Route::Peer(7));
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Unknown);
        demux.remove(UFRAG, 7);
        assert_eq!(demux.addresses(), 0);
        assert_eq!(demux.route(&good, addr(5000)), Route::Unknown);
    }

    #[test]
    fn a_verified_check_moves_an_address_between_peers() {
        let mut demux = Demux::new();
        demux.add_ufrag(UFRAG, PWD, 7);
        demux.add_ufrag("othr", "another-password-twenty", 8);
        assert_eq!(demux.route(&check(UFRAG, PWD), addr(5000)), Route::Peer(7));
        assert_eq!(
            demux.route(&check("othr", "another-password-twenty"), addr(5000)),
            Route::Peer(8)
        );
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Peer(8));
        // Peer 7 leaving does not take peer 8's address with it.
        demux.remove(UFRAG, 7);
        assert_eq!(demux.route(b"\x90media", addr(5000)), Route::Peer(8));
        assert_eq!(demux.addresses(), 1);
    }

    #[test]
    fn local_pwd_reads_our_answer() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\n";
        assert_eq!(local_pwd(sdp).as_deref(), Some("efghijklmnopqrstuvwxyz12"));
        assert_eq!(local_pwd("v=0\r\n"), None);
    }
}
