//! Per-client rate limits: one token bucket per client, refilled continuously. WHIP/WHEP POSTs
//! (each one costs an SDP parse and a peer connection) and gRPC signaling streams go through
//! it, so one client cannot exhaust what the node offers everyone.
//!
//! Owns what "one client" is and how many clients are remembered:
//! - A client is an IPv4 address, or an IPv6 /64: one host is handed a whole /64, so keying by
//!   the exact IPv6 address would give it 2^64 fresh buckets.
//! - Buckets live in [`SHARDS`] maps (one lock each, held for a few arithmetic operations), each
//!   in two generations. A bucket untouched for a whole generation is forgotten when the next
//!   one starts: a generation lasts the time an empty bucket takes to refill (so a forgotten
//!   bucket was full, the same as a new one) unless a shard reaches [`MAX_PER_SHARD`] clients
//!   first. Either way a request costs one or two hash lookups, never a scan, and memory stays
//!   bounded however many addresses a client brings.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Independent maps, so concurrent clients rarely wait on one lock.
pub const SHARDS: usize = 16;
/// Clients one shard's current generation holds before it starts a new one.
pub const MAX_PER_SHARD: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One shard: the buckets touched in this generation and in the one before.
#[derive(Debug)]
struct Shard {
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    started: Instant,
}

/// `rate` requests per second on average, `burst` at once, per client (see [`client_key`]).
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    /// How long an empty bucket takes to fill: the shortest generation.
    generation: Duration,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

/// The client an address belongs to: an IPv4 address itself (an IPv4-mapped IPv6 address is
/// its IPv4 address), or the /64 network of an IPv6 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

impl RateLimit {
    /// `per_minute` requests per minute with bursts of `burst`; `None` when `per_minute` is 0
    /// (no limit).
    pub fn per_minute(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0).then(|| {
            let rate = f64::from(per_minute) / 60.0;
            let burst = f64::from(burst.max(1));
            let now = Instant::now();
            Self {
                rate,
                burst,
                generation: Duration::from_secs_f64(burst / rate),
                hasher: RandomState::new(),
                shards: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(Shard {
                            current: HashMap::new(),
                            previous: HashMap::new(),
                            started: now,
                        })
                    })
                    .collect(),
            }
        })
    }

    /// Takes one token for the client of `ip`, or says how long until one is there.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client_key(ip);
        // The generation that ends here is dropped after the lock is released.
        let mut forgotten = None;
        let verdict = {
            let mut shard = self.shard(key);
            let full = shard.current.len() >= MAX_PER_SHARD && !shard.current.contains_key(&key);
            if full || now.saturating_duration_since(shard.started) >= self.generation {
                let current = std::mem::take(&mut shard.current);
                forgotten = Some(std::mem::replace(&mut shard.previous, current));
                shard.started = now;
            }
            let bucket = match shard.previous.remove(&key) {
                Some(kept) => shard.current.entry(key).or_insert(kept),
                None => shard.current.entry(key).or_insert(Bucket {
                    tokens: self.burst,
                    at: now,
                }),
            };
            let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
            }
        };
        drop(forgotten);
        verdict
    }

    /// How many clients are remembered now (both generations).
    pub fn tracked(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let shard = lock(&self.shards[i]);
                shard.current.len() + shard.previous.len()
            })
            .sum()
    }

    fn shard(&self, key: IpAddr) -> MutexGuard<'_, Shard> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        lock(&self.shards[index])
    }
}

/// Held for a few arithmetic operations only, never across an await; a poisoned shard is
/// still a consistent map.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_address() {
        let limit = RateLimit::per_minute(60, 3).unwrap();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limit.check(a, t).is_ok());
        }
        let wait = limit.check(a, t).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(
            limit.check(b, t).is_ok(),
            "another address has its own bucket"
        );
        assert!(limit.check(a, t + Duration::from_secs(1)).is_ok());
        assert!(RateLimit::per_minute(0, 5).is_none());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let limit = RateLimit::per_minute(60, 3).unwrap();
        let t = Instant::now();
        // A host walking through its own /64: every address a new one, all one bucket.
        for i in 0..3u128 {
            let ip = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0001_0002_0000_0000_0000_0000 + i,
            ));
            assert!(
                limit.check(ip, t).is_ok(),
                "request {i} is within the burst"
            );
        }
        let walked: IpAddr = "2001:db8:1:2:dead:beef:1:1".parse().unwrap();
        assert!(
            limit.check(walked, t).is_err(),
            "another address of the /64"
        );
        let neighbour: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(
            limit.check(neighbour, t).is_ok(),
            "the next /64 is another client"
        );
        assert_eq!(
            client_key("2001:db8:1:2:dead:beef:1:1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "an IPv4-mapped address is its IPv4 client"
        );
        assert_eq!(
            client_key("192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn memory_stays_bounded_and_a_limited_client_stays_limited() {
        let limit = RateLimit::per_minute(60, 2).unwrap();
        let t = Instant::now();
        let limited: IpAddr = [10, 255, 255, 1].into();
        assert!(limit.check(limited, t).is_ok());
        assert!(limit.check(limited, t).is_ok());
        assert!(limit.check(limited, t).is_err());
        // A flood of distinct clients, far past every shard's cap, within one generation.
        let flood = SHARDS * MAX_PER_SHARD * 4;
        for i in 0..flood {
            let ip = IpAddr::V4(u32::try_from(i).unwrap().into());
            assert!(limit.check(ip, t).is_ok());
            // The limited client keeps asking: it stays in its shard's current generation.
            if i % 256 == 0 {
                assert!(limit.check(limited, t).is_err(), "still limited after {i}");
            }
        }
        assert!(
            limit.tracked() <= 2 * SHARDS * MAX_PER_SHARD,
            "{} buckets remembered",
            limit.tracked()
        );
    }

    #[test]
    fn a_bucket_refills_across_generations_never_past_its_burst() {
        // Generations of 2 s: an empty bucket of 2 refills at 1 token a second.
        let limit = RateLimit::per_minute(60, 2).unwrap();
        let t = Instant::now();
        let a: IpAddr = [192, 0, 2, 1].into();
        assert!(limit.check(a, t).is_ok());
        assert!(limit.check(a, t).is_ok());
        assert!(limit.check(a, t).is_err());
        let half = t + Duration::from_millis(500);
        assert!(limit.check(a, half).is_err(), "half a second, half a token");
        // Past two generations: kept or forgotten, the bucket is full, and no fuller.
        let later = t + Duration::from_secs(8);
        assert!(limit.check(a, later).is_ok());
        assert!(limit.check(a, later).is_ok());
        assert!(limit.check(a, later).is_err());
    }
}
