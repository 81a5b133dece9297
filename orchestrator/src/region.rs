//! Where a client is: the `[[regions]]` map from client networks (CIDR) to region names, and
//! the client address of an HTTP request.
//!
//! Owns the lookup (the most specific matching network wins) and the rule for the client
//! address: the first `X-Forwarded-For` entry when present (the orchestrator usually sits
//! behind a load balancer), else the TCP peer.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// One `[[regions]]` entry in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRule {
    /// A network such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 (/128).
    pub cidr: String,
    /// The region name, compared with the nodes' `NodeInfo.region`.
    pub region: String,
}

/// The parsed map, most specific network first.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    networks: Vec<(IpNet, String)>,
}

impl Regions {
    /// Parses every rule; the error names the bad one.
    pub fn new(rules: &[RegionRule]) -> Result<Self, String> {
        let mut networks = Vec::with_capacity(rules.len());
        for rule in rules {
            let net = rule
                .cidr
                .parse::<IpNet>()
                .or_else(|_| rule.cidr.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("regions: `{}` is not a CIDR network", rule.cidr))?;
            if rule.region.is_empty() {
                return Err(format!("regions: `{}` has an empty region", rule.cidr));
            }
            networks.push((net.trunc(), rule.region.clone()));
        }
        networks.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(Self { networks })
    }

    /// The region of `ip`, if a configured network contains it.
    pub fn region_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        self.networks
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, region)| region.as_str())
    }
}

/// The client's address: the first `X-Forwarded-For` entry if it parses, else the peer.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .and_then(|first| {
            first
                .parse::<IpAddr>()
                .ok()
                .or_else(|| first.parse::<SocketAddr>().ok().map(|s| s.ip()))
        })
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cidr: &str, region: &str) -> RegionRule {
        RegionRule {
            cidr: cidr.into(),
            region: region.into(),
        }
    }

    #[test]
    fn most_specific_network_wins() {
        let regions = Regions::new(&[
            rule("10.0.0.0/8", "eu"),
            rule("10.1.0.0/16", "us"),
            rule("2001:db8::/32", "ap"),
            rule("192.0.2.7", "lab"),
        ])
        .unwrap();
        assert_eq!(regions.region_of("10.2.3.4".parse().unwrap()), Some("eu"));
        assert_eq!(regions.region_of("10.1.3.4".parse().unwrap()), Some("us"));
        assert_eq!(
            regions.region_of("::ffff:10.1.0.1".parse().unwrap()),
            Some("us")
        );
        assert_eq!(
            regions.region_of("2001:db8::1".parse().unwrap()),
            Some("ap")
        );
        assert_eq!(regions.region_of("192.0.2.7".parse().unwrap()), Some("lab"));
        assert_eq!(regions.region_of("8.8.8.8".parse().unwrap()), None);
        assert!(Regions::new(&[rule("10.0.0.0/33", "x")]).is_err());
    }

    #[test]
    fn forwarded_for_wins_over_the_peer() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_ip(&headers, peer), peer.ip());
        headers.insert("x-forwarded-for", "10.1.2.3, 172.16.0.1".parse().unwrap());
        assert_eq!(
            client_ip(&headers, peer),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&headers, peer), peer.ip());
    }
}
