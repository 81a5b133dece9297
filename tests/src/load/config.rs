//! What a load run is asked to do ([`LoadConfig`]), validated before anything is sent: bounded
//! counts and times, and loopback targets only.

use super::error::LoadError;
use reqwest::Url;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Upper bounds, so a typo cannot turn the tool on the machine it shares.
pub const MAX_VIEWERS: usize = 5_000;
pub const MAX_DURATION: Duration = Duration::from_secs(3_600);
pub const MAX_RAMP: f64 = 1_000.0;

/// The synthetic video the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub bitrate_kbps: u32,
    /// How the publisher sends a frame's packets: spread at this multiple of the bitrate, as
    /// a WebRTC sender's pacer does (libwebrtc: 2.5), or, `None`, all at once.
    pub pacing: Option<f64>,
}

impl Default for VideoSpec {
    /// 720p30 at 2.5 Mbps with a 2 s GOP.
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            gop: 60,
            bitrate_kbps: 2_500,
            pacing: None,
        }
    }
}

/// SRTP protection profiles the tool's peers offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpChoice {
    /// `rtc`'s default list, AES-GCM first, as browsers do.
    #[default]
    Default,
    /// AES-128-GCM only.
    Gcm,
    /// AES-128-CM with HMAC-SHA1-80 only (the profile every endpoint must support).
    Cm,
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// WHIP endpoint to publish the synthetic stream to; `None` watches a stream someone else
    /// publishes (then there is no per-packet delay).
    pub whip: Option<Url>,
    pub whip_token: Option<String>,
    pub whep: Url,
    pub whep_token: Option<String>,
    pub viewers: usize,
    /// How long viewers run, from the first one's start.
    pub duration: Duration,
    /// Viewers started per second.
    pub ramp: f64,
    pub video: VideoSpec,
    /// Opus payload size follows from this: 64 kbps → 160-byte frames.
    pub audio_kbps: u32,
    /// Worker threads for the viewers (the publisher has its own thread).
    pub threads: usize,
    /// A process to report CPU and memory of (the server under test).
    pub server_pid: Option<u32>,
    /// An Annex-B H.264 file to send instead of the generated clip.
    pub clip: Option<PathBuf>,
    /// Where generated clips are cached.
    pub cache_dir: PathBuf,
    pub srtp: SrtpChoice,
    /// Requested receive buffer per viewer socket (the kernel caps it at `rmem_max`).
    pub socket_buffer: usize,
    /// After a viewer's first keyframe, one RTP packet in this many is decrypted and
    /// authenticated by `rtc` (and timed); the rest are counted from their clear header.
    /// 1 (the default) verifies every packet; more lets one core drive more viewers.
    pub verify_every: u32,
}

impl LoadConfig {
    /// A run of `viewers` viewers for `duration` against the given endpoints, other settings
    /// at their defaults.
    pub fn new(whip: Option<Url>, whep: Url, viewers: usize, duration: Duration) -> Self {
        Self {
            whip,
            whip_token: None,
            whep,
            whep_token: None,
            viewers,
            duration,
            ramp: 50.0,
            video: VideoSpec::default(),
            audio_kbps: 64,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            server_pid: None,
            clip: None,
            cache_dir: crate::target_dir().join("waveguide-load"),
            srtp: SrtpChoice::Default,
            socket_buffer: 1 << 20,
            verify_every: 1,
        }
    }

    /// Checks bounds and that every URL is on loopback.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |what: String| Err(LoadError::Config(what));
        if self.viewers > MAX_VIEWERS {
            return bad(format!("--viewers {} is above {MAX_VIEWERS}", self.viewers));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "--duration {:?} must be above 0 and at most {MAX_DURATION:?}",
                self.duration
            ));
        }
        if !(self.ramp > 0.0 && self.ramp <= MAX_RAMP) {
            return bad(format!("--ramp {} must be in (0, {MAX_RAMP}]", self.ramp));
        }
        let v = &self.video;
        if v.fps == 0 || v.fps > 120 || v.gop == 0 || v.bitrate_kbps < 50 || v.bitrate_kbps > 50_000
        {
            return bad(format!("video {v:?} is out of range"));
        }
        if !(6..=510).contains(&self.audio_kbps) {
            return bad(format!("--audio-kbps {} is out of range", self.audio_kbps));
        }
        if !(1..=1_000).contains(&self.verify_every) {
            return bad(format!(
                "--verify-every {} must be 1..=1000",
                self.verify_every
            ));
        }
        if self.threads == 0 || self.threads > 64 {
            return bad(format!("--threads {} must be 1..=64", self.threads));
        }
        for url in self.whip.iter().chain([&self.whep]) {
            ensure_loopback(url)?;
        }
        Ok(())
    }
}

/// Whether an IP address is loopback (127.0.0.0/8 or ::1, also as IPv4-mapped IPv6).
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Refuses any URL that is not `http(s)` to `localhost` or a loopback address.
pub fn ensure_loopback(url: &Url) -> Result<(), LoadError> {
    let refuse = || Err(LoadError::NotLoopback(url.to_string()));
    if !matches!(url.scheme(), "http" | "https") {
        return refuse();
    }
    let Some(host) = url.host_str() else {
        return refuse();
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if is_loopback_ip(ip) => Ok(()),
        _ => refuse(),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (ms, s, m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080/whep/demo",
            "http://127.1.2.3/whep/x",
            "http://localhost:1/whip",
            "http://[::1]:8080/whep/demo",
            "https://127.0.0.1/whep/demo",
        ] {
            assert!(ensure_loopback(&url(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/whep/demo",
            "http://example.org/whep/demo",
            "http://0.0.0.0:8080/whep/demo",
            "http://[::2]/whep",
            "ftp://127.0.0.1/whep",
            "http://localhost.example.org/whep",
        ] {
            assert!(ensure_loopback(&url(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_ips() {
        assert!(is_loopback_ip("127.0.0.1".parse().unwrap()));
        assert!(is_loopback_ip("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback_ip("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn validation_bounds() {
        let whep = url("http://127.0.0.1:8080/whep/demo");
        let ok = LoadConfig::new(None, whep.clone(), 10, Duration::from_secs(5));
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.viewers = MAX_VIEWERS + 1;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.duration = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.ramp = 0.0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.whip = Some(url("http://192.0.2.1/whip"));
        assert!(matches!(c.validate(), Err(LoadError::NotLoopback(_))));
    }
}
