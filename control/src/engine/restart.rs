//! ICE restart for an established session (WHIP/WHEP `PATCH` with new credentials).
//!
//! The client sends only its new ufrag and password; the engine wants a whole offer, so the
//! current remote description is re-issued with the new credentials. The answer's credentials
//! and candidates go back to the client as an `application/trickle-ice-sdpfrag` body.

use super::peer::Peer;
use rtc::peer_connection::sdp::RTCSessionDescription;
use std::time::Instant;

/// What a PATCH fragment turned out to be.
pub(crate) enum Patched {
    /// Same credentials as the session's: plain trickle.
    Trickle,
    /// ICE restarted: (old local ufrag, new local ufrag, answer fragment).
    Restarted(String, String, String),
}

/// Whether `ufrag`/`pwd` are the session's current remote credentials (a trickle fragment
/// carries them too, RFC 8840) or new ones (an ICE restart).
pub(crate) fn is_current(peer: &Peer, ufrag: &str, pwd: &str) -> bool {
    let Some(remote) = peer.pc.remote_description() else {
        return false;
    };
    let has = |prefix: &str, value: &str| {
        remote
            .sdp
            .lines()
            .any(|l| l.trim().strip_prefix(prefix) == Some(value))
    };
    has("a=ice-ufrag:", ufrag) && has("a=ice-pwd:", pwd)
}

/// Restarts ICE on `peer`; returns (old local ufrag, new local ufrag, answer fragment).
pub(crate) fn restart_ice(
    peer: &mut Peer,
    ufrag: &str,
    pwd: &str,
    now: Instant,
) -> Result<(String, String, String), String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    if !valid(ufrag) || !valid(pwd) {
        return Err("ice-ufrag and ice-pwd must be ICE characters".into());
    }
    let remote = peer
        .pc
        .remote_description()
        .map(|d| d.sdp.clone())
        .ok_or("no remote description")?;
    let offer: String = remote
        .split_inclusive('\n')
        .map(|line| {
            if line.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}\r\n")
            } else if line.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}\r\n")
            } else {
                line.to_owned()
            }
        })
        .collect();
    let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
    peer.pc
        .set_remote_description(now, offer)
        .map_err(|e| e.to_string())?;
    let answer = peer.pc.create_answer(None).map_err(|e| e.to_string())?;
    peer.pc
        .set_local_description(now, answer)
        .map_err(|e| e.to_string())?;
    let sdp = peer
        .pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or("no local description")?;
    let mut fragment = String::new();
    let mut new_ufrag = None;
    let mut seen_credentials = false;
    for line in sdp.lines() {
        if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            if seen_credentials {
                continue;
            }
            new_ufrag = Some(u.to_owned());
            fragment.push_str(line);
            fragment.push_str("\r\n");
        } else if line.starts_with("a=ice-pwd:") && !seen_credentials {
            seen_credentials = true;
            fragment.push_str(line);
            fragment.push_str("\r\n");
        } else if line.starts_with("a=ice-lite") && !fragment.contains("a=ice-lite") {
            fragment.insert_str(0, "a=ice-lite\r\n");
        }
    }
    let mut candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    candidates.dedup();
    for c in candidates {
        fragment.push_str(c);
        fragment.push_str("\r\n");
    }
    fragment.push_str("a=end-of-candidates\r\n");
    let new_ufrag = new_ufrag.ok_or("answer has no ice-ufrag")?;
    let old = std::mem::replace(&mut peer.local_ufrag, new_ufrag.clone());
    Ok((old, new_ufrag, fragment))
}
