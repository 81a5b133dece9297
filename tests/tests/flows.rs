//! `PipelineService` and `EntityService` acting on delivery, against the real edge: a Rust
//! `rtc` publisher over Signal, a Rust `rtc` viewer over Signal counting what it decrypts.
//! `StopFlow` pauses the viewer (the connection stays), `StartFlow` resumes it at a keyframe
//! with no gap in its numbering, `AdjustQuality` holds the video under a bitrate cap while
//! the audio goes on, `ConfigureEntity` caps a stream's viewers; the publisher hears
//! `KEYFRAME_REQUESTED`; session entities carry the shard's counters.

use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use waveguide_proto::v1::entity_service_client::EntityServiceClient;
use waveguide_proto::v1::pipeline_service_client::PipelineServiceClient;
use waveguide_proto::v1::{
    AdjustQualityRequest, ConfigureEntityRequest, Entity, EntityKind, EntityRef, EntitySettings,
    Flow, FlowState, GetEntityStatusRequest, GetFlowStatusRequest, GetPeersRequest,
    ListEntitiesRequest, NotificationKind, PeerRole, QualityCap, StartFlowRequest, StopFlowRequest,
    TrackKind, entity,
};
use waveguide_tests::EdgeProcess;
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::load::peer::Role;
use waveguide_tests::signaling::{self, Bearer, LiveCounts, SignalClient, offer_sdp};

const TOKEN: &str = "flow-test-token";
const CONNECT: Duration = Duration::from_secs(10);

type Pipelines = PipelineServiceClient<InterceptedService<Channel, Bearer>>;
type Entities = EntityServiceClient<InterceptedService<Channel, Bearer>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn flow(p: &mut Pipelines, id: &str) -> Flow {
    p.get_flow_status(GetFlowStatusRequest {
        flow_id: id.to_owned(),
    })
    .await
    .unwrap_or_else(|e| panic!("GetFlowStatus {id}: {e}"))
    .into_inner()
    .flow
    .expect("a flow")
}

async fn cap(p: &mut Pipelines, id: &str, quality: QualityCap) -> Flow {
    p.adjust_quality(AdjustQualityRequest {
        flow_id: id.to_owned(),
        quality: Some(quality),
    })
    .await
    .unwrap_or_else(|e| panic!("AdjustQuality {id}: {e}"))
    .into_inner()
    .flow
    .expect("a flow")
}

/// Sets stream `demo`'s viewer ceiling on the edge (0 lifts it); the stream as it is then.
async fn viewer_ceiling(entities: &mut Entities, max: u32) -> Entity {
    entities
        .configure_entity(ConfigureEntityRequest {
            r#ref: Some(EntityRef {
                kind: EntityKind::Stream as i32,
                id: "demo".into(),
            }),
            settings: Some(EntitySettings {
                max_viewers: Some(max),
                ..EntitySettings::default()
            }),
        })
        .await
        .expect("ConfigureEntity")
        .into_inner()
        .entity
        .expect("an entity")
}

/// What arrived over `window`: `(video, audio, keyframes)` packets.
async fn arrivals(live: &LiveCounts, window: Duration) -> (u64, u64, u64) {
    let (v0, a0, k0) = live.snapshot();
    tokio::time::sleep(window).await;
    let (v1, a1, k1) = live.snapshot();
    (v1 - v0, a1 - a0, k1 - k0)
}

