//! Join/leave churn against a real edge (`waveguide-load churn`): viewers join (POST, ICE,
//! DTLS, first complete keyframe) and leave (DELETE) a few at a time while a publisher
//! streams; after a warm-up and at the end, the edge's resident memory and open file
//! descriptors must be back where they were. CI-sized: a few hundred cycles.

use std::process::Command;
use std::time::Duration;
use waveguide_tests::edge::demo_config;
use waveguide_tests::{EdgeProcess, JsonChild};

const CYCLES: u64 = 300;
const WARMUP: u64 = 50;

#[test]
fn join_leave_cycles_leave_rss_and_fds_where_they_were() {
    // No POST rate limit: the cycles come from one address faster than the default allows.
    let edge = EdgeProcess::start(&format!(
        "{}\n[limits]\nposts_per_minute = 0\n",
        demo_config()
    ));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waveguide-load"));
    cmd.arg("churn")
        .args([
            "--whip",
            &edge.url("/whip/demo"),
            "--whip-token",
            "demo-key",
        ])
        .args(["--whep", &edge.url("/whep/demo")])
        .args(["--server-pid", &edge.pid().to_string()])
        .args(["--cycles", &CYCLES.to_string()])
        .args(["--warmup", &WARMUP.to_string()])
        .args(["--concurrency", "4", "--rate", "30", "--json"]);
    let mut tool = JsonChild::spawn(cmd, "waveguide-load-churn", false);
    // 350 cycles at 30/s take ~12 s; the first run on a machine also makes the clip.
    let (status, report) = tool.finish(Duration::from_secs(180));
    let report = report.unwrap_or_else(|| {
        panic!(
            "waveguide-load churn printed no report ({status})\n{}",
            tool.log_tail(40)
        )
    });
    eprintln!("{report:#}");
    assert!(status.success(), "waveguide-load exited with {status}");
    assert_eq!(report["warmup_joined"], WARMUP, "{report:#}");
    assert_eq!(report["joined"], CYCLES, "every cycle joins\n{report:#}");
    assert_eq!(
        report["deleted"], CYCLES,
        "every session is deleted\n{report:#}"
    );
    let rss = report["rss_growth_pct"].as_f64().expect("rss_growth_pct");
    assert!(
        rss <= 5.0,
        "RSS grew {rss} % over {CYCLES} cycles\n{report:#}"
    );
    let start = report["start"]["fds"].as_i64().expect("start fds");
    let end = report["end"]["fds"].as_i64().expect("end fds");
    assert!(
        end <= start + (start / 20).max(5),
        "open fds {start} → {end} over {CYCLES} cycles\n{report:#}"
    );
}
