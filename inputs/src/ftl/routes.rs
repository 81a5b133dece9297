//! Which FTL session a media datagram belongs to (sans-IO): who owns each SSRC, and where that
//! session's media may come from.
//!
//! FTL media is plain RTP on one shared UDP port, told apart only by the SSRCs the client
//! declared on its control connection, so both are guarded here:
//!
//! - **An SSRC belongs to one session.** A session claims its declared SSRCs when its
//!   attributes are complete; a claim that collides with another live session is refused
//!   (`403`/`404`, as `ftl_app` expects), unless that session publishes the same stream (a
//!   reconnect of the same, authenticated publisher, which replaces it). A session only ever
//!   releases its own SSRCs.
//! - **Media comes from the publisher.** `ftl_app` sends media from the host of its control
//!   connection, so a session accepts datagrams only from that connection's IP address, and
//!   from the first source port it hears its SSRCs from there (`ftl_app` sends audio, video
//!   and pings from one socket). Anything else carrying its SSRCs is foreign and dropped.
//!
//! Owns no sockets, no clock and no media state (`media` does that per session).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use waveguide_control::media::TrackKind;

/// A claim refused: this track's SSRC is owned by another stream's live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} SSRC {ssrc} is in use by another stream")]
pub struct Collision {
    /// The declared track whose SSRC is taken.
    pub kind: TrackKind,
    /// The SSRC.
    pub ssrc: u32,
}

impl Collision {
    /// The FTL reply code `ftl_app` explains to its user (`403` audio, `404` video).
    pub fn reply_code(&self) -> u16 {
        match self.kind {
            TrackKind::Audio => 403,
            TrackKind::Video => 404,
        }
    }
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// To this session.
    Session(u64),
    /// No session owns the SSRC.
    Unknown,
    /// A session owns the SSRC, but the datagram is not from its publisher.
    Foreign(u64),
}

#[derive(Debug)]
struct Route {
    stream: String,
    source: IpAddr,
    /// The publisher's media address, learnt from its first datagram.
    media_from: Option<SocketAddr>,
}

/// SSRC ownership and source binding of every FTL session.
#[derive(Debug, Default)]
pub struct Routes {
    by_ssrc: HashMap<u32, u64>,
    sessions: HashMap<u64, Route>,
}

/// The address as compared: an IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl Routes {
    /// Claims `ssrcs` for session `id` of `stream`, whose control connection comes from
    /// `source`. Returns the sessions it replaces (earlier sessions of the same stream holding
    /// any of them, now released), or the first collision with another stream's session.
    pub fn claim(
        &mut self,
        id: u64,
        stream: &str,
        source: IpAddr,
        ssrcs: &[(u32, TrackKind)],
    ) -> Result<Vec<u64>, Collision> {
        let mut replaced = Vec::new();
        for &(ssrc, kind) in ssrcs {
            let Some(&owner) = self.by_ssrc.get(&ssrc) else {
                continue;
            };
            if owner == id {
                continue;
            }
            let same_stream = self
                .sessions
                .get(&owner)
                .is_some_and(|r| r.stream == stream);
            if !same_stream {
                return Err(Collision { kind, ssrc });
            }
            if !replaced.contains(&owner) {
                replaced.push(owner);
            }
        }
        for &old in &replaced {
            self.release(old);
        }
        self.release(id);
        for &(ssrc, _) in ssrcs {
            self.by_ssrc.insert(ssrc, id);
        }
        self.sessions.insert(
            id,
            Route {
                stream: stream.to_owned(),
                source: canonical(source),
                media_from: None,
            },
        );
        Ok(replaced)
    }

    /// Forgets session `id` and the SSRCs it owns (and nobody else's).
    pub fn release(&mut self, id: u64) {
        if self.sessions.remove(&id).is_some() {
            self.by_ssrc.retain(|_, owner| *owner != id);
        }
    }

    /// Where a datagram carrying `ssrc` from `from` goes.
    pub fn route(&mut self, ssrc: u32, from: SocketAddr) -> Verdict {
        let Some(&id) = self.by_ssrc.get(&ssrc) else {
            return Verdict::Unknown;
        };
        let Some(route) = self.sessions.get_mut(&id) else {
            return Verdict::Unknown;
        };
        let from = SocketAddr::new(canonical(from.ip()), from.port());
        if from.ip() != route.source {
            return Verdict::Foreign(id);
        }
        match route.media_from {
            None => {
                route.media_from = Some(from);
                Verdict::Session(id)
            }
            Some(addr) if addr == from => Verdict::Session(id),
            Some(_) => Verdict::Foreign(id),
        }
    }

    /// Sessions holding routes.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session holds a route.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: TrackKind = TrackKind::Video;
    const A: TrackKind = TrackKind::Audio;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn media_only_from_the_publishers_address_and_first_port() {
        let mut r = Routes::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        r.claim(1, "demo", ip, &[(1234, V), (1235, A)]).unwrap();
        // Another host with the victim's SSRC.
        assert_eq!(r.route(1234, addr("127.0.0.2:5000")), Verdict::Foreign(1));
        // The publisher's first datagram fixes its port; audio comes from the same socket.
        assert_eq!(r.route(1234, addr("127.0.0.1:40000")), Verdict::Session(1));
        assert_eq!(r.route(1235, addr("127.0.0.1:40000")), Verdict::Session(1));
        // Another socket on the publisher's host.
        assert_eq!(r.route(1234, addr("127.0.0.1:40001")), Verdict::Foreign(1));
        // IPv4-mapped is the same address.
        assert_eq!(
            r.route(1234, addr("[::ffff:127.0.0.1]:40000")),
            Verdict::Session(1)
        );
        assert_eq!(r.route(99, addr("127.0.0.1:40000")), Verdict::Unknown);
    }

    #[test]
    fn an_ssrc_belongs_to_one_stream_and_only_its_owner_releases_it() {
        let mut r = Routes::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        r.claim(1, "victim", ip, &[(1234, V), (1235, A)]).unwrap();
        // Another stream (a publisher with a valid key of its own) declares the victim's SSRCs.
        assert_eq!(
            r.claim(2, "other", ip, &[(1235, A), (1234, V)]),
            Err(Collision {
                kind: A,
                ssrc: 1235
            })
        );
        assert_eq!(
            r.claim(2, "other", ip, &[(7, A), (1234, V)])
                .unwrap_err()
                .reply_code(),
            404
        );
        // The refused session ends; releasing it leaves the victim's routes alone.
        r.release(2);
        assert_eq!(r.route(1234, addr("127.0.0.1:40000")), Verdict::Session(1));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_reconnect_of_the_same_stream_replaces_its_old_session() {
        let mut r = Routes::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        r.claim(1, "demo", ip, &[(1234, V), (1235, A)]).unwrap();
        assert_eq!(r.route(1234, addr("127.0.0.1:40000")), Verdict::Session(1));
        let moved: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(
            r.claim(2, "demo", moved, &[(1234, V), (1235, A)]),
            Ok(vec![1])
        );
        // The old session's late release touches nothing of the new one.
        r.release(1);
        assert_eq!(r.route(1234, addr("127.0.0.3:50000")), Verdict::Session(2));
        assert_eq!(r.route(1235, addr("127.0.0.1:40000")), Verdict::Foreign(2));
        r.release(2);
        assert!(r.is_empty());
        assert_eq!(r.route(1234, addr("127.0.0.3:50000")), Verdict::Unknown);
    }
}
