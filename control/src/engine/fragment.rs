//! Trickle-ICE fragments (`application/trickle-ice-sdpfrag`, RFC 8840) as a WHIP/WHEP PATCH
//! carries them: new remote candidates, or new credentials (an ICE restart).

use crate::error::{Error, Result};
use rtc::peer_connection::transport::RTCIceCandidateInit;

/// A parsed trickle-ICE fragment.
#[derive(Debug, Default)]
pub(super) struct Fragment {
    pub candidates: Vec<RTCIceCandidateInit>,
    /// New remote ufrag and password: the client restarts ICE.
    pub restart: Option<(String, String)>,
}

/// Parses a fragment; a line that is neither an attribute nor a media line is refused.
pub(super) fn parse_fragment(fragment: &str) -> Result<Fragment> {
    let mut mid = None;
    let mut out = Fragment::default();
    let (mut ufrag, mut pwd) = (None, None);
    for line in fragment.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.to_owned());
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            out.candidates.push(RTCIceCandidateInit {
                candidate: format!("candidate:{c}"),
                sdp_mid: mid.clone(),
                ..Default::default()
            });
        } else if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(u.to_owned());
        } else if let Some(p) = line.strip_prefix("a=ice-pwd:") {
            pwd = Some(p.to_owned());
        } else if !(line.is_empty() || line.starts_with("a=") || line.starts_with("m=")) {
            return Err(Error::MalformedFragment(format!(
                "unexpected line `{line}`"
            )));
        }
    }
    match (ufrag, pwd) {
        (Some(u), Some(p)) => out.restart = Some((u, p)),
        (None, None) => {}
        _ => {
            return Err(Error::MalformedFragment(
                "an ICE restart needs both a=ice-ufrag and a=ice-pwd".into(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickle_fragment_parses_candidates_and_restarts() {
        let frag = "a=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let c = parse_fragment(frag).unwrap();
        assert_eq!(c.candidates.len(), 1);
        assert_eq!(c.candidates[0].sdp_mid.as_deref(), Some("0"));
        assert!(c.candidates[0].candidate.starts_with("candidate:1 1 udp"));
        assert!(c.restart.is_none());
        let r =
            parse_fragment("a=ice-ufrag:abcd\r\na=ice-pwd:efghefghefghefghefghefgh\r\n").unwrap();
        assert_eq!(r.restart.unwrap().0, "abcd");
        assert!(matches!(
            parse_fragment("a=ice-ufrag:abcd\r\n"),
            Err(Error::MalformedFragment(_))
        ));
        assert!(matches!(
            parse_fragment("garbage"),
            Err(Error::MalformedFragment(_))
        ));
    }
}
