//! Redirect tickets: the orchestrator checks a publisher's key, then sends it to an edge with a
//! short-lived ticket in the `Location` URL, because browsers and curl drop `Authorization` when
//! a redirect changes host. The edge accepts the ticket in place of the key.
//!
//! A ticket is `w1~<scope>~<expires unix secs>~<stream>~<hex HMAC-SHA256>`, keyed with the
//! cluster token. Every part is URL-safe (stream names are `[A-Za-z0-9._-]`, and `~` is not one
//! of them), so it goes into a query string as is.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VERSION: &str = "w1";

/// What a ticket lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketScope {
    /// Publish the stream (WHIP): the orchestrator already checked the key.
    Publish,
    /// Watch the stream as an end viewer (WHEP).
    Watch,
    /// Pull the stream for another edge: not counted against the end-viewer limit.
    Relay,
}

impl TicketScope {
    fn letter(self) -> &'static str {
        match self {
            TicketScope::Publish => "p",
            TicketScope::Watch => "w",
            TicketScope::Relay => "r",
        }
    }
}

/// A verified ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// What it allows.
    pub scope: TicketScope,
    /// The stream it is for.
    pub stream: String,
}

/// Why a ticket is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket, or signed with another key.
    #[error("the ticket is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the ticket has expired")]
    Expired,
    /// Valid, but for another stream or purpose.
    #[error("the ticket is for another stream or purpose")]
    WrongScope,
}

/// The cluster secret as a signing key. Tickets are signed and checked with the same key on
/// every orchestrator and edge.
#[derive(Clone)]
pub struct TicketKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A key from the cluster token.
    pub fn new(cluster_token: &str) -> Self {
        Self {
            // HMAC accepts keys of any length.
            mac: Hmac::<Sha256>::new_from_slice(cluster_token.as_bytes())
                .expect("HMAC takes a key of any length"),
        }
    }

    fn tag(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(body.as_bytes());
        mac
    }

    /// A ticket for `scope` on `stream`, valid for `ttl` from `now`.
    pub fn sign(&self, scope: TicketScope, stream: &str, ttl: Duration, now: SystemTime) -> String {
        let expires = unix_secs(now) + ttl.as_secs().max(1);
        let body = format!("{VERSION}~{}~{expires}~{stream}", scope.letter());
        let tag = hex::encode(self.tag(&body).finalize().into_bytes());
        format!("{body}~{tag}")
    }

    /// Checks `ticket` at `now` and returns what it grants. Constant-time on the signature.
    pub fn verify(&self, ticket: &str, now: SystemTime) -> Result<Ticket, TicketError> {
        let (body, tag) = ticket.rsplit_once('~').ok_or(TicketError::Invalid)?;
        let tag = hex::decode(tag).map_err(|_| TicketError::Invalid)?;
        self.tag(body)
            .verify_slice(&tag)
            .map_err(|_| TicketError::Invalid)?;
        let mut parts = body.split('~');
        let (Some(VERSION), Some(scope), Some(expires), Some(stream), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TicketError::Invalid);
        };
        let scope = match scope {
            "p" => TicketScope::Publish,
            "w" => TicketScope::Watch,
            "r" => TicketScope::Relay,
            _ => return Err(TicketError::Invalid),
        };
        let expires: u64 = expires.parse().map_err(|_| TicketError::Invalid)?;
        if unix_secs(now) > expires {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            scope,
            stream: stream.to_owned(),
        })
    }

    /// Checks `ticket` grants `scope` on `stream`.
    pub fn verify_for(
        &self,
        ticket: &str,
        scope: TicketScope,
        stream: &str,
        now: SystemTime,
    ) -> Result<Ticket, TicketError> {
        let t = self.verify(ticket, now)?;
        if t.scope != scope || t.stream != stream {
            return Err(TicketError::WrongScope);
        }
        Ok(t)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_ticket_verifies_and_tampering_fails() {
        let key = TicketKey::new("cluster-secret");
        let now = SystemTime::now();
        let t = key.sign(TicketScope::Publish, "demo", Duration::from_secs(60), now);
        assert!(!t.contains(['/', '?', '&', '=', ' ', '#']), "{t}");
        assert_eq!(
            key.verify_for(&t, TicketScope::Publish, "demo", now),
            Ok(Ticket {
                scope: TicketScope::Publish,
                stream: "demo".into()
            })
        );
        assert_eq!(
            key.verify_for(&t, TicketScope::Publish, "other", now),
            Err(TicketError::WrongScope)
        );
        assert_eq!(
            key.verify_for(&t, TicketScope::Relay, "demo", now),
            Err(TicketError::WrongScope)
        );
        let later = now + Duration::from_secs(120);
        assert_eq!(key.verify(&t, later), Err(TicketError::Expired));
        assert_eq!(
            TicketKey::new("other-secret").verify(&t, now),
            Err(TicketError::Invalid)
        );
        let forged = t.replace("~demo~", "~demx~");
        assert_eq!(key.verify(&forged, now), Err(TicketError::Invalid));
        for junk in ["", "~", "w1~p~1~demo~zz", "a~b~c~d~e~f", "w1~p~x~demo~00"] {
            assert_eq!(key.verify(junk, now), Err(TicketError::Invalid), "{junk}");
        }
    }
}
