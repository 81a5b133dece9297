//! CPU time and memory of a process from `/proc/PID/stat`, and the host's UDP drop counters
//! from `/proc/net/snmp`: how the tool reports the server's cost, its own, and whether
//! datagrams died in a socket buffer rather than in the server.

use std::process::Command;
use std::time::Instant;

/// CPU time (user + system, every thread) and resident memory of one process at an instant.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    pub cpu_ticks: u64,
    pub rss_pages: u64,
}

/// `utime + stime` (clock ticks) and `rss` (pages) from the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fields
    // after the last ')' start at field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(24)?))
}

/// Samples `/proc/<pid>/stat` (`None`: this process).
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let (cpu_ticks, rss_pages) = parse_stat(&text)?;
    Some(ProcSample {
        at: Instant::now(),
        cpu_ticks,
        rss_pages,
    })
}

fn getconf(name: &str, fallback: u64) -> u64 {
    Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(fallback)
}

/// Clock ticks per second and page size of this host (`getconf`; the crate has no libc).
#[derive(Debug, Clone, Copy)]
pub struct Units {
    pub ticks_per_second: u64,
    pub page_bytes: u64,
}

impl Units {
    pub fn of_host() -> Self {
        Self {
            ticks_per_second: getconf("CLK_TCK", 100).max(1),
            page_bytes: getconf("PAGESIZE", 4096),
        }
    }

    /// CPU used between two samples, in cores (1.0 = one core busy all the time).
    pub fn cores(&self, from: &ProcSample, to: &ProcSample) -> f64 {
        let wall = to.at.saturating_duration_since(from.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let cpu = to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / self.ticks_per_second as f64;
        cpu / wall
    }

    /// CPU seconds between two samples.
    pub fn cpu_seconds(&self, from: &ProcSample, to: &ProcSample) -> f64 {
        to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / self.ticks_per_second as f64
    }

    pub fn rss_bytes(&self, s: &ProcSample) -> u64 {
        s.rss_pages * self.page_bytes
    }
}

/// Busy and total CPU time of the whole host, in clock ticks (the `cpu` line of
/// `/proc/stat`; idle and iowait are not busy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCpu {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_host_cpu(text: &str) -> Option<HostCpu> {
    parse_cpu_line(text.lines().find(|l| l.starts_with("cpu "))?)
}

/// Per-core counters: the `cpuN` lines of `/proc/stat`, indexed by N (a core missing from
/// the file, e.g. offline, is all zero).
pub fn parse_core_cpus(text: &str) -> Vec<HostCpu> {
    let mut cores = Vec::new();
    for line in text.lines() {
        // `cpuN ...`; not the `cpu  ...` total line.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let Some(n) = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(cpu) = parse_cpu_line(line)
            && n < 4096
        {
            if cores.len() <= n {
                cores.resize(n + 1, HostCpu::default());
            }
            cores[n] = cpu;
        }
    }
    cores
}

pub fn core_cpus() -> Vec<HostCpu> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_core_cpus(&t))
        .unwrap_or_default()
}

fn parse_cpu_line(line: &str) -> Option<HostCpu> {
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(HostCpu {
        busy: total - idle,
        total,
    })
}

pub fn host_cpu() -> Option<HostCpu> {
    parse_host_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Host-wide UDP counters: datagrams dropped because a receive buffer was full, and sends
/// that failed for a full send buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

/// The `Udp:` counters of `/proc/net/snmp` (a header line, then a value line).
pub fn parse_snmp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some(UdpCounters {
        rcvbuf_errors: get("RcvbufErrors")?,
        sndbuf_errors: get("SndbufErrors")?,
    })
}

pub fn udp_counters() -> Option<UdpCounters> {
    parse_snmp(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Resident pages from the text of `/proc/PID/statm` (its second field).
pub fn parse_statm(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a process in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32, units: &Units) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    Some(parse_statm(&text)? * units.page_bytes)
}

/// Open file descriptors of a process: the entries of `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 9 0 100 123456789 3000 18446744073709551615";
        assert_eq!(parse_stat(text), Some((325, 3000)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_statm_and_reads_fds() {
        assert_eq!(parse_statm("5000 1234 300 10 0 900 0\n"), Some(1234));
        assert_eq!(parse_statm("5000"), None);
        let pid = std::process::id();
        assert!(rss_bytes(pid, &Units::of_host()).is_some_and(|b| b > 0));
        assert!(open_fds(pid).is_some_and(|n| n >= 3));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).expect("/proc/self/stat");
        assert!(s.rss_pages > 0);
    }

    #[test]
    fn cores_from_two_samples() {
        let units = Units {
            ticks_per_second: 100,
            page_bytes: 4096,
        };
        let t0 = Instant::now();
        let a = ProcSample {
            at: t0,
            cpu_ticks: 1000,
            rss_pages: 10,
        };
        let b = ProcSample {
            at: t0 + Duration::from_secs(2),
            cpu_ticks: 1300,
            rss_pages: 20,
        };
        assert!((units.cores(&a, &b) - 1.5).abs() < 1e-9);
        assert!((units.cpu_seconds(&a, &b) - 3.0).abs() < 1e-9);
        assert_eq!(units.rss_bytes(&b), 81_920);
    }

    #[test]
    fn parses_host_cpu_line() {
        let text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(
            parse_host_cpu(text),
            Some(HostCpu {
                busy: 160,
                total: 980
            })
        );
        assert_eq!(parse_host_cpu("intr 1 2 3"), None);
        let cores = parse_core_cpus(text);
        assert_eq!(
            cores,
            vec![HostCpu {
                busy: 79,
                total: 489
            }]
        );
    }

    #[test]
    fn parses_snmp_udp_lines() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 0 3 20 3 7\n\
                    UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        assert_eq!(
            parse_snmp(text),
            Some(UdpCounters {
                rcvbuf_errors: 3,
                sndbuf_errors: 7
            })
        );
    }
}
