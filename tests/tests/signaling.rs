//! gRPC `WebRtcSignaling.Signal` against the real edge: a Rust tonic client publishes with a
//! real `rtc` peer connection, another watches with one, media flows, and headless Chromium
//! watches the same stream over WHEP; bad messages get `ErrorResponse`s on a stream that keeps
//! serving; calls without the cluster token are `UNAUTHENTICATED`.

use std::time::{Duration, Instant};
use waveguide_proto::v1::module_service_client::ModuleServiceClient;
use waveguide_proto::v1::signaling_request::Message as In;
use waveguide_proto::v1::signaling_response::Message as Out;
use waveguide_proto::v1::{
    Announce, ConfigureRequest, ErrorReason, GetPeersRequest, HealthCheckRequest, IceCandidate,
    NotificationKind, Peer, PeerConnectionState, PeerRole, Protocol, ServingStatus,
    SessionDescription, SignalingRequest,
};
use waveguide_tests::edge::{http_client, metric_in, static_config};
use waveguide_tests::load::peer::Role;
use waveguide_tests::signaling::{self, SignalClient, expect_error, offer_sdp, unary_client};
use waveguide_tests::{Browser, EdgeProcess, poll_until};

const TOKEN: &str = "signal-test-token";
const CONNECT: Duration = Duration::from_secs(10);

