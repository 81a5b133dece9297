//! Attacks on the HTTP faces of the release binaries (issue 15), all on loopback, every loop
//! bounded in count and time:
//! - an orchestrator without `[service] kind` (once an implicit `open`) refuses to start, and a
//!   keyed one hands no publish ticket to a publisher without the key (item 2);
//! - slowloris on an edge: connections that send a header byte every second are closed after
//!   the header-read timeout, the per-IP cap refuses the excess, and other clients are served
//!   meanwhile (item 9);
//! - an edge's relay lookups carry the cluster token and are not rate limited by the
//!   orchestrator, while an anonymous client from the same address is (item 10);
//! - a flood of unauthenticated reads (`GET /api/v1/*`, `/metrics`) and viewer redirects costs
//!   Redis at most a registry read a second, not one per request (item 11).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use waveguide_tests::cluster::{
    OrchestratorAddr, SERVICE, TOKEN, orchestrator_config, redirect, rtmp_publish, start_edge,
    wait_nodes, wait_stream_origin,
};
use waveguide_tests::edge::http_client;
use waveguide_tests::offer::{OfferSpec, make_offer};
use waveguide_tests::orchestrator::orchestrator_binary;
use waveguide_tests::{EdgeProcess, OrchestratorProcess, RedisProcess, exclusive};

/// POSTs a real WebRTC offer to `url`: the status and the `Location`.
fn post_offer(url: &str, spec: &OfferSpec, key: Option<&str>) -> (u16, String) {
    let (_pc, sdp) = make_offer(spec);
    let mut request = http_client()
        .post(url)
        .header("Content-Type", "application/sdp")
        .body(sdp);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let response = request.send().unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), location)
}

/// Item 2. With no `[service]` the orchestrator used to start `open` and sign a publish ticket
/// for any stream, which a keyed edge accepts before its own key check. Now it exits at start
/// naming the key. Against an orchestrator that still starts, the test shows the attack: a
/// keyed edge of its cluster publishes `victim` with the ticket it handed out.
#[test]
fn an_orchestrator_without_a_service_kind_refuses_to_start() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let dir = std::env::temp_dir().join(format!("wg-attack-orch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("no-service.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\n\
             [cluster]\ntoken = \"{TOKEN}\"\n",
            addr.http, addr.grpc
        ),
    )
    .expect("write config");
    let mut child = Command::new(orchestrator_binary())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the orchestrator");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        // Still running: it hands out publish tickets to anyone. Show what that costs.
        let edge = start_edge("edge-a", &["ingest", "edge"], addr);
        wait_nodes(&addr, &["edge-a"]);
        let (code, location) = redirect(&addr.url("/whip/victim"), None);
        let published = (code == 307 && location.contains("ticket="))
            .then(|| post_offer(&location, &OfferSpec::publisher(), None).0);
        drop(edge);
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the orchestrator started without [service] kind: POST /whip/victim without a key \
             got {code} {location}; the keyed edge answered the ticket with {published:?}"
        );
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "exit status {status}");
    assert!(
        stderr.contains("service.kind") && stderr.contains("required"),
        "the error names the key: {stderr}"
    );
    println!("no [service]: {status}, {}", stderr.trim());
}

/// Item 2. A keyed orchestrator and a keyed edge: no key, a wrong key or another stream's key
/// get no ticket; the right key does (the setup works).
#[test]
fn a_keyed_orchestrator_hands_no_ticket_without_the_key() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&orchestrator_config(addr, None));
    let edge = start_edge("edge-a", &["ingest", "edge"], addr);
    wait_nodes(&addr, &["edge-a"]);

    for (path, key) in [
        ("/whip/victim", None),
        ("/whip/victim", Some("demo-key")),
        ("/whip/demo", None),
        ("/whip/demo", Some("wrong-key")),
        ("/whip", None),
    ] {
        let (code, location) = redirect(&addr.url(path), key);
        assert!(
            code == 401 || code == 403,
            "POST {path} with key {key:?}: {code} {location}"
        );
        assert!(location.is_empty(), "no Location, no ticket: {location}");
    }
    let (code, location) = redirect(&addr.url("/whip/demo"), Some("demo-key"));
    assert_eq!(code, 307, "the right key is redirected");
    assert!(
        location.starts_with(&edge.url("/whip/demo?ticket=")),
        "{location}"
    );
    // The keyed edge itself refuses the unkeyed publisher too.
    let (code, _) = post_offer(&edge.url("/whip/victim"), &OfferSpec::publisher(), None);
    assert!(code == 401 || code == 403, "edge without a key: {code}");
}

