//! Viewer sessions that are answered but not connected yet, counted per client and in all.
//!
//! A WHEP POST costs a peer connection on a shard and a viewer slot (`[node] max_viewers`)
//! until ICE connects or the shard gives up on it (10 s). Answering is cheap for the client: it
//! need never connect. So the sessions still connecting are capped per client
//! (`[viewers] max_connecting_per_ip`; a client is an IPv4 address or an IPv6 /64) and in all
//! (`[viewers] max_connecting`), apart from the viewers that did connect. A session leaves the
//! count when it connects or ends, whichever comes first. Relay pulls (other edges) are not
//! counted: they are authenticated and few.

use crate::rate::client_key;
use std::collections::HashMap;
use std::net::IpAddr;

/// Why a session may not start connecting now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingRefusal {
    /// The client has this many sessions connecting already.
    Client(u32),
    /// The node has this many sessions connecting already.
    Total(u32),
}

/// The count of sessions connecting; 0 in a limit means none.
#[derive(Debug, Default)]
pub(crate) struct PendingSessions {
    per_client: HashMap<IpAddr, u32>,
    total: u32,
    max_per_client: u32,
    max_total: u32,
}

impl PendingSessions {
    pub(crate) fn new(max_per_client: u32, max_total: u32) -> Self {
        Self {
            max_per_client,
            max_total,
            ..Self::default()
        }
    }

    /// Counts one more session of `client` (a client whose address is not known counts in the
    /// total only), or says why not.
    pub(crate) fn admit(&mut self, client: Option<IpAddr>) -> Result<(), PendingRefusal> {
        if self.max_total > 0 && self.total >= self.max_total {
            return Err(PendingRefusal::Total(self.max_total));
        }
        if let Some(ip) = client {
            let held = self.per_client.entry(client_key(ip)).or_default();
            if self.max_per_client > 0 && *held >= self.max_per_client {
                return Err(PendingRefusal::Client(self.max_per_client));
            }
            *held += 1;
        }
        self.total += 1;
        Ok(())
    }

    /// A session counted by [`Self::admit`] connected or ended.
    pub(crate) fn release(&mut self, client: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = client {
            let key = client_key(ip);
            if let Some(held) = self.per_client.get_mut(&key) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    self.per_client.remove(&key);
                }
            }
        }
    }

    /// Sessions connecting now.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_client_holds_at_most_its_share() {
        let mut p = PendingSessions::new(3, 100);
        for _ in 0..3 {
            assert_eq!(p.admit(ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(p.admit(ip("192.0.2.1")), Err(PendingRefusal::Client(3)));
        assert_eq!(p.admit(ip("192.0.2.2")), Ok(()), "another client");
        // An IPv6 /64 is one client.
        assert_eq!(p.admit(ip("2001:db8::1")), Ok(()));
        assert_eq!(p.admit(ip("2001:db8::2")), Ok(()));
        assert_eq!(p.admit(ip("2001:db8::3")), Ok(()));
        assert_eq!(p.admit(ip("2001:db8::4")), Err(PendingRefusal::Client(3)));
        // One connects: room for one more.
        p.release(ip("192.0.2.1"));
        assert_eq!(p.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(p.total(), 7);
    }

    #[test]
    fn the_node_holds_at_most_its_total() {
        let mut p = PendingSessions::new(0, 4);
        for i in 0..4 {
            assert_eq!(p.admit(ip(&format!("10.0.0.{i}"))), Ok(()));
        }
        assert_eq!(p.admit(ip("10.0.1.1")), Err(PendingRefusal::Total(4)));
        assert_eq!(p.admit(None), Err(PendingRefusal::Total(4)));
        p.release(ip("10.0.0.1"));
        assert_eq!(
            p.admit(None),
            Ok(()),
            "an unknown client counts in the total"
        );
        p.release(None);
        p.release(ip("10.0.0.0"));
        assert_eq!(p.total(), 2);
        assert!(p.per_client.len() == 2, "released clients are forgotten");
    }
}
