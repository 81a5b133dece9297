//! The shards' UDP sockets: one per (shard, local address), all shards on consecutive ports.
//!
//! Each socket is bound to one specific local address rather than the wildcard, so a reply
//! always leaves from the address the peer reached; a wildcard socket lets the kernel pick the
//! source and breaks ICE on multi-homed hosts (FIELD-NOTES: Chromium sends from eth0 to an
//! advertised 127.0.0.1).

use crate::config::WebRtcConfig;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Kernel buffer asked for per socket: a burst of keyframe packets to many viewers fits.
const SOCKET_BUFFER: usize = 4 << 20;

/// The sockets of one shard and the candidate addresses advertised for it.
pub(crate) struct ShardSockets {
    pub sockets: Vec<(std::net::UdpSocket, SocketAddr)>,
    pub candidates: Vec<SocketAddr>,
}

/// How many shards to run.
pub(crate) fn shard_count(config: &WebRtcConfig) -> usize {
    if config.shards > 0 {
        config.shards
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Local addresses to bind: the configured ones, else every IPv4 interface address.
pub(crate) fn bind_ips(config: &WebRtcConfig) -> io::Result<Vec<IpAddr>> {
    if !config.bind_ips.is_empty() {
        return Ok(config.bind_ips.clone());
    }
    let mut ips = local_ipv4_addresses()?;
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    Ok(ips)
}

/// Every IPv4 address of the host's interfaces (loopback included), sorted. Any input that
/// binds per address, so its replies leave from the address the client reached, starts here.
pub fn local_ipv4_addresses() -> io::Result<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Binds every shard's sockets.
pub(crate) fn bind(config: &WebRtcConfig) -> io::Result<Vec<ShardSockets>> {
    let ips = bind_ips(config)?;
    let shards = shard_count(config);
    let mut out = Vec::with_capacity(shards);
    for shard in 0..shards {
        let port = config.udp_port.checked_add(shard as u16).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "webrtc.udp_port + shards exceeds 65535",
            )
        })?;
        let mut sockets = Vec::new();
        for ip in &ips {
            let addr = SocketAddr::new(*ip, port);
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            // Best effort: the kernel caps these at net.core.{r,w}mem_max.
            let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
            socket.set_nonblocking(true)?;
            socket
                .bind(&addr.into())
                .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {addr}: {e}")))?;
            sockets.push((socket.into(), addr));
        }
        let candidates = match config.public_ip {
            Some(public) => vec![SocketAddr::new(public, port)],
            None => ips
                .iter()
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| SocketAddr::new(*ip, port))
                .collect(),
        };
        out.push(ShardSockets {
            sockets,
            candidates,
        });
    }
    Ok(out)
}
