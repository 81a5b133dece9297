//! Join/leave churn (`waveguide-load churn`): viewers join a stream (WHEP POST, ICE, DTLS,
//! first complete keyframe) and leave (DELETE) a few at a time, and the server's resident
//! memory and open file descriptors are compared between the end of a warm-up and the end of
//! the run. A server that leaks per session (a socket, a buffer, a map entry) grows here.

use super::config::LoadConfig;
use super::error::LoadError;
use super::procstat::{Units, open_fds, rss_bytes};
use super::run::{progress, start_publisher};
use super::sendlog::SendLog;
use super::signal;
use super::stats::percentile_sorted;
use super::viewer::{self, Totals, ViewerPlan, ViewerResult};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bounds of a churn run.
pub const MAX_CYCLES: usize = 100_000;
pub const MAX_CONCURRENCY: usize = 64;
/// Beyond the paced length of the run, the time the last cycles may take.
const WIND_DOWN: Duration = Duration::from_secs(30);
/// Pause before each memory sample, so the server finishes tearing sessions down.
const SETTLE: Duration = Duration::from_secs(2);
/// Samples of RSS taken along the measured cycles (for the trend, not the verdict).
const TRACE_POINTS: usize = 10;

/// A churn run: the stream (publisher, endpoints, media) comes from `load`; `load.viewers`
/// and `load.duration` are not used.
#[derive(Debug, Clone)]
pub struct ChurnPlan {
    pub load: LoadConfig,
    /// Measured join/leave cycles.
    pub cycles: usize,
    /// Cycles before the first sample (allocator pools, caches, lazily built state).
    pub warmup: usize,
    /// Viewers in flight at once.
    pub concurrency: usize,
    /// Cycles started per second at most.
    pub rate: f64,
    /// How long one viewer may take to get its first complete keyframe.
    pub join_timeout: Duration,
}

impl ChurnPlan {
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |what: String| Err(LoadError::Config(what));
        if self.cycles == 0 || self.cycles + self.warmup > MAX_CYCLES {
            return bad(format!(
                "--cycles {} + --warmup {} must be in 1..={MAX_CYCLES}",
                self.cycles, self.warmup
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return bad(format!(
                "--concurrency {} must be 1..={MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        if !(self.rate > 0.0 && self.rate <= 1_000.0) {
            return bad(format!("--rate {} must be in (0, 1000]", self.rate));
        }
        if self.join_timeout.is_zero() || self.join_timeout > Duration::from_secs(60) {
            return bad(format!(
                "--join-timeout {:?} must be in (0, 60 s]",
                self.join_timeout
            ));
        }
        let mut load = self.load.clone();
        load.viewers = 0;
        load.validate()
    }

    /// The longest the run may take: the paced cycles, the warm-up settle and the wind-down.
    pub fn bound(&self) -> Duration {
        let paced = (self.cycles + self.warmup) as f64 / self.rate;
        Duration::from_secs_f64(paced) + 3 * SETTLE + WIND_DOWN + self.join_timeout
    }
}

/// Memory and descriptors of the server at one point.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Footprint {
    pub rss_kib: u64,
    pub fds: usize,
}

fn footprint(pid: u32, units: &Units) -> Option<Footprint> {
    Some(Footprint {
        rss_kib: rss_bytes(pid, units)? / 1024,
        fds: open_fds(pid)?,
    })
}

/// What a churn run found.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    pub cycles: usize,
    pub warmup: usize,
    /// Measured cycles whose viewer got a complete keyframe.
    pub joined: usize,
    pub warmup_joined: usize,
    /// Measured cycles whose DELETE was answered 2xx.
    pub deleted: usize,
    pub failures: BTreeMap<String, usize>,
    pub join_ms_p50: Option<f64>,
    pub join_ms_p95: Option<f64>,
    pub join_ms_max: Option<f64>,
    pub seconds: f64,
    pub cycles_per_s: f64,
    /// Server footprint after the warm-up and after the last cycle.
    pub start: Option<Footprint>,
    pub end: Option<Footprint>,
    pub rss_growth_pct: Option<f64>,
    pub fds_growth: Option<i64>,
    pub fds_growth_pct: Option<f64>,
    /// RSS along the measured cycles, KiB.
    pub rss_trace_kib: Vec<u64>,
}

impl ChurnReport {
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v}"));
        let fp = |f: Option<Footprint>| {
            f.map_or("-".to_owned(), |f| {
                format!("{} KiB RSS, {} fds", f.rss_kib, f.fds)
            })
        };
        let mut out = format!(
            "cycles           {} joined of {} ({} deleted); warm-up {} of {}\n\
             join ms          p50 {} / p95 {} / max {}\n\
             rate             {} cycles/s over {} s\n\
             server start     {}\n\
             server end       {}\n\
             growth           RSS {} %, fds {} ({} %)\n\
             RSS trace KiB    {:?}\n",
            self.joined,
            self.cycles,
            self.deleted,
            self.warmup_joined,
            self.warmup,
            opt(self.join_ms_p50),
            opt(self.join_ms_p95),
            opt(self.join_ms_max),
            self.cycles_per_s,
            self.seconds,
            fp(self.start),
            fp(self.end),
            opt(self.rss_growth_pct),
            self.fds_growth.map_or("-".to_owned(), |v| format!("{v:+}")),
            opt(self.fds_growth_pct),
            self.rss_trace_kib,
        );
        for (why, n) in &self.failures {
            out.push_str(&format!("failure          {n} × {why}\n"));
        }
        out
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One batch of cycles, paced at `rate` with at most `concurrency` in flight; the results in
/// order. `trace` is called with the number of cycles done, between cycles.
async fn cycles(
    plan: &ChurnPlan,
    count: usize,
    client: &reqwest::Client,
    log: Option<&Arc<SendLog>>,
    mut trace: impl FnMut(usize),
) -> Vec<ViewerResult> {
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.concurrency));
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let give_up = start + Duration::from_secs_f64(count as f64 / plan.rate) + WIND_DOWN;
    let mut handles = Vec::with_capacity(count);
    let every = (count / TRACE_POINTS).max(1);
    for index in 0..count {
        if index > 0 && index % every == 0 {
            trace(index);
        }
        let at = start + Duration::from_secs_f64(index as f64 / plan.rate);
        tokio::time::sleep_until(at.into()).await;
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(give_up.into(), Arc::clone(&permits).acquire_owned()).await
        else {
            break;
        };
        let now = Instant::now();
        let stop = now + plan.join_timeout;
        let viewer = ViewerPlan {
            index,
            url: plan.load.whep.clone(),
            token: plan.load.whep_token.clone(),
            srtp: plan.load.srtp,
            socket_buffer: plan.load.socket_buffer,
            steady_from: stop,
            stop,
            verify_every: 1,
            leave_when_joined: true,
            log: log.map(Arc::clone),
            totals: Arc::clone(&totals),
        };
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let result = viewer::run(viewer, client).await;
            drop(permit);
            result
        }));
    }
    let mut results = Vec::with_capacity(count);
    for (index, mut handle) in handles.into_iter().enumerate() {
        results.push(
            match tokio::time::timeout_at(give_up.into(), &mut handle).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => ViewerResult::failed(index, format!("cycle task failed: {e}")),
                Err(_) => {
                    handle.abort();
                    ViewerResult::failed(index, "cycle still running at the end".into())
                }
            },
        );
    }
    while results.len() < count {
        results.push(ViewerResult::failed(results.len(), "not started".into()));
    }
    results
}

