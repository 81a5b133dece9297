//! The summary of a run ([`Report`]): built from every viewer's result and the CPU/traffic
//! samples, printed as a table or as one JSON object.

use super::procstat::{HostCpu, ProcSample, UdpCounters, Units};
use super::publisher::PublisherStats;
use super::stats::{Histogram, percentile_sorted};
use super::viewer::ViewerResult;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Counters at one instant of the run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub tool: Option<ProcSample>,
    pub server: Option<ProcSample>,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub udp: Option<UdpCounters>,
    pub host: Option<HostCpu>,
    /// Per-core counters (`cpuN` of `/proc/stat`).
    pub cores: Vec<HostCpu>,
}

/// What the report is built from.
pub struct Inputs<'a> {
    pub viewers_requested: usize,
    pub results: &'a [ViewerResult],
    pub publisher: Option<PublisherStats>,
    pub clip_kbps: Option<f64>,
    pub units: Units,
    /// Server memory before the first viewer.
    pub server_before: Option<ProcSample>,
    /// Samples at the run's start, at the start of the measuring window, and at its end.
    pub start: Sample,
    pub window_start: Sample,
    pub end: Sample,
    /// Whether the window is the steady state after the ramp (else: the whole run).
    pub steady: bool,
    pub verify_every: u32,
}

