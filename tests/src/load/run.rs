//! One load run, start to end: clip, publisher, the viewer ramp, the samples that bound the
//! measuring window, and the report. Every wait here has a deadline.

use super::clip::{Clip, ensure_clip};
use super::config::LoadConfig;
use super::error::LoadError;
use super::procstat::{Units, core_cpus, host_cpu, sample, udp_counters};
use super::publisher::{self, PublisherHandle, PublisherPlan};
use super::report::{Inputs, Report, Sample};
use super::schedule::{ramp_length, viewer_offset};
use super::sendlog::SendLog;
use super::signal;
use super::viewer::{self, Totals, ViewerPlan, ViewerResult};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the publisher may take to connect and send its first frame.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between the first published frame and the first viewer, so the server has a
/// keyframe cached for it.
const PUBLISH_SETTLE: Duration = Duration::from_millis(300);
/// After the last viewer starts, joins settle for this long before the window opens.
const JOIN_SETTLE: Duration = Duration::from_secs(1);
/// The steady window is used only if at least this long; else the whole run is the window.
const MIN_WINDOW: Duration = Duration::from_secs(2);
/// Beyond the run's duration, the time viewers may take to POST, stop and DELETE.
const WIND_DOWN: Duration = Duration::from_secs(30);

/// Logs a progress line on stderr (stdout carries only the result).
pub(crate) fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("waveguide-load: {what}");
}

fn take_sample(config: &LoadConfig, totals: &Totals) -> Sample {
    Sample {
        at: Instant::now(),
        tool: sample(None),
        server: config.server_pid.and_then(|pid| sample(Some(pid))),
        rx_bytes: totals.bytes.load(Ordering::Relaxed),
        rx_packets: totals.packets.load(Ordering::Relaxed),
        udp: udp_counters(),
        host: host_cpu(),
        cores: core_cpus(),
    }
}

pub(crate) fn start_publisher(
    config: &LoadConfig,
    log: &Arc<SendLog>,
) -> Result<Option<(PublisherHandle, f64)>, LoadError> {
    let Some(url) = &config.whip else {
        return Ok(None);
    };
    let path = match &config.clip {
        Some(path) => path.clone(),
        None => {
            progress(format_args!(
                "preparing clip in {}",
                config.cache_dir.display()
            ));
            ensure_clip(&config.video, &config.cache_dir)?
        }
    };
    let clip = Arc::new(Clip::load(&path)?);
    let clip_kbps = clip.bitrate_bps(config.video.fps) / 1e3;
    progress(format_args!(
        "clip {}: {} frames, {clip_kbps:.0} kbps, {:.0} packets/s",
        path.display(),
        clip.frames.len(),
        clip.packet_rate(config.video.fps)
    ));
    let handle = publisher::spawn(PublisherPlan {
        url: url.clone(),
        token: config.whip_token.clone(),
        clip,
        fps: config.video.fps,
        audio_kbps: config.audio_kbps,
        srtp: config.srtp,
        socket_buffer: config.socket_buffer,
        log: Arc::clone(log),
        hard_stop: Instant::now() + PUBLISH_TIMEOUT + config.duration + WIND_DOWN,
        pacing_bps: config
            .video
            .pacing
            .map(|factor| factor * f64::from(config.video.bitrate_kbps) * 1e3),
    })?;
    match handle.ready.recv_timeout(PUBLISH_TIMEOUT) {
        Ok(Ok(())) => Ok(Some((handle, clip_kbps))),
        Ok(Err(_)) => match handle.stop() {
            // The thread ended with the error it reported; joining returns it, typed.
            Err(e) => Err(e),
            Ok(_) => Err(LoadError::Publisher("stopped before publishing")),
        },
        Err(_) => {
            let _ = handle.stop();
            Err(LoadError::Publisher("not publishing within 15 s"))
        }
    }
}

/// Runs the load described by `config` and returns its report.
pub fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let units = Units::of_host();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .thread_name("viewers")
        .enable_all()
        .build()?;
    let log = Arc::new(SendLog::new(Instant::now()));
    let server_before = config.server_pid.and_then(|pid| sample(Some(pid)));
    let publisher = start_publisher(config, &log)?;
    if publisher.is_some() {
        std::thread::sleep(PUBLISH_SETTLE);
    }

    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let stop = start + config.duration;
    let steady_from = start + ramp_length(config.viewers, config.ramp) + JOIN_SETTLE;
    let steady = steady_from + MIN_WINDOW <= stop;
    let window_from = if steady { steady_from } else { start };
    progress(format_args!(
        "{} viewers at {}/s for {:?}; measuring window from +{:.1} s",
        config.viewers,
        config.ramp,
        config.duration,
        window_from.duration_since(start).as_secs_f64()
    ));

    let outcome = runtime.block_on(async {
        let client = signal::client()?;
        let first = take_sample(config, &totals);
        let sampler = {
            let (config, totals) = (config.clone(), Arc::clone(&totals));
            tokio::spawn(async move {
                tokio::time::sleep_until(window_from.into()).await;
                let a = take_sample(&config, &totals);
                tokio::time::sleep_until(stop.into()).await;
                (a, take_sample(&config, &totals))
            })
        };
        let mut handles = Vec::with_capacity(config.viewers);
        for index in 0..config.viewers {
            let at = start + viewer_offset(index, config.ramp);
            if at >= stop {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            let plan = ViewerPlan {
                index,
                url: config.whep.clone(),
                token: config.whep_token.clone(),
                srtp: config.srtp,
                socket_buffer: config.socket_buffer,
                steady_from: window_from,
                verify_every: config.verify_every,
                leave_when_joined: false,
                stop,
                log: publisher.as_ref().map(|_| Arc::clone(&log)),
                totals: Arc::clone(&totals),
            };
            handles.push(tokio::spawn(viewer::run(plan, client.clone())));
        }
        let mut results = Vec::with_capacity(handles.len());
        let give_up = stop + WIND_DOWN;
        for (index, mut handle) in handles.into_iter().enumerate() {
            let result = match tokio::time::timeout_at(give_up.into(), &mut handle).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => ViewerResult::failed(index, format!("viewer task failed: {e}")),
                Err(_) => {
                    handle.abort();
                    ViewerResult::failed(index, "viewer still running after the run".into())
                }
            };
            results.push(result);
        }
        let (window_start, end) = sampler
            .await
            .map_err(|_| LoadError::Publisher("sampler task failed"))?;
        Ok::<_, LoadError>((first, window_start, end, results))
    });
    // Stop the publisher whatever happened to the viewers.
    let (published, clip_kbps) = match publisher {
        Some((handle, kbps)) => (Some(handle.stop()?), Some(kbps)),
        None => (None, None),
    };
    let (first, window_start, end, results) = outcome?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(Report::build(Inputs {
        viewers_requested: config.viewers,
        results: &results,
        publisher: published,
        clip_kbps,
        units,
        server_before,
        start: first,
        window_start,
        end,
        steady,
        verify_every: config.verify_every,
    }))
}