fn why(v: &ViewerResult) -> Option<String> {
    if let Some(e) = &v.error {
        Some(e.clone())
    } else if v.connected.is_none() {
        Some("never connected".into())
    } else if v.joined.is_none() {
        Some("no complete keyframe".into())
    } else {
        None
    }
}

/// Runs the churn and reports.
pub fn run(plan: &ChurnPlan) -> Result<ChurnReport, LoadError> {
    plan.validate()?;
    let units = Units::of_host();
    let pid = plan.load.server_pid;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.load.threads)
        .thread_name("churn")
        .enable_all()
        .build()?;
    let log = Arc::new(SendLog::new(Instant::now()));
    let mut load = plan.load.clone();
    load.duration = plan.bound();
    let publisher = start_publisher(&load, &log)?;
    let log = publisher.as_ref().map(|_| log);
    progress(format_args!(
        "churn: {} warm-up + {} cycles, {} at a time, at most {}/s",
        plan.warmup, plan.cycles, plan.concurrency, plan.rate
    ));
    let outcome = runtime.block_on(async {
        let client = signal::client()?;
        // Let the server cache a keyframe before the first viewer.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let warm = cycles(plan, plan.warmup, &client, log.as_ref(), |_| {}).await;
        tokio::time::sleep(SETTLE).await;
        let start = pid.and_then(|p| footprint(p, &units));
        let began = Instant::now();
        let mut trace = Vec::new();
        let measured = cycles(plan, plan.cycles, &client, log.as_ref(), |_| {
            if let Some(kib) = pid.and_then(|p| rss_bytes(p, &units)) {
                trace.push(kib / 1024);
            }
        })
        .await;
        let seconds = began.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let end = pid.and_then(|p| footprint(p, &units));
        Ok::<_, LoadError>((warm, measured, start, end, seconds, trace))
    });
    if let Some((handle, _)) = publisher {
        handle.stop()?;
    }
    let (warm, measured, start, end, seconds, mut trace) = outcome?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(end) = end {
        trace.push(end.rss_kib);
    }
    let mut failures = BTreeMap::new();
    for v in warm.iter().chain(&measured) {
        if let Some(why) = why(v) {
            *failures.entry(why).or_insert(0) += 1;
        }
    }
    let mut joins: Vec<Duration> = measured.iter().filter_map(|v| v.joined).collect();
    joins.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    let (rss_growth_pct, fds_growth, fds_growth_pct) = match (start, end) {
        (Some(s), Some(e)) => (
            Some(round2(
                (e.rss_kib as f64 - s.rss_kib as f64) * 100.0 / s.rss_kib.max(1) as f64,
            )),
            Some(e.fds as i64 - s.fds as i64),
            Some(round2(
                (e.fds as f64 - s.fds as f64) * 100.0 / s.fds.max(1) as f64,
            )),
        ),
        _ => (None, None, None),
    };
    Ok(ChurnReport {
        cycles: plan.cycles,
        warmup: plan.warmup,
        joined: joins.len(),
        warmup_joined: warm.iter().filter(|v| v.joined.is_some()).count(),
        deleted: measured
            .iter()
            .filter(|v| v.delete_status.is_some_and(|s| (200..300).contains(&s)))
            .count(),
        failures,
        join_ms_p50: percentile_sorted(&joins, 50.0).map(ms),
        join_ms_p95: percentile_sorted(&joins, 95.0).map(ms),
        join_ms_max: joins.last().copied().map(ms),
        seconds: round2(seconds),
        cycles_per_s: round2(plan.cycles as f64 / seconds.max(1e-3)),
        start,
        end,
        rss_growth_pct,
        fds_growth,
        fds_growth_pct,
        rss_trace_kib: trace,
    })
}
