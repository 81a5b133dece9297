//! Free 127.0.0.1 ports for the processes the tests start.
//!
//! Ports come from below the kernel's ephemeral range, so a port handed to the edge cannot be
//! taken a moment later by a client socket (Chromium and aiortc bind many ephemeral UDP ports).
//! A process-wide cursor makes sure one test binary never hands out the same port twice; the
//! start of the window depends on the pid so concurrent test binaries rarely probe the same
//! ports. Every port is probed by binding it before it is returned.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::Mutex;

const WINDOW_START: u16 = 20_000;

static CURSOR: Mutex<Option<u16>> = Mutex::new(None);

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Returns the first port `p` such that `p..p + count` are all free for TCP and UDP.
fn take(count: u16) -> u16 {
    let end = ephemeral_low().max(WINDOW_START + 1_000);
    // A poisoned cursor only means another test panicked while holding it; the value is fine.
    let mut cursor = CURSOR.lock().unwrap_or_else(|e| e.into_inner());
    let span = end - WINDOW_START;
    let mut next =
        cursor.unwrap_or_else(|| WINDOW_START + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        if next + count >= end {
            next = WINDOW_START;
        }
        let block = next..next + count;
        next += count;
        if block.clone().all(|p| tcp_free(p) && udp_free(p)) {
            *cursor = Some(next);
            return block.start;
        }
    }
    panic!("no {count} free consecutive ports between {WINDOW_START} and {end}");
}

/// One free port (TCP and UDP) on 127.0.0.1.
pub fn free_port() -> u16 {
    take(1)
}

/// `count` consecutive free ports on 127.0.0.1; returns the first.
pub fn free_port_block(count: u16) -> u16 {
    take(count)
}