/// A TCP connection to `to` from `from` (another loopback address than the normal client's).
fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(stream)
}

/// Whether the server has closed `stream` (EOF or reset), without waiting long.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => true,
        // An answer (a 408 or 503) before the close counts as closing.
        Ok(_) => closed_by_server(stream),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Item 9. Slowloris against the edge: 30 connections from 127.0.0.2, each sending one byte
/// of a request line every second. Past the per-IP cap (10 here) connections are closed at
/// once; the rest are closed once the header-read timeout (2 s) passes, long before their
/// headers would end. Meanwhile 127.0.0.1 is served: `GET /healthz` and a WHEP POST.
#[test]
fn slowloris_is_cut_off_and_capped_while_others_are_served() {
    let edge = EdgeProcess::start(&format!(
        "[http]\nheader_read_timeout_secs = 2\nmax_connections_per_ip = 10\n{SERVICE}"
    ));
    let target: SocketAddr = ([127, 0, 0, 1], edge.http_port()).into();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 0000000000000000\r\n\r\n";
    let started = Instant::now();
    let mut attackers: Vec<(TcpStream, Option<Duration>)> = (0..30)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 2], target)
                .unwrap_or_else(|e| panic!("attacker connection {i}: {e}"));
            let _ = s.write_all(&request[..1]);
            (s, None)
        })
        .collect();
    // One byte a second per connection, for at most 6 s (the request would need ~60 s).
    let client = http_client();
    let mut served = 0;
    for second in 1..=6usize {
        let tick = Instant::now();
        for (stream, closed_at) in attackers.iter_mut().filter(|(_, c)| c.is_none()) {
            let sent = stream.write_all(&request[second..=second]).is_ok();
            if !sent || closed_by_server(stream) {
                *closed_at = Some(started.elapsed());
            }
        }
        let health = client
            .get(edge.url("/healthz"))
            .send()
            .expect("GET /healthz");
        assert_eq!(health.status(), 200, "healthz during the attack");
        let (whep, _) = post_offer(&edge.url("/whep/nobody"), &OfferSpec::viewer(), None);
        assert_eq!(
            whep, 404,
            "a WHEP POST during the attack gets the edge's answer"
        );
        served += 2;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let open = attackers.iter().filter(|(_, c)| c.is_none()).count();
    let mut closed: Vec<Duration> = attackers.iter().filter_map(|(_, c)| *c).collect();
    closed.sort();
    println!("slowloris: {served} normal requests served; closed at {closed:?}; open {open}");
    assert_eq!(open, 0, "every slow connection is closed within 6 s");
    let at_once = closed
        .iter()
        .filter(|t| **t < Duration::from_millis(1500))
        .count();
    assert!(
        at_once >= 20,
        "the 20 past the per-IP cap of 10 are closed at once: {closed:?}"
    );
    assert!(
        closed
            .iter()
            .filter(|t| **t >= Duration::from_millis(1500))
            .count()
            <= 10,
        "at most 10 held until the timeout: {closed:?}"
    );
}

