//! Admission of ingest connections before they have proven anything: a cap on connections open
//! at once and a cap per client address, checked at `accept`. Each TCP ingest listener (RTMP,
//! FTL control) owns one [`Admission`]; a connection holds its [`Admitted`] slot until it ends.
//!
//! Owns the counting and the address grouping only: no sockets, no clock, no protocol. IPv6
//! clients are grouped by their /64 (one subscriber holds a whole /64, so per-address counting
//! would not limit anyone); IPv4-mapped IPv6 addresses count as the IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The listener already serves its maximum.
    #[error("{0} connections open")]
    Full(usize),
    /// This client (address, or IPv6 /64) already holds its maximum.
    #[error("{0} connections open from this address")]
    PerAddress(usize),
}

impl Refusal {
    /// The `cause` label of the refusal counter.
    pub fn cause(self) -> &'static str {
        match self {
            Refusal::Full(_) => "max_connections",
            Refusal::PerAddress(_) => "max_connections_per_ip",
        }
    }
}

#[derive(Debug)]
struct Counts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Connection caps of one listener.
#[derive(Debug, Clone)]
pub struct Admission {
    max_total: usize,
    max_per_client: usize,
    // A std mutex: held for a map update at accept and at close, never across an await.
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Admitted {
    client: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

/// The address a client is counted under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    /// At most `max_total` connections, at most `max_per_client` of them from one client.
    pub fn new(max_total: NonZeroUsize, max_per_client: NonZeroUsize) -> Self {
        Self {
            max_total: max_total.get(),
            max_per_client: max_per_client.get(),
            counts: Arc::new(Mutex::new(Counts {
                total: 0,
                by_client: HashMap::new(),
            })),
        }
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let client = client_key(ip);
        // A poisoned lock means a panic mid-update of two integers; the counts are still the
        // best there is.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::Full(self.max_total));
        }
        let mine = counts.by_client.entry(client).or_default();
        if *mine >= self.max_per_client {
            return Err(Refusal::PerAddress(self.max_per_client));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Admitted {
            client,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.by_client.remove(&self.client);
            }
        }
    }
}

/// At most one log line per interval for an event an attacker can repeat at will; the others
/// are counted and reported with the next line.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events suppressed since the last line)` when a line may be logged at `now`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn caps_per_client_and_in_total_and_frees_on_drop() {
        let a = Admission::new(nz(3), nz(2));
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let first = a.admit(ip1).unwrap();
        let _second = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).unwrap_err(), Refusal::PerAddress(2));
        let _third = a.admit(ip2).unwrap();
        assert_eq!(a.admit(ip2).unwrap_err(), Refusal::Full(3));
        drop(first);
        assert_eq!(a.open(), 2);
        let _again = a.admit(ip1).unwrap();
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a = Admission::new(nz(100), nz(1));
        let _x = a.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(a.admit("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        let _y = a.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _z = a.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(a.admit("::ffff:10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let mut t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), Some(2));
    }
}