#[test]
fn stop_start_and_cap_a_viewer_flow() {
    let edge = EdgeProcess::start(&format!(
        "{}\n[cluster]\ntoken = \"{TOKEN}\"\n",
        static_config(&[("demo", "demo-key")], 15)
    ));
    let port = edge.grpc_port();
    let rt = runtime();

    // Publisher: 800 kbps H.264 with a keyframe a second, plus Opus-sized audio.
    let signaling::ClipPublisher {
        signal: mut pub_signal,
        session_id: publisher_session,
        media: publisher,
        ..
    } = signaling::publish_clip(
        &rt,
        port,
        TOKEN,
        ("demo", "demo-key", "pub"),
        Duration::from_secs(90),
    );
    rt.block_on(pub_signal.notification(&publisher_session, NotificationKind::Connected, CONNECT));
    std::thread::sleep(Duration::from_secs(2));

    // Viewer over Signal, counting what it decrypts.
    let mut view_signal = rt
        .block_on(SignalClient::open(port, Some(TOKEN)))
        .expect("open Signal");
    let watched = rt
        .block_on(signaling::watch(&mut view_signal, "demo", "viewer"))
        .unwrap_or_else(|e| panic!("watch refused: {e:?}"));
    let live = Arc::new(LiveCounts::default());
    let viewer = {
        let _guard = rt.enter();
        tokio::spawn(signaling::receive_counting(
            watched.peer,
            Duration::from_secs(40),
            Arc::clone(&live),
        ))
    };
    rt.block_on(view_signal.notification(
        &watched.session_id,
        NotificationKind::Connected,
        CONNECT,
    ));
    // A joining viewer asks for a fresh keyframe: the Signal publisher hears of it.
    let heard = rt.block_on(pub_signal.notification(
        &publisher_session,
        NotificationKind::KeyframeRequested,
        Duration::from_secs(5),
    ));
    println!("publisher heard: {heard:?}");

    let outcome = rt.block_on(async {
        let channel = signaling::channel(port).await;
        let mut pipelines =
            PipelineServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(TOKEN)));
        let mut entities: Entities =
            EntityServiceClient::with_interceptor(channel, Bearer::new(Some(TOKEN)));
        // Flows and entities name the engine's session, which GetPeers lists.
        let peers = signaling::unary_client(port, Some(TOKEN))
            .await
            .get_peers(GetPeersRequest {
                stream: "demo".into(),
                role: PeerRole::Viewer as i32,
            })
            .await
            .expect("GetPeers")
            .into_inner()
            .peers;
        assert_eq!(peers.len(), 1, "one viewer: {peers:?}");
        let session = peers[0].session_id.clone();
        let id = format!("viewer:{session}");

        let flowing = arrivals(&live, Duration::from_secs(2)).await;
        let f = flow(&mut pipelines, &id).await;
        println!(
            "flowing: {flowing:?}, flow: state {} packets {} bytes {} bitrate {}",
            f.state, f.packets, f.bytes, f.bitrate_bps
        );
        assert!(
            flowing.0 > 30 && flowing.1 > 30,
            "media before the stop: {flowing:?}"
        );
        assert_eq!(f.state, FlowState::Flowing as i32);
        assert!(f.packets > 100 && f.bytes > 50_000, "counters: {f:?}");

        // The viewer asks for a keyframe (a PLI, as a browser does after loss): the edge asks
        // the publisher, which hears of it on its Signal stream.
        live.send_pli
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let heard = pub_signal
            .notification(
                &publisher_session,
                NotificationKind::KeyframeRequested,
                Duration::from_secs(3),
            )
            .await;
        println!("after the viewer's PLI, the publisher heard: {heard:?}");

        // The session entity carries the shard's counters.
        let e = entities
            .get_entity_status(GetEntityStatusRequest {
                r#ref: Some(EntityRef {
                    kind: EntityKind::Session as i32,
                    id: session.clone(),
                }),
            })
            .await
            .expect("GetEntityStatus")
            .into_inner()
            .entity
            .expect("an entity");
        let Some(entity::Detail::Session(s)) = e.detail else {
            panic!("a session entity: {e:?}");
        };
        println!(
            "session entity: remote {} out {} bytes, rtt {:?}",
            s.remote_addr, s.bytes_out, s.rtt
        );
        assert!(s.remote_addr.starts_with("127.0.0.1:"), "{s:?}");
        assert!(s.bytes_out > 50_000, "{s:?}");

        // The video track entity: bytes, the last keyframe, the PLIs sent to the publisher.
        let tracks = entities
            .list_entities(ListEntitiesRequest {
                kind: EntityKind::Track as i32,
                stream: "demo".into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .expect("ListEntities")
            .into_inner()
            .entities;
        let video = tracks
            .iter()
            .find_map(|e| match &e.detail {
                Some(entity::Detail::Track(t))
                    if t.track
                        .as_ref()
                        .is_some_and(|t| t.kind == TrackKind::Video as i32) =>
                {
                    Some(t.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("a video track entity: {tracks:?}"));
        println!(
            "video track: {} packets, {} bytes, {} PLIs sent, last keyframe {:?}",
            video.packets, video.bytes, video.plis_sent, video.last_keyframe_at
        );
        assert!(video.bytes > 100_000, "{video:?}");
        assert!(
            video.plis_sent >= 1,
            "the join asked the publisher: {video:?}"
        );
        assert!(video.last_keyframe_at.is_some(), "{video:?}");

        // Stop: nothing arrives, the connection stays, the flow says STOPPED.
        let stopped = pipelines
            .stop_flow(StopFlowRequest {
                flow_id: id.clone(),
            })
            .await
            .expect("StopFlow")
            .into_inner()
            .flow
            .expect("a flow");
        assert_eq!(stopped.state, FlowState::Stopped as i32);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paused = arrivals(&live, Duration::from_secs(2)).await;
        let f = flow(&mut pipelines, &id).await;
        println!("paused: {paused:?}, dropped {}", f.packets_dropped);
        assert_eq!(
            (paused.0, paused.1),
            (0, 0),
            "media while stopped: {paused:?}"
        );
        assert!(f.packets_dropped > 50, "held packets are counted: {f:?}");

        // Start: video comes back at once, from a keyframe.
        let started = pipelines
            .start_flow(StartFlowRequest {
                flow_id: id.clone(),
            })
            .await
            .expect("StartFlow")
            .into_inner()
            .flow
            .expect("a flow");
        assert_eq!(started.state, FlowState::Flowing as i32);
        let resumed = arrivals(&live, Duration::from_millis(1500)).await;
        println!("resumed: {resumed:?}");
        assert!(
            resumed.0 > 20 && resumed.1 > 20,
            "media after the start: {resumed:?}"
        );
        assert!(resumed.2 >= 1, "resumed at a keyframe: {resumed:?}");

        // A cap under the stream's bitrate holds the video; audio goes on.
        let capped = cap(
            &mut pipelines,
            &id,
            QualityCap {
                max_bitrate_bps: 200_000,
                ..QualityCap::default()
            },
        )
        .await;
        assert_eq!(capped.quality.map(|q| q.max_bitrate_bps), Some(200_000));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let under_cap = arrivals(&live, Duration::from_secs(2)).await;
        let f = flow(&mut pipelines, &id).await;
        println!("capped: {under_cap:?}, delivering {} bps", f.bitrate_bps);
        assert_eq!(under_cap.0, 0, "video under a 200 kbps cap: {under_cap:?}");
        assert!(under_cap.1 > 50, "audio under the cap: {under_cap:?}");

        // Lifting the cap brings the video back at a keyframe.
        cap(&mut pipelines, &id, QualityCap::default()).await;
        let uncapped = arrivals(&live, Duration::from_secs(2)).await;
        println!("uncapped: {uncapped:?}");
        assert!(
            uncapped.0 > 30 && uncapped.2 >= 1,
            "video back: {uncapped:?}"
        );

        // Loss: the viewer loses every 20th video datagram for 2 s and NACKs each. The edge
        // answers from the history of its direct path (rtc's responder never saw those
        // packets), so the numbering ends whole (checked at the end).
        live.drop_video_every
            .store(20, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        live.drop_video_every
            .store(0, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let nacked = live.nacked.load(std::sync::atomic::Ordering::Relaxed);
        println!("lost and NACKed: {nacked}");
        assert!(nacked >= 5, "the viewer lost packets: {nacked}");

        // Height caps need layers the publisher does not send.
        let refused = pipelines
            .adjust_quality(AdjustQualityRequest {
                flow_id: id.clone(),
                quality: Some(QualityCap {
                    max_height: 360,
                    ..QualityCap::default()
                }),
            })
            .await
            .expect_err("a height cap");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let missing = pipelines
            .stop_flow(StopFlowRequest {
                flow_id: "viewer:nobody".into(),
            })
            .await
            .expect_err("an unknown flow");
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // A stream's viewer ceiling: one viewer watches, a second is refused, lifting it admits.
        let configured = viewer_ceiling(&mut entities, 1).await;
        assert_eq!(configured.settings.and_then(|s| s.max_viewers), Some(1));
        assert_eq!(configured.r#ref.map(|r| r.id).as_deref(), Some("demo"));
        session
    });

    // The viewer's PLI was counted as feedback from viewers.
    let plis = edge.metric("waveguide_viewer_plis_total", &[]);
    assert!(plis >= 1.0, "waveguide_viewer_plis_total {plis}");
    // Its two tracks went to the direct path; the lost packets were sent again.
    let direct = edge.metric("waveguide_viewer_tracks_total", &["path=\"direct\""]);
    let on_rtc = edge.metric("waveguide_viewer_tracks_total", &["path=\"rtc\""]);
    let retransmits = edge.metric("waveguide_retransmits_total", &[]);
    println!("tracks direct {direct}, on rtc {on_rtc}; retransmits {retransmits}");
    assert_eq!((direct, on_rtc), (2.0, 0.0), "viewer tracks by path");
    assert!(
        retransmits >= 5.0,
        "waveguide_retransmits_total {retransmits}"
    );

    // The same session over the admin REST API, with the shard's counters.
    let rest: serde_json::Value = http_client()
        .get(edge.url(&format!("/api/v1/sessions/{outcome}")))
        .bearer_auth(TOKEN)
        .send()
        .expect("GET session")
        .json()
        .expect("JSON");
    println!("REST session: {rest}");
    assert_eq!(rest["paused"], false, "{rest}");
    assert_eq!(rest["relay_pull"], false, "{rest}");
    assert!(rest["stats"]["packets_sent"].as_u64() > Some(500), "{rest}");
    // Its NACKs (one message per lost packet) and its PLI, as the shard counted them.
    assert!(rest["stats"]["nacks"].as_u64() >= Some(5), "{rest}");
    assert!(
        rest["stats"]["keyframe_requests"].as_u64() >= Some(1),
        "{rest}"
    );
    assert!(
        rest["stats"]["packets_dropped"].as_u64() > Some(50),
        "{rest}"
    );
    assert!(
        rest["stats"]["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{rest}"
    );

    // The offering peer binds a tokio socket.
    let _runtime = rt.enter();
    let whep = |edge: &EdgeProcess| {
        http_client()
            .post(edge.url("/whep/demo"))
            .header("Content-Type", "application/sdp")
            .body(offer_sdp(Role::View))
            .send()
            .expect("WHEP")
    };
    let full = whep(&edge);
    let status = full.status();
    let body = full.text().unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("viewer limit of 1"), "{body}");
    rt.block_on(async {
        let mut entities: Entities = EntityServiceClient::with_interceptor(
            signaling::channel(port).await,
            Bearer::new(Some(TOKEN)),
        );
        viewer_ceiling(&mut entities, 0).await;
    });
    assert_eq!(whep(&edge).status(), 201, "the ceiling lifted");

    // The whole run: no gap in the viewer's numbering across stop, start, cap and uncap.
    live.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (received, sent) = rt.block_on(async {
        let received = viewer.await.expect("the viewer task");
        (received, publisher.stop().await)
    });
    println!("publisher: {sent:?}");
    println!(
        "viewer: video {} (lost {}), audio {} (lost {}), read errors {}",
        received.video.received(),
        received.video.lost(),
        received.audio.received(),
        received.audio.lost(),
        received.read_errors
    );
    assert!(
        !received.ended,
        "the viewer's connection stayed up throughout"
    );
    assert!(
        received.video.lost() < 5 && received.audio.lost() < 5,
        "numbering continues across stop, start, caps and NACKed loss: {received:?}"
    );
}