/// Item 10. The orchestrator limits anonymous redirect POSTs to 2 then 1 a minute per IP. An
/// anonymous client on 127.0.0.1 uses them up; a viewer then asks edge-b (also 127.0.0.1) for
/// a stream only edge-a holds, and edge-b's relay lookup at the orchestrator (with the cluster
/// token) is answered: the viewer gets its session. The anonymous client stays limited.
#[test]
fn relay_lookups_pass_the_rate_limit_that_stops_an_anonymous_client_on_the_same_ip() {
    let _turn = exclusive();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&format!(
        "{}[limits]\nposts_per_minute = 1\nposts_burst = 2\n",
        orchestrator_config(addr, None)
    ));
    let a = start_edge("edge-a", &["ingest"], addr);
    let b = start_edge("edge-b", &["edge"], addr);
    wait_nodes(&addr, &["edge-a", "edge-b"]);
    let _publisher = rtmp_publish(&a, 60);
    wait_stream_origin(&addr, "demo", "edge-a");

    let anonymous: Vec<u16> = (0..3)
        .map(|_| redirect(&addr.url("/whep/nothing"), None).0)
        .collect();
    assert_eq!(
        anonymous,
        [404, 404, 429],
        "the anonymous client's burst of 2"
    );

    let (code, location) = post_offer(&b.url("/whep/demo"), &OfferSpec::viewer(), None);
    assert_eq!(
        code,
        201,
        "a viewer on edge-b, relayed from edge-a through a lookup from the limited address: \
         {code} {location}\n{}",
        b.log_tail(30)
    );
    // A second lookup with the token directly, and the anonymous client still refused.
    let relay = http_client()
        .post(addr.url("/whep/demo?node=edge-c"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body("v=0\r\n")
        .send()
        .expect("relay lookup");
    assert_eq!(relay.status(), 307, "a relay lookup with the cluster token");
    assert_eq!(
        redirect(&addr.url("/whep/nothing"), None).0,
        429,
        "the anonymous client is still limited"
    );
    // A wrong token is anonymous.
    let forged = http_client()
        .post(addr.url("/whep/demo?node=edge-c"))
        .header("Content-Type", "application/sdp")
        .header("Authorization", "Bearer not-the-token")
        .body("v=0\r\n")
        .send()
        .expect("forged lookup");
    assert_eq!(forged.status(), 429, "a wrong token is limited like anyone");
}

/// `calls` of Redis command `command` so far (`INFO commandstats`, over a raw socket).
fn redis_calls(redis: &RedisProcess, command: &str) -> u64 {
    let port: u16 = redis
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("redis port");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    conn.write_all(b"INFO commandstats\r\n").expect("INFO");
    // A bulk string: `$<len>\r\n<text>\r\n`; read until the whole text is in.
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = conn.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
        let s = String::from_utf8_lossy(&text);
        if let Some((len, rest)) = s.strip_prefix('$').and_then(|r| r.split_once("\r\n"))
            && len.parse::<usize>().is_ok_and(|len| rest.len() >= len)
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Item 11. 600 unauthenticated reads and viewer redirects in about 3 s, on an orchestrator
/// whose registry is in Redis with one edge holding a stream. Each used to list the whole
/// registry (SMEMBERS + MGET); now they share a list read at most once a second (and after
/// each change), so Redis sees a few dozen lists at most, while every answer stays right.
#[test]
fn a_flood_of_reads_costs_redis_a_list_a_second_not_one_per_request() {
    let _turn = exclusive();
    let redis = RedisProcess::start();
    let addr = OrchestratorAddr::new();
    let _orchestrator = OrchestratorProcess::start(&format!(
        "{}[limits]\nposts_per_minute = 0\n",
        orchestrator_config(addr, Some(&redis.url()))
    ));
    let a = start_edge("edge-a", &["ingest", "edge"], addr);
    wait_nodes(&addr, &["edge-a"]);
    let _publisher = rtmp_publish(&a, 60);
    wait_stream_origin(&addr, "demo", "edge-a");

    let before = redis_calls(&redis, "smembers");
    let started = Instant::now();
    let paths = [
        "/api/v1/streams",
        "/api/v1/nodes",
        "/metrics",
        "/api/v1/streams/demo",
    ];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let paths = paths.map(|p| addr.url(p));
            let whep = addr.url("/whep/demo");
            let expected = a.url("/whep/demo");
            std::thread::spawn(move || {
                let client = http_client();
                for i in 0..150 {
                    if i % 3 == 0 {
                        assert_eq!(redirect(&whep, None), (307, expected.clone()));
                    } else {
                        let url = &paths[(t + i) % paths.len()];
                        let status = client.get(url).send().expect("GET").status();
                        assert_eq!(status, 200, "GET {url}");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a flood thread failed");
    }
    let elapsed = started.elapsed();
    let lists = redis_calls(&redis, "smembers") - before;
    println!("600 requests in {elapsed:?}: {lists} registry lists (SMEMBERS) in Redis");
    // The view's list at most once a second and once per change (heartbeats are none), plus
    // the background tasks' own (the sweeper two a second, the prober one every 2 s): about
    // 4 a second. 600 requests used to make 600 more.
    let bound = 5 * (elapsed.as_secs() + 1) + 10;
    assert!(
        lists <= bound,
        "{lists} registry lists for 600 requests in {elapsed:?} (bound {bound})"
    );
    // A stream that did not exist when the list was read is found at once.
    assert_eq!(redirect(&addr.url("/whep/late"), None).0, 404);
}
