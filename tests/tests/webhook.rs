//! The webhook Service against a small HTTP server in the test: allow (the webhook names the
//! stream), deny (with a reason), down (nothing listens) and slow (answers after the edge's
//! timeout). A refused or failed check never leaves a publisher hanging.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waveguide_tests::edge::http_client;
use waveguide_tests::offer::{OfferSpec, make_offer};
use waveguide_tests::{EdgeProcess, ports};

/// A one-route HTTP server: answers each POST by the key in its JSON body.
struct Webhook {
    port: u16,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn start_webhook() -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
    let port = listener.local_addr().expect("addr").port();
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (c, b) = (Arc::clone(&calls), Arc::clone(&bodies));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (c, b) = (Arc::clone(&c), Arc::clone(&b));
            std::thread::spawn(move || serve_one(stream, &c, &b));
        }
    });
    Webhook {
        port,
        calls,
        bodies,
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    calls: &AtomicUsize,
    bodies: &Mutex<Vec<serde_json::Value>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    bodies.lock().expect("lock").push(request.clone());
    let answer = match request["key"].as_str() {
        Some("good-key") => r#"{"allow": true, "stream": "hooked"}"#.to_owned(),
        Some("slow-key") => {
            std::thread::sleep(Duration::from_secs(3));
            r#"{"allow": true, "stream": "slow"}"#.to_owned()
        }
        _ => r#"{"allow": false, "reason": "unknown key"}"#.to_owned(),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn edge_with_webhook(url: &str) -> EdgeProcess {
    EdgeProcess::start(&format!(
        "[service]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_ms = 1000\ncache_ttl_secs = 30\n"
    ))
}

fn publish(edge: &EdgeProcess, key: &str) -> (u16, String, Duration) {
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let started = Instant::now();
    let resp = http_client()
        .post(edge.url("/whip"))
        .header("content-type", "application/sdp")
        .bearer_auth(key)
        .body(offer)
        .send()
        .expect("POST /whip");
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default(), started.elapsed())
}

#[test]
fn webhook_allows_denies_and_caches() {
    let hook = start_webhook();
    let edge = edge_with_webhook(&format!("http://127.0.0.1:{}/auth", hook.port));

    let (status, body, _) = publish(&edge, "good-key");
    assert_eq!(status, 201, "allowed publish: {body}");
    assert!(
        edge.stream_info("hooked").is_some(),
        "the webhook named the stream"
    );
    let asked = hook.bodies.lock().expect("lock")[0].clone();
    assert_eq!(asked["protocol"], "whip", "{asked}");
    assert_eq!(asked["key"], "good-key", "{asked}");
    assert!(asked["remote_addr"].as_str().is_some(), "{asked}");

    let (status, body, _) = publish(&edge, "bad-key");
    assert_eq!(status, 403, "denied publish: {body}");
    assert!(
        body.contains("unknown key"),
        "the webhook's reason reaches the client: {body}"
    );

    // Both answers are cached: asking again does not call the webhook.
    let before = hook.calls.load(Ordering::SeqCst);
    let (status, _, _) = publish(&edge, "bad-key");
    assert_eq!(status, 403);
    assert_eq!(hook.calls.load(Ordering::SeqCst), before, "deny was cached");
}

#[test]
fn webhook_down_or_slow_refuses_within_the_timeout() {
    let closed = ports::free_port();
    let edge = edge_with_webhook(&format!("http://127.0.0.1:{closed}/auth"));
    let (status, body, took) = publish(&edge, "good-key");
    assert_eq!(status, 503, "webhook down: {body}");
    assert!(took < Duration::from_secs(3), "refused in {took:?}");
    drop(edge);

    let hook = start_webhook();
    let edge = edge_with_webhook(&format!("http://127.0.0.1:{}/auth", hook.port));
    let (status, body, took) = publish(&edge, "slow-key");
    assert_eq!(status, 503, "slow webhook: {body}");
    assert!(
        took < Duration::from_millis(2500),
        "refused in {took:?} (timeout 1 s)"
    );
    let mut edge = edge;
    edge.assert_alive();
}