fn config() -> String {
    format!(
        "{}\n[cluster]\ntoken = \"{TOKEN}\"\n",
        static_config(&[("demo", "demo-key"), ("other", "other-key")], 15)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn peers(port: u16, stream: &str) -> Vec<Peer> {
    unary_client(port, Some(TOKEN))
        .await
        .get_peers(GetPeersRequest {
            stream: stream.to_owned(),
            role: PeerRole::Unspecified as i32,
        })
        .await
        .expect("GetPeers")
        .into_inner()
        .peers
}

fn find(peers: &[Peer], role: PeerRole, protocol: Protocol) -> Option<&Peer> {
    peers
        .iter()
        .find(|p| p.role == role as i32 && p.protocol == protocol as i32)
}

/// A Rust client publishes over Signal with real WebRTC, another watches over Signal and gets
/// SRTP-authenticated RTP, Chromium watches the same stream over WHEP and decodes frames; the
/// sessions show in REST, GetPeers and the metrics; BYE and closing the stream end them.
#[test]
fn grpc_publish_rtc_watch_and_chromium_watch() {
    let mut edge = EdgeProcess::start(&config());
    let port = edge.grpc_port();
    let rt = runtime();

    // Publisher: the key alone names the stream.
    let signaling::ClipPublisher {
        signal: mut pub_signal,
        session_id: publisher_session,
        stream,
        signaled,
        media: publisher,
    } = signaling::publish_clip(
        &rt,
        port,
        TOKEN,
        ("", "demo-key", "rust-publisher"),
        Duration::from_secs(120),
    );
    assert_eq!(stream, "demo", "Announced names the key's stream");
    let connected_at = Instant::now();
    rt.block_on(pub_signal.notification(&publisher_session, NotificationKind::Connected, CONNECT));
    println!(
        "publisher: Announce → answer {:?}, CONNECTED after {:?}",
        signaled,
        connected_at.elapsed()
    );
    let info = poll_until(
        "demo live with a video track in REST",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            edge.stream_info("demo").filter(|s| {
                s["tracks"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["kind"] == "video" && t["packets"].as_u64() > Some(0))
                })
            })
        },
    );
    assert_eq!(info["protocol"], "signaling", "REST protocol: {info}");

    // A Rust viewer over its own Signal stream.
    let mut view_signal = rt
        .block_on(SignalClient::open(port, Some(TOKEN)))
        .expect("open Signal");
    let watched = rt
        .block_on(signaling::watch(&mut view_signal, "demo", "rust-viewer"))
        .unwrap_or_else(|e| panic!("watch over Signal refused: {e:?}"));
    let viewer_session = watched.session_id.clone();
    let receiving = rt.spawn(signaling::receive(watched.peer, Duration::from_secs(5)));
    rt.block_on(view_signal.notification(&viewer_session, NotificationKind::Connected, CONNECT));
    let got = rt.block_on(receiving).expect("viewer task");
    println!(
        "rtc viewer over Signal, 5 s: connected {:?}, keyframe {:?}, video {} packets ({} lost), \
         audio {} packets, read errors {}",
        got.connected_after,
        got.keyframe_after,
        got.video.received(),
        got.video.lost(),
        got.audio.received(),
        got.read_errors
    );
    assert!(got.connected_after.is_some(), "viewer never connected");
    assert!(!got.ended, "viewer connection ended early");
    assert!(
        got.video.received() > 100,
        "video packets received: {}",
        got.video.received()
    );
    assert!(got.audio.received() > 50, "audio: {}", got.audio.received());
    assert!(got.keyframe_after.is_some(), "no complete keyframe");
    assert_eq!(got.unknown, 0, "packets of unknown payload types");
    assert_eq!(got.read_errors, 0, "datagrams rtc rejected");

    // GetPeers: both Signal sessions, connected, with their names.
    let all = rt.block_on(peers(port, "demo"));
    let p = find(&all, PeerRole::Publisher, Protocol::GrpcSignaling)
        .unwrap_or_else(|| panic!("publisher in GetPeers: {all:?}"));
    assert_eq!(p.peer_name, "rust-publisher");
    assert_eq!(p.state, PeerConnectionState::Connected as i32);
    assert!(p.connected_at.is_some());
    let v = find(&all, PeerRole::Viewer, Protocol::GrpcSignaling)
        .unwrap_or_else(|| panic!("viewer in GetPeers: {all:?}"));
    assert_eq!(v.peer_name, "rust-viewer");
    assert_eq!(v.stream, "demo");

    // A session ended on the node (here a WHEP DELETE of its engine id, as a kick would) is
    // reported on its Signal stream as SESSION_ENDED.
    let second = rt
        .block_on(signaling::watch(&mut view_signal, "demo", "kicked-viewer"))
        .unwrap_or_else(|e| panic!("second watch over Signal refused: {e:?}"));
    let all = rt.block_on(peers(port, "demo"));
    let engine_id = all
        .iter()
        .find(|p| p.peer_name == "kicked-viewer")
        .map(|p| p.session_id.clone())
        .unwrap_or_else(|| panic!("kicked-viewer in GetPeers: {all:?}"));
    let status = http_client()
        .delete(edge.url(&format!("/whep/demo/{engine_id}")))
        .send()
        .expect("DELETE")
        .status();
    assert_eq!(status, 200, "DELETE of the Signal session's engine id");
    let ended = rt.block_on(view_signal.notification(
        &second.session_id,
        NotificationKind::SessionEnded,
        Duration::from_secs(5),
    ));
    println!("kicked Signal viewer told: {:?}", ended.message);
    drop(second.peer);

    // The rtc viewer's peer connection is closed: the node notices (consent) or we say BYE.
    let bye = rt.block_on(view_signal.bye(&viewer_session));
    match bye.message {
        Some(Out::Notification(n)) => {
            assert_eq!(n.kind, NotificationKind::SessionEnded as i32, "{n:?}");
            assert_eq!(n.session_id, viewer_session);
        }
        other => panic!("BYE answered with {other:?}"),
    }

    // Chromium watches the gRPC-published stream over WHEP.
    let mut browser = Browser::launch();
    let page = browser.open_page();
    let viewers = browser.watch(page, &edge.url("/whep/demo"), 1);
    assert_eq!(
        viewers[0].status, 201,
        "WHEP from Chromium: {:?}",
        viewers[0]
    );
    browser.wait_connected(page, &[viewers[0].id], Duration::from_secs(15));
    let started = Instant::now();
    let stats = browser.wait_stats(
        page,
        viewers[0].id,
        "30 decoded frames of the gRPC-published stream",
        Duration::from_secs(15),
        |s| s.frames_decoded() >= 30,
    );
    let video = stats.video.clone().expect("inbound video stats");
    println!(
        "Chromium WHEP viewer: {} frames decoded at {}x{} within {:?} of connecting",
        stats.frames_decoded(),
        video.frame_width,
        video.frame_height,
        started.elapsed()
    );
    assert_eq!((video.frame_width, video.frame_height), (640, 360));
    let all = rt.block_on(peers(port, "demo"));
    assert!(
        find(&all, PeerRole::Viewer, Protocol::Whep).is_some(),
        "Chromium's WHEP viewer in GetPeers: {all:?}"
    );
    assert!(
        find(&all, PeerRole::Viewer, Protocol::GrpcSignaling).is_none(),
        "the BYE'd viewer is gone: {all:?}"
    );
    let publishers = rt.block_on(async {
        unary_client(port, Some(TOKEN))
            .await
            .get_peers(GetPeersRequest {
                stream: String::new(),
                role: PeerRole::Publisher as i32,
            })
            .await
            .expect("GetPeers")
            .into_inner()
            .peers
    });
    assert_eq!(publishers.len(), 1, "role filter: {publishers:?}");

    let metrics = http_client()
        .get(edge.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    assert_eq!(
        metric_in(&metrics, "waveguide_signaling_streams", &[]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric_in(&metrics, "waveguide_signaling_pending_offers", &[]),
        Some(0.0)
    );
    let announces = metric_in(
        &metrics,
        "waveguide_signaling_messages_total",
        &["type=\"announce\"", "direction=\"in\""],
    );
    assert_eq!(announces, Some(3.0), "metrics:\n{metrics}");

    // Closing the publisher's Signal stream ends its session, and with it the stream (while
    // its peer connection still sends: the end comes from the Signal stream, not from ICE).
    drop(pub_signal);
    poll_until(
        "the stream ends when its publisher's Signal stream closes",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || edge.stream_info("demo").is_none().then_some(()),
    );
    let sent = rt.block_on(publisher.stop());
    println!("publisher sent {sent:?}");
    assert_eq!(sent.write_errors, 0);
    let all = rt.block_on(peers(port, ""));
    assert!(
        find(&all, PeerRole::Publisher, Protocol::GrpcSignaling).is_none(),
        "{all:?}"
    );
    edge.assert_alive();
}

/// Every bad message gets its `ErrorResponse` and the same Signal stream then serves a valid
/// session; no token (or a wrong one) is UNAUTHENTICATED for Signal and the unary calls.
#[test]
fn bad_signal_messages_get_errors_and_the_stream_keeps_serving() {
    let mut edge = EdgeProcess::start(&config());
    let port = edge.grpc_port();
    let rt = runtime();
    rt.block_on(async {
        for token in [None, Some("wrong-token")] {
            let refused = SignalClient::open(port, token).await.err();
            let code = refused.map(|s| s.code());
            assert_eq!(code, Some(tonic::Code::Unauthenticated), "token {token:?}");
            let peers = unary_client(port, token)
                .await
                .get_peers(GetPeersRequest::default())
                .await;
            assert_eq!(
                peers.err().map(|s| s.code()),
                Some(tonic::Code::Unauthenticated)
            );
        }
        let health = unary_client(port, Some(TOKEN))
            .await
            .health_check(HealthCheckRequest {})
            .await
            .expect("HealthCheck")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);
        assert!(!health.version.is_empty());

        let mut s = SignalClient::open(port, Some(TOKEN))
            .await
            .expect("open Signal");
        let check = |e: &waveguide_proto::v1::ErrorResponse, reason: ErrorReason, code: i32| {
            assert_eq!(
                (e.reason, e.code),
                (reason as i32, code),
                "expected {reason:?}/{code}: {e:?}"
            );
        };

        // An offer, a candidate and a BYE before any Announce: unknown session (NOT_FOUND).
        let e = expect_error(
            s.request(In::Offer(SessionDescription {
                session_id: "never-announced".into(),
                sdp: offer_sdp(Role::Publish),
            }))
            .await,
        );
        check(&e, ErrorReason::UnknownSession, 5);
        assert_eq!(e.session_id, "never-announced");
        let e = expect_error(
            s.request(In::Candidate(IceCandidate {
                session_id: "never-announced".into(),
                candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host".into(),
                sdp_mid: "0".into(),
                ..Default::default()
            }))
            .await,
        );
        check(&e, ErrorReason::UnknownSession, 5);
        let e = expect_error(s.bye("never-announced").await);
        check(&e, ErrorReason::UnknownSession, 5);

        // An empty request and an Announce without a role: protocol violations.
        s.send_raw(SignalingRequest {
            request_id: "empty".into(),
            message: None,
        })
        .await;
        let e = expect_error(s.reply_to("empty").await);
        check(&e, ErrorReason::ProtocolViolation, 3);
        let e = expect_error(
            s.request(In::Announce(Announce {
                stream: "demo".into(),
                ..Default::default()
            }))
            .await,
        );
        check(&e, ErrorReason::ProtocolViolation, 3);

        // A wrong key, a missing key: UNAUTHENTICATED at the Announce.
        let e = s
            .announce(PeerRole::Publisher, "demo", "not-the-key", "bad-key")
            .await
            .expect_err("a wrong key is refused");
        check(&e, ErrorReason::Unauthenticated, 16);
        let e = s
            .announce(PeerRole::Publisher, "demo", "", "no-key")
            .await
            .expect_err("no key is refused");
        check(&e, ErrorReason::Unauthenticated, 16);

        // A viewer of a stream nobody publishes: STREAM_NOT_FOUND at the offer.
        let a = s
            .announce(PeerRole::Viewer, "nosuch", "", "lost-viewer")
            .await
            .expect("a viewer announce is answered");
        let e = s
            .offer(&a.session_id, offer_sdp(Role::View))
            .await
            .expect_err("no such stream");
        check(&e, ErrorReason::StreamNotFound, 5);
        assert_eq!(e.session_id, a.session_id);
        // That session ended with the error.
        let e = s
            .offer(&a.session_id, offer_sdp(Role::View))
            .await
            .expect_err("the session ended");
        check(&e, ErrorReason::UnknownSession, 5);

        // Garbage and oversized SDP: INVALID_SDP.
        let a = s
            .announce(PeerRole::Publisher, "", "demo-key", "garbage")
            .await
            .expect("announce");
        let e = s
            .offer(&a.session_id, "this is not SDP\r\n".into())
            .await
            .expect_err("garbage SDP");
        check(&e, ErrorReason::InvalidSdp, 3);
        let a = s
            .announce(PeerRole::Publisher, "", "demo-key", "huge")
            .await
            .expect("announce");
        let e = s
            .offer(&a.session_id, "v=0\r\n".repeat(20_000))
            .await
            .expect_err("oversized SDP");
        check(&e, ErrorReason::InvalidSdp, 3);

        // An answer when the node sent no offer: a protocol violation, the session goes on.
        let a = s
            .announce(PeerRole::Publisher, "", "other-key", "valid")
            .await
            .expect("announce");
        assert_eq!(a.stream, "other");
        let e = expect_error(
            s.request(In::Answer(SessionDescription {
                session_id: a.session_id.clone(),
                sdp: "v=0\r\n".into(),
            }))
            .await,
        );
        check(&e, ErrorReason::ProtocolViolation, 9);
        // A candidate that smuggles extra lines: refused, the session goes on.
        let e = expect_error(
            s.request(In::Candidate(IceCandidate {
                session_id: a.session_id.clone(),
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host\r\na=ice-pwd:x".into(),
                ..Default::default()
            }))
            .await,
        );
        check(&e, ErrorReason::ProtocolViolation, 3);
        // A trickled candidate before the offer is kept and applied after the answer.
        s.send(In::Candidate(IceCandidate {
            session_id: a.session_id.clone(),
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
            sdp_mid: "0".into(),
            ..Default::default()
        }))
        .await;

        // The same stream still serves a valid session.
        let answer = s
            .offer(&a.session_id, offer_sdp(Role::Publish))
            .await
            .unwrap_or_else(|e| panic!("a valid offer after the errors: {e:?}"));
        assert!(answer.contains("a=ice-lite"), "{answer}");
        // Renegotiation is not supported: a second offer is a protocol violation.
        let e = s
            .offer(&a.session_id, offer_sdp(Role::Publish))
            .await
            .expect_err("second offer");
        check(&e, ErrorReason::ProtocolViolation, 9);
        // A second publisher of a live stream: STREAM_ALREADY_LIVE.
        let b = s
            .announce(PeerRole::Publisher, "", "other-key", "second")
            .await
            .expect("announce");
        let e = s
            .offer(&b.session_id, offer_sdp(Role::Publish))
            .await
            .expect_err("stream already live");
        check(&e, ErrorReason::StreamAlreadyLive, 6);
        // KEEPALIVE is answered (and by then the queued candidate was applied without error).
        let reply = s
            .request(In::Notification(waveguide_proto::v1::Notification {
                kind: NotificationKind::Keepalive as i32,
                ..Default::default()
            }))
            .await;
        assert!(
            matches!(&reply.message, Some(Out::Notification(n)) if n.kind == NotificationKind::Keepalive as i32),
            "{reply:?}"
        );
        assert!(
            s.stashed()
                .iter()
                .all(|m| !matches!(m.message, Some(Out::Error(_)))),
            "unexpected errors: {:?}",
            s.stashed()
        );
        let all = peers(port, "other").await;
        let p = find(&all, PeerRole::Publisher, Protocol::GrpcSignaling)
            .unwrap_or_else(|| panic!("the valid session in GetPeers: {all:?}"));
        assert_eq!(p.peer_name, "valid");
        // BYE ends it, and the stream with it (a publisher's goodbye ends its stream).
        let bye = s.bye(&a.session_id).await;
        assert!(
            matches!(&bye.message, Some(Out::Notification(n)) if n.kind == NotificationKind::SessionEnded as i32),
            "{bye:?}"
        );
    });
    // Draining (ModuleService.Configure): open Signal streams hear DRAINING, HealthCheck says
    // so, and new announces are refused as UNAVAILABLE.
    rt.block_on(async {
        let mut s = SignalClient::open(port, Some(TOKEN))
            .await
            .expect("open Signal");
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("URI")
            .connect()
            .await
            .expect("connect");
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {TOKEN}").parse().expect("ASCII");
        let mut module =
            ModuleServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            });
        module
            .configure(ConfigureRequest {
                draining: Some(true),
                ..Default::default()
            })
            .await
            .expect("Configure draining");
        let n = s
            .notification("", NotificationKind::Draining, Duration::from_secs(3))
            .await;
        assert!(!n.message.is_empty());
        let health = unary_client(port, Some(TOKEN))
            .await
            .health_check(HealthCheckRequest {})
            .await
            .expect("HealthCheck")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Draining as i32);
        let e = s
            .announce(PeerRole::Viewer, "demo", "", "late")
            .await
            .expect_err("no new sessions while draining");
        assert_eq!(
            (e.reason, e.code),
            (ErrorReason::Unavailable as i32, 14),
            "{e:?}"
        );
    });
    poll_until(
        "stream `other` ended by BYE",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || edge.stream_info("other").is_none().then_some(()),
    );
    let metrics = http_client()
        .get(edge.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    assert_eq!(
        metric_in(&metrics, "waveguide_signaling_pending_offers", &[]),
        Some(0.0),
        "{metrics}"
    );
    let errors = metric_in(
        &metrics,
        "waveguide_signaling_messages_total",
        &["type=\"error\"", "direction=\"out\""],
    );
    assert!(errors.is_some_and(|n| n >= 15.0), "{metrics}");
    edge.assert_alive();
}
