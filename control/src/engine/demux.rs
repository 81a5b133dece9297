//! Which peer a datagram on a shared socket belongs to: by the STUN USERNAME (our ufrag comes
//! first) for connectivity checks, by the learned remote address for everything else.

use super::peer::PeerId;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, is_stun_message};
use rtc::stun::textattrs::Username;
use std::collections::HashMap;
use std::net::SocketAddr;

#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
}

impl Demux {
    pub(crate) fn add_ufrag(&mut self, ufrag: &str, id: PeerId) {
        self.by_ufrag.insert(ufrag.to_owned(), id);
    }

    /// The peer for a datagram from `from`, learning the address from a valid check.
    pub(crate) fn route(&mut self, data: &[u8], from: SocketAddr) -> Option<PeerId> {
        if is_stun_message(data)
            && let Some(ufrag) = local_ufrag(data)
            && let Some(&id) = self.by_ufrag.get(&ufrag)
        {
            // A check names its peer even when the address was used by another peer before.
            self.by_addr.insert(from, id);
            return Some(id);
        }
        self.by_addr.get(&from).copied()
    }

    pub(crate) fn forget_addr(&mut self, addr: SocketAddr) {
        self.by_addr.remove(&addr);
    }

    pub(crate) fn remove(&mut self, ufrag: &str, addrs: &[SocketAddr], id: PeerId) {
        self.by_ufrag.remove(ufrag);
        for a in addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
    }
}

/// The local half of a binding request's USERNAME (`local:remote`).
fn local_ufrag(data: &[u8]) -> Option<String> {
    let mut msg = Message::new();
    msg.unmarshal_binary(data).ok()?;
    let username = Username::get_from_as(&msg, ATTR_USERNAME).ok()?;
    let (local, _) = username.text.split_once(':')?;
    Some(local.to_owned())
}