/// The run's summary. Times in milliseconds, rates in Mbit/s, CPU in cores (1.0 = one core).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub viewers_requested: usize,
    pub viewers_started: usize,
    pub viewers_connected: usize,
    pub viewers_joined: usize,
    pub viewers_dropped: usize,
    pub failures: BTreeMap<String, usize>,
    pub join_ms_p50: Option<f64>,
    pub join_ms_p95: Option<f64>,
    pub join_ms_max: Option<f64>,
    pub connect_ms_p50: Option<f64>,
    pub connect_ms_p95: Option<f64>,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub loss_pct: f64,
    pub loss_pct_window: f64,
    /// Per-packet delay in the window (publisher send → viewer receive).
    pub delay_ms_p50: Option<f64>,
    pub delay_ms_p95: Option<f64>,
    pub delay_ms_p99: Option<f64>,
    pub delay_ms_max: Option<f64>,
    /// The same over the whole run, joins included.
    pub delay_all_ms_p95: Option<f64>,
    pub delay_all_ms_p99: Option<f64>,
    pub delay_samples: u64,
    pub window: &'static str,
    pub window_s: f64,
    pub rx_mbps: f64,
    pub rx_mbps_per_viewer: f64,
    pub rx_packets_per_s: f64,
    pub clip_kbps: Option<f64>,
    pub publisher: Option<PublisherStats>,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub server_rss_kib_per_viewer: Option<f64>,
    pub tool_cpu_cores: Option<f64>,
    pub tool_us_per_packet: Option<f64>,
    /// CPU used by everything else on the host in the window (other processes, interrupts):
    /// a measurement on a shared machine is only as good as this is small.
    pub other_cpu_cores: Option<f64>,
    /// Busy share of each core in the window (0–1; with the server and the tool pinned, what
    /// their cores did, kernel work on their behalf included).
    pub core_busy: Vec<f64>,
    pub udp_rcvbuf_errors: Option<u64>,
    pub udp_sndbuf_errors: Option<u64>,
    pub srtp_read_errors: u64,
    pub unknown_payload_packets: u64,
    /// One RTP packet in this many went through SRTP decryption and authentication (and
    /// was timed) once a viewer had joined; 1 = all.
    pub verify_every: u32,
    /// RTP packets counted from their clear header only.
    pub unverified_packets: u64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn us_to_ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| (v as f64 / 100.0).round() / 10.0)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 100.0 / whole as f64 * 1000.0).round() / 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Report {
    pub fn build(i: Inputs<'_>) -> Report {
        let r = i.results;
        let mut joins: Vec<Duration> = r.iter().filter_map(|v| v.joined).collect();
        let mut connects: Vec<Duration> = r.iter().filter_map(|v| v.connected).collect();
        joins.sort();
        connects.sort();
        let mut failures = BTreeMap::new();
        for v in r {
            if let Some(e) = &v.error {
                *failures.entry(e.clone()).or_insert(0) += 1;
            } else if v.connected.is_none() {
                *failures.entry("never connected".to_owned()).or_insert(0) += 1;
            } else if v.joined.is_none() {
                *failures
                    .entry("no complete keyframe".to_owned())
                    .or_insert(0) += 1;
            }
        }
        let (mut expected, mut lost, mut w_expected, mut w_lost) = (0, 0, 0, 0);
        let mut delay = Histogram::new();
        let mut delay_all = Histogram::new();
        for v in r {
            for t in [&v.video, &v.audio] {
                expected += t.expected();
                lost += t.lost();
                let (e, got) = t.since_mark();
                w_expected += e;
                w_lost += e.saturating_sub(got);
            }
            delay.merge(&v.delay_steady);
            delay_all.merge(&v.delay_all);
        }
        let (a, b) = (&i.window_start, &i.end);
        let window = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-3);
        let connected = connects.len();
        let rx_mbps = b.rx_bytes.saturating_sub(a.rx_bytes) as f64 * 8.0 / window / 1e6;
        let rx_packets = b.rx_packets.saturating_sub(a.rx_packets);
        let cores =
            |f: Option<ProcSample>, t: Option<ProcSample>| Some(round2(i.units.cores(&f?, &t?)));
        let tool_us = match (a.tool, b.tool) {
            (Some(f), Some(t)) if rx_packets > 0 => Some(round2(
                i.units.cpu_seconds(&f, &t) * 1e6 / rx_packets as f64,
            )),
            _ => None,
        };
        let rss_end = b.server.map(|s| i.units.rss_bytes(&s));
        let rss_per_viewer = match (i.server_before, rss_end) {
            (Some(before), Some(end)) if connected > 0 => Some(round2(
                end.saturating_sub(i.units.rss_bytes(&before)) as f64 / 1024.0 / connected as f64,
            )),
            _ => None,
        };
        let host_cores = match (a.host, b.host) {
            (Some(f), Some(t)) => Some(
                t.busy.saturating_sub(f.busy) as f64 / i.units.ticks_per_second as f64 / window,
            ),
            _ => None,
        };
        let server_cores = cores(a.server, b.server);
        let tool_cores = cores(a.tool, b.tool);
        let other = host_cores.map(|h| {
            round2((h - server_cores.unwrap_or(0.0) - tool_cores.unwrap_or(0.0)).max(0.0))
        });
        let core_busy = a
            .cores
            .iter()
            .zip(&b.cores)
            .map(|(f, t)| {
                let total = t.total.saturating_sub(f.total);
                if total == 0 {
                    return 0.0;
                }
                (t.busy.saturating_sub(f.busy) as f64 / total as f64 * 1000.0).round() / 1000.0
            })
            .collect();
        let udp = |f: fn(&UdpCounters) -> u64| Some(f(&b.udp?).saturating_sub(f(&i.start.udp?)));
        Report {
            viewers_requested: i.viewers_requested,
            viewers_started: r.len(),
            viewers_connected: connected,
            viewers_joined: joins.len(),
            viewers_dropped: r.iter().filter(|v| v.dropped).count(),
            failures,
            join_ms_p50: percentile_sorted(&joins, 50.0).map(ms),
            join_ms_p95: percentile_sorted(&joins, 95.0).map(ms),
            join_ms_max: joins.last().copied().map(ms),
            connect_ms_p50: percentile_sorted(&connects, 50.0).map(ms),
            connect_ms_p95: percentile_sorted(&connects, 95.0).map(ms),
            packets_expected: expected,
            packets_lost: lost,
            loss_pct: pct(lost, expected),
            loss_pct_window: pct(w_lost, w_expected),
            delay_ms_p50: us_to_ms(delay.percentile(50.0)),
            delay_ms_p95: us_to_ms(delay.percentile(95.0)),
            delay_ms_p99: us_to_ms(delay.percentile(99.0)),
            delay_ms_max: us_to_ms(delay.max()),
            delay_all_ms_p95: us_to_ms(delay_all.percentile(95.0)),
            delay_all_ms_p99: us_to_ms(delay_all.percentile(99.0)),
            delay_samples: delay.count(),
            window: if i.steady { "steady" } else { "whole run" },
            window_s: round2(window),
            rx_mbps: round2(rx_mbps),
            rx_mbps_per_viewer: round2(rx_mbps / connected.max(1) as f64),
            rx_packets_per_s: (rx_packets as f64 / window).round(),
            clip_kbps: i.clip_kbps.map(|k| k.round()),
            publisher: i.publisher,
            server_cpu_cores: server_cores,
            server_rss_mib: rss_end.map(|b| round2(b as f64 / (1024.0 * 1024.0))),
            server_rss_kib_per_viewer: rss_per_viewer,
            tool_cpu_cores: tool_cores,
            tool_us_per_packet: tool_us,
            other_cpu_cores: other,
            core_busy,
            udp_rcvbuf_errors: udp(|c| c.rcvbuf_errors),
            udp_sndbuf_errors: udp(|c| c.sndbuf_errors),
            srtp_read_errors: r.iter().map(|v| v.read_errors).sum(),
            unknown_payload_packets: r.iter().map(|v| v.unknown).sum(),
            verify_every: i.verify_every,
            unverified_packets: r.iter().map(|v| v.unverified).sum(),
        }
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        fn opt(v: Option<f64>) -> String {
            v.map_or("-".to_owned(), |v| format!("{v}"))
        }
        fn optu(v: Option<u64>) -> String {
            v.map_or("-".to_owned(), |v| v.to_string())
        }
        let mut rows: Vec<(&str, String)> = vec![
            (
                "viewers connected",
                format!(
                    "{} of {} started ({} requested); {} joined, {} dropped",
                    self.viewers_connected,
                    self.viewers_started,
                    self.viewers_requested,
                    self.viewers_joined,
                    self.viewers_dropped
                ),
            ),
            (
                "join ms p50/p95/max",
                format!(
                    "{} / {} / {}",
                    opt(self.join_ms_p50),
                    opt(self.join_ms_p95),
                    opt(self.join_ms_max)
                ),
            ),
            (
                "connect ms p50/p95",
                format!(
                    "{} / {}",
                    opt(self.connect_ms_p50),
                    opt(self.connect_ms_p95)
                ),
            ),
            (
                "loss % run / window",
                format!(
                    "{} / {} ({} of {} packets lost)",
                    self.loss_pct, self.loss_pct_window, self.packets_lost, self.packets_expected
                ),
            ),
            (
                "delay ms p50/p95/p99/max",
                format!(
                    "{} / {} / {} / {} ({} samples; whole run p95/p99 {} / {})",
                    opt(self.delay_ms_p50),
                    opt(self.delay_ms_p95),
                    opt(self.delay_ms_p99),
                    opt(self.delay_ms_max),
                    self.delay_samples,
                    opt(self.delay_all_ms_p95),
                    opt(self.delay_all_ms_p99)
                ),
            ),
            (
                "received",
                format!(
                    "{} Mbps ({} per viewer), {} packets/s",
                    self.rx_mbps, self.rx_mbps_per_viewer, self.rx_packets_per_s
                ),
            ),
            ("window", format!("{}, {} s", self.window, self.window_s)),
            (
                "server CPU cores / RSS MiB",
                format!(
                    "{} / {} ({} KiB per viewer)",
                    opt(self.server_cpu_cores),
                    opt(self.server_rss_mib),
                    opt(self.server_rss_kib_per_viewer)
                ),
            ),
            (
                "tool CPU cores",
                format!(
                    "{} ({} µs per received packet)",
                    opt(self.tool_cpu_cores),
                    opt(self.tool_us_per_packet)
                ),
            ),
            (
                "other CPU on the host",
                format!("{} cores", opt(self.other_cpu_cores)),
            ),
            (
                "busy per core %",
                self.core_busy
                    .iter()
                    .map(|b| format!("{:.0}", b * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / "),
            ),
            (
                "UDP buffer drops rcv/snd",
                format!(
                    "{} / {} (host-wide)",
                    optu(self.udp_rcvbuf_errors),
                    optu(self.udp_sndbuf_errors)
                ),
            ),
            (
                "rejected datagrams",
                format!(
                    "{} (SRTP/DTLS errors), {} unknown payload type",
                    self.srtp_read_errors, self.unknown_payload_packets
                ),
            ),
            (
                "SRTP verified",
                if self.verify_every <= 1 {
                    "every packet".to_owned()
                } else {
                    format!(
                        "1 in {} after join ({} packets counted from the clear header only)",
                        self.verify_every, self.unverified_packets
                    )
                },
            ),
        ];
        if let Some(p) = &self.publisher {
            rows.push((
                "published",
                format!(
                    "{} video + {} audio packets in {:.1} s, clip {} kbps, {} keyframe requests",
                    p.video_packets,
                    p.audio_packets,
                    p.seconds,
                    opt(self.clip_kbps),
                    p.keyframe_requests
                ),
            ));
        }
        for (reason, count) in &self.failures {
            rows.push(("failure", format!("{count} × {reason}")));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}
