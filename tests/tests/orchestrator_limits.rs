//! What one client may ask of the orchestrator (the real binary): a per-IP rate on the WHIP/WHEP
//! redirect POSTs, `429` with a `Retry-After` that is long enough, counted in
//! `waveguide_orchestrator_decisions_total`; another address, `X-Forwarded-For`, the REST API,
//! probes and CORS preflights are not affected.

use std::net::IpAddr;
use std::time::Duration;
use waveguide_tests::OrchestratorProcess;
use waveguide_tests::cluster::{OrchestratorAddr, orchestrator_config};

/// A client whose connections come from `ip` (any 127.x.y.z is this host's loopback).
fn client_from(ip: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(IpAddr::from(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[test]
fn redirect_posts_past_the_per_ip_rate_get_429_and_other_addresses_do_not() {
    let addr = OrchestratorAddr::new();
    let orchestrator = OrchestratorProcess::start(&format!(
        "{}[limits]\nposts_per_minute = 60\nposts_burst = 3\n",
        orchestrator_config(addr, None)
    ));
    let post = |client: &reqwest::blocking::Client, path: &str| {
        client
            .post(orchestrator.url(path))
            .header("Content-Type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    };
    let two = client_from([127, 0, 0, 2]);
    for i in 1..=3 {
        let status = post(&two, "/whep/x").status();
        // No edge holds `x`: the orchestrator's own answer is 404.
        assert_eq!(status, 404, "POST {i} is within the burst");
    }
    let refused = post(&two, "/whep/x");
    assert_eq!(refused.status(), 429, "the 4th rapid POST");
    let retry: u64 = refused
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap_or_default()
        .parse()
        .expect("Retry-After seconds");
    // 60 a minute: the next token is at most a second away (rounded up, never 0).
    assert_eq!(retry, 1, "Retry-After");
    println!(
        "4th POST from 127.0.0.2: {} Retry-After: {retry}",
        refused.status()
    );

    // The bucket is the TCP peer's: a forged X-Forwarded-For does not escape it.
    let forged = two
        .post(orchestrator.url("/whep/x"))
        .header("Content-Type", "application/sdp")
        .header("X-Forwarded-For", "10.9.9.9")
        .body("v=0\r\n")
        .send()
        .expect("POST with X-Forwarded-For");
    assert_eq!(forged.status(), 429, "X-Forwarded-For is not the client");
    // Every redirect route shares the address's bucket.
    assert_eq!(post(&two, "/whip/demo").status(), 429);

    // Only the redirect POSTs are limited.
    for path in ["/healthz", "/readyz", "/api/v1/streams", "/api/v1/nodes"] {
        let status = two.get(orchestrator.url(path)).send().expect(path).status();
        assert_eq!(status, 200, "GET {path} from a limited address");
    }
    let preflight = two
        .request(reqwest::Method::OPTIONS, orchestrator.url("/whep/x"))
        .header("Origin", "https://player.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .expect("OPTIONS");
    assert_eq!(
        preflight.status(),
        204,
        "CORS preflight from a limited address"
    );

    let three = client_from([127, 0, 0, 3]);
    let other = post(&three, "/whep/x").status();
    assert!(
        other == 404 || other == 307,
        "another address has its own bucket: {other}"
    );
    println!("POST from 127.0.0.3: {other}");

    // Waiting as told is enough: the rounded-up Retry-After covers the refill.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(
        post(&two, "/whep/x").status(),
        404,
        "after Retry-After the address may POST again"
    );

    let metrics = three
        .get(orchestrator.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    let count = |kind: &str| -> Option<u64> {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("waveguide_orchestrator_decisions_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("outcome=\"rate_limited\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        count("whep"),
        Some(2),
        "refused WHEP POSTs counted\n{metrics}"
    );
    assert_eq!(
        count("whip"),
        Some(1),
        "refused WHIP POSTs counted\n{metrics}"
    );
}
