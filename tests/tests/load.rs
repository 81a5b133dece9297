//! The load tool (`waveguide-load`) against a real edge, small: every viewer connects and
//! joins, and no packet is lost once they all have (the steady window). This checks the tool
//! and the edge's fan-out for correctness, not speed (CI has 2 cores, and other suites run
//! too): on loopback at 20 viewers nothing may be dropped, by the edge or by a socket buffer.

use std::process::Command;
use std::time::Duration;
use waveguide_tests::{EdgeProcess, JsonChild};

const VIEWERS: u64 = 20;

fn load_tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waveguide-load"))
}

#[test]
fn twenty_viewers_connect_join_and_lose_nothing() {
    let edge = EdgeProcess::start_demo();
    let mut cmd = load_tool();
    cmd.args([
        "--whip",
        &edge.url("/whip/demo"),
        "--whip-token",
        "demo-key",
    ])
    .args(["--whep", &edge.url("/whep/demo")])
    .args([
        "--viewers",
        &VIEWERS.to_string(),
        "--duration",
        "10s",
        "--ramp",
        "20",
    ])
    .args([
        "--threads",
        "1",
        "--server-pid",
        &edge.pid().to_string(),
        "--json",
    ]);
    let mut tool = JsonChild::spawn(cmd, "waveguide-load", false);
    // Generous: the first run on a machine makes the clip with ffmpeg (a few seconds).
    let (status, report) = tool.finish(Duration::from_secs(120));
    let report = report.unwrap_or_else(|| {
        panic!(
            "waveguide-load printed no report ({status})\n{}",
            tool.log_tail(40)
        )
    });
    eprintln!("{report:#}");
    assert!(status.success(), "waveguide-load exited with {status}");
    assert_eq!(report["viewers_connected"], VIEWERS, "{report:#}");
    assert_eq!(report["viewers_joined"], VIEWERS, "{report:#}");
    assert_eq!(report["window"], "steady", "{report:#}");
    assert_eq!(
        report["loss_pct_window"].as_f64(),
        Some(0.0),
        "packets lost in the steady window\n{report:#}"
    );
    assert!(
        report["packets_expected"].as_u64() > Some(VIEWERS * 2_000),
        "too few packets for 10 s at 2.5 Mbps\n{report:#}"
    );
    assert!(
        report["delay_samples"].as_u64() > Some(0),
        "no delay measured\n{report:#}"
    );
    assert_eq!(report["publisher"]["write_errors"], 0, "{report:#}");
    assert!(report["server_cpu_cores"].as_f64().is_some(), "{report:#}");
}

#[test]
fn refuses_targets_off_loopback_before_sending_anything() {
    let out = load_tool()
        .args([
            "--whep",
            "http://192.0.2.1:8080/whep/demo",
            "--viewers",
            "1",
        ])
        .output()
        .expect("run waveguide-load");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback target"), "{stderr}");
}
