//! What one client, and all clients together, may ask of an edge: a per-IP rate on WHIP/WHEP
//! POSTs (`429` with `Retry-After`, another address unaffected) and the node's session
//! ceilings (`503` that says which).

use std::net::IpAddr;
use std::time::Duration;
use waveguide_tests::EdgeProcess;
use waveguide_tests::offer::{OfferSpec, make_offer};

fn client_from(ip: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(IpAddr::from(ip))
        .build()
        .expect("client")
}

#[test]
fn posts_past_the_per_ip_rate_get_429_and_other_addresses_do_not() {
    let edge = EdgeProcess::start(
        "[limits]\nposts_per_minute = 6\nposts_burst = 3\n[service]\nkind = \"open\"\n",
    );
    let one = client_from([127, 0, 0, 1]);
    let post = |client: &reqwest::blocking::Client| {
        client
            .post(edge.url("/whep/nothing-here"))
            .header("Content-Type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .expect("POST")
    };
    for _ in 0..3 {
        assert_ne!(post(&one).status(), 429, "within the burst");
    }
    let refused = post(&one);
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap_or_default()
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // Other requests from the same address are not limited: only offers cost.
    let health = one.get(edge.url("/healthz")).send().expect("GET /healthz");
    assert_eq!(health.status(), 200);
    let two = client_from([127, 0, 0, 2]);
    assert_ne!(
        post(&two).status(),
        429,
        "another address has its own bucket"
    );
}

#[test]
fn viewers_past_the_node_ceiling_get_503_naming_it() {
    let edge = EdgeProcess::start("[node]\nmax_viewers = 1\n[service]\nkind = \"open\"\n");
    let client = client_from([127, 0, 0, 1]);
    let (_publisher, offer) = make_offer(&OfferSpec::publisher());
    let published = client
        .post(edge.url("/whip/demo"))
        .header("Content-Type", "application/sdp")
        .body(offer)
        .send()
        .expect("WHIP");
    assert_eq!(published.status(), 201);
    let watch = || {
        let (_pc, offer) = make_offer(&OfferSpec::viewer());
        client
            .post(edge.url("/whep/demo"))
            .header("Content-Type", "application/sdp")
            .body(offer)
            .send()
            .expect("WHEP")
    };
    assert_eq!(watch().status(), 201);
    let full = watch();
    assert_eq!(full.status(), 503);
    let body = full.text().unwrap_or_default();
    assert!(body.contains("viewer limit of 1"), "{body}");
}
