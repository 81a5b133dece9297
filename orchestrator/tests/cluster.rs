//! The orchestrator in-process against a fake edge (a gRPC `ModuleService` + `EntityService`
//! that records what it is asked), driven over real sockets: gRPC auth, health and reflection,
//! the EventService semantics, WHIP/WHEP/relay redirects and CORS, the REST API, the admin
//! actions, health probes, node expiry and graceful shutdown.
//!
//! One test function: the process-wide metrics recorder can be installed once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use waveguide_control::service::{ServiceConfig, ServiceKind, StreamKeyEntry};
use waveguide_orchestrator::Orchestrator;
use waveguide_orchestrator::config::Config;
use waveguide_orchestrator::region::RegionRule;
use waveguide_proto::v1;
use waveguide_proto::v1::entity_service_server::{EntityService, EntityServiceServer};
use waveguide_proto::v1::event_service_client::EventServiceClient;
use waveguide_proto::v1::module_service_server::{ModuleService, ModuleServiceServer};

const TOKEN: &str = "cluster-secret";
const ADMIN: &str = "admin-secret";

/// Records every call (with whether it carried the cluster token) and answers health probes
/// with a settable status.
#[derive(Clone)]
struct FakeEdge {
    calls: Arc<Mutex<Vec<String>>>,
    status: Arc<Mutex<v1::ServingStatus>>,
}

impl FakeEdge {
    fn record<T>(&self, request: &Request<T>, what: String) {
        let authorized = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some("Bearer cluster-secret");
        let entry = if authorized {
            what
        } else {
            format!("UNAUTHENTICATED {what}")
        };
        self.calls.lock().unwrap().push(entry);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn wait_for_call(&self, call: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.calls().iter().any(|c| c == call) {
            assert!(
                Instant::now() < deadline,
                "no `{call}` in {:?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl ModuleService for FakeEdge {
    async fn register_module(
        &self,
        request: Request<v1::RegisterModuleRequest>,
    ) -> Result<Response<v1::RegisterModuleResponse>, Status> {
        let interval = request.get_ref().status_interval.map_or(0, |d| d.seconds);
        self.record(&request, format!("register interval={interval}"));
        Ok(Response::new(v1::RegisterModuleResponse::default()))
    }

    async fn health_check(
        &self,
        _request: Request<v1::HealthCheckRequest>,
    ) -> Result<Response<v1::HealthCheckResponse>, Status> {
        let status = *self.status.lock().unwrap();
        Ok(Response::new(v1::HealthCheckResponse {
            status: status as i32,
            ..v1::HealthCheckResponse::default()
        }))
    }

    async fn configure(
        &self,
        request: Request<v1::ConfigureRequest>,
    ) -> Result<Response<v1::ConfigureResponse>, Status> {
        let draining = request.get_ref().draining;
        self.record(&request, format!("configure draining={draining:?}"));
        Ok(Response::new(v1::ConfigureResponse::default()))
    }

    async fn shutdown(
        &self,
        _request: Request<v1::ShutdownRequest>,
    ) -> Result<Response<v1::ShutdownResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl EntityService for FakeEdge {
    async fn list_entities(
        &self,
        _request: Request<v1::ListEntitiesRequest>,
    ) -> Result<Response<v1::ListEntitiesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_entity_status(
        &self,
        _request: Request<v1::GetEntityStatusRequest>,
    ) -> Result<Response<v1::GetEntityStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn destroy_entity(
        &self,
        request: Request<v1::DestroyEntityRequest>,
    ) -> Result<Response<v1::DestroyEntityResponse>, Status> {
        let r = request.get_ref();
        let what = format!(
            "destroy {:?} {} ({})",
            r.r#ref.as_ref().map(|e| e.kind),
            r.r#ref.as_ref().map_or("", |e| e.id.as_str()),
            r.reason
        );
        self.record(&request, what);
        Ok(Response::new(v1::DestroyEntityResponse {}))
    }

    async fn create_entity(
        &self,
        _request: Request<v1::CreateEntityRequest>,
    ) -> Result<Response<v1::CreateEntityResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn configure_entity(
        &self,
        _request: Request<v1::ConfigureEntityRequest>,
    ) -> Result<Response<v1::ConfigureEntityResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn start_fake_edge() -> (FakeEdge, SocketAddr) {
    let edge = FakeEdge {
        calls: Arc::default(),
        status: Arc::new(Mutex::new(v1::ServingStatus::Serving)),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .add_service(ModuleServiceServer::new(edge.clone()))
        .add_service(EntityServiceServer::new(edge.clone()))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    (edge, addr)
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

fn node_info(
    id: &str,
    region: &str,
    grpc: SocketAddr,
    capabilities: &[v1::Capability],
) -> v1::NodeInfo {
    v1::NodeInfo {
        node_id: id.into(),
        region: region.into(),
        public_url: format!("http://{id}.test:8080"),
        grpc_url: format!("http://{grpc}"),
        capabilities: capabilities.iter().map(|&c| c as i32).collect(),
        capacity: Some(v1::Capacity {
            max_viewers: 10,
            ..v1::Capacity::default()
        }),
        ..v1::NodeInfo::default()
    }
}

fn event(node: &str, sequence: u64, kind: v1::event::Event) -> v1::ReportEventRequest {
    v1::ReportEventRequest {
        event: Some(v1::Event {
            event_id: format!("{node}-{sequence}"),
            node_id: node.into(),
            sequence,
            at: None,
            event: Some(kind),
        }),
    }
}

fn stream(name: &str, protocol: v1::Protocol, origin: &str) -> v1::StreamInfo {
    v1::StreamInfo {
        name: name.into(),
        protocol: protocol as i32,
        origin_node_id: origin.into(),
        tracks: vec![v1::Track {
            id: "video".into(),
            kind: v1::TrackKind::Video as i32,
            codec: "H264".into(),
            clock_rate: 90_000,
            ..v1::Track::default()
        }],
        ..v1::StreamInfo::default()
    }
}

/// The heartbeats the test's "edges" send every 300 ms: node id → (load, last sequence).
type Beats = Arc<Mutex<BTreeMap<String, (v1::NodeLoad, u64)>>>;

fn start_heartbeats(mut client: EventServiceClient<tonic::transport::Channel>, beats: Beats) {
    tokio::spawn(async move {
        loop {
            let current: Vec<(String, (v1::NodeLoad, u64))> = beats
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (node_id, (load, sequence)) in current {
                let _ = client
                    .report_status(authorized(v1::ReportStatusRequest {
                        node_id,
                        at: None,
                        load: Some(load),
                        last_event_sequence: sequence,
                    }))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn json(client: &reqwest::Client, url: String) -> serde_json::Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_end_to_end_with_a_fake_edge() {
    let metrics = waveguide_orchestrator::telemetry::install().unwrap();
    let (edge, edge_grpc) = start_fake_edge().await;

    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.grpc.listen = "127.0.0.1:0".parse().unwrap();
    config.cluster.token = TOKEN.into();
    config.admin.token = Some(ADMIN.into());
    config.service = Some(ServiceConfig {
        kind: ServiceKind::Static,
        streams: vec![StreamKeyEntry::with_key("demo", "demo-key")],
        ..ServiceConfig::default()
    });
    config.regions = vec![RegionRule {
        cidr: "10.0.0.0/8".into(),
        region: "us".into(),
    }];
    let orchestrator = Orchestrator::start(config, metrics).await.unwrap();
    let (http, grpc) = (orchestrator.http_addr, orchestrator.grpc_addr);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(orchestrator.run_until(async {
        let _ = stop_rx.await;
    }));
    let base = format!("http://{http}");
    let client = http_client();

    // --- gRPC: health is open, everything else needs the cluster token.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "waveguide.v1.EventService"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "health of `{service}`"
        );
    }
    let mut events = EventServiceClient::new(channel.clone());
    let err = events
        .report_status(v1::ReportStatusRequest {
            node_id: "edge-a".into(),
            ..v1::ReportStatusRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut bad = Request::new(v1::ReportStatusRequest::default());
    bad.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        events.report_status(bad).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let list = || ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let err = reflection
            .server_reflection_info(tonic::codegen::tokio_stream::once(list()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut answers = reflection
            .server_reflection_info(authorized(tonic::codegen::tokio_stream::once(list())))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
            panic!("unexpected reflection answer {answer:?}");
        };
        let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"waveguide.v1.EventService".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
    }

    // --- EventService semantics for unknown nodes.
    let answer = events
        .report_status(authorized(v1::ReportStatusRequest {
            node_id: "edge-a".into(),
            ..v1::ReportStatusRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.resync_required, "unknown node must resync");
    assert_eq!(answer.next_report_in.map(|d| d.seconds), Some(1));
    let err = events
        .report_event(authorized(event(
            "edge-a",
            1,
            v1::event::Event::StreamStarted(v1::StreamStarted {
                stream: Some(stream("demo", v1::Protocol::Whip, "edge-a")),
            }),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // --- Two nodes announce themselves: an ingest+edge in "eu", a relay edge in "us".
    use v1::Capability as C;
    let up = |id: &str, region: &str, caps: &[C]| {
        event(
            id,
            1,
            v1::event::Event::NodeUp(v1::NodeUp {
                node: Some(node_info(id, region, edge_grpc, caps)),
                streams: Vec::new(),
            }),
        )
    };
    for request in [
        up(
            "edge-a",
            "eu",
            &[C::IngestWhip, C::IngestRtmp, C::EgressWhep, C::Relay],
        ),
        up("edge-b", "us", &[C::EgressWhep, C::Relay]),
    ] {
        let answer = events.report_event(authorized(request)).await.unwrap();
        assert!(!answer.into_inner().resync_required);
    }
    edge.wait_for_call("register interval=1").await;
    assert!(
        !edge
            .calls()
            .iter()
            .any(|c| c.starts_with("UNAUTHENTICATED")),
        "{:?}",
        edge.calls()
    );
    let beats: Beats = Arc::default();
    for id in ["edge-a", "edge-b"] {
        beats
            .lock()
            .unwrap()
            .insert(id.into(), (v1::NodeLoad::default(), 1));
    }
    start_heartbeats(events.clone(), Arc::clone(&beats));

    let nodes = json(&client, format!("{base}/api/v1/nodes")).await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
    assert_eq!(nodes[0]["id"], "edge-a");
    assert_eq!(nodes[0]["roles"], serde_json::json!(["ingest", "edge"]));
    assert_eq!(nodes[0]["public_url"], "http://edge-a.test:8080");
    assert_eq!(nodes[0]["healthy"], true);
    assert_eq!(nodes[0]["draining"], false);
    assert_eq!(nodes[1]["roles"], serde_json::json!(["edge"]));
    assert_eq!(
        nodes[1]["capabilities"],
        serde_json::json!(["egress_whep", "relay"])
    );
    let response = client
        .get(format!("{base}/api/v1/nodes/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // --- WHIP: the key is checked here, then a 307 with a publish ticket.
    let response = client
        .post(format!("{base}/whip"))
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    let response = client
        .post(format!("{base}/whip/demo"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for path in ["/whip", "/whip/demo", "/whip/demo?region=us"] {
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth("demo-key")
            .header("content-type", "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307, "{path}");
        let location = header(&response, "location");
        assert!(
            location.starts_with("http://edge-a.test:8080/whip/demo?ticket=w1~p~"),
            "{location}"
        );
        assert_eq!(header(&response, "cache-control"), "no-store");
        assert_eq!(header(&response, "access-control-allow-origin"), "*");
        assert!(header(&response, "access-control-expose-headers").contains("location"));
    }
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/whip"))
        .header("origin", "https://player.example.org")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    let methods = header(&preflight, "access-control-allow-methods").to_ascii_uppercase();
    for method in ["POST", "GET", "DELETE", "PATCH", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&preflight, "access-control-allow-headers").to_ascii_lowercase();
    for name in ["authorization", "content-type", "if-match"] {
        assert!(headers.contains(name), "{headers}");
    }
    assert!(!header(&preflight, "access-control-max-age").is_empty());

    // --- WHEP: 404 until a node holds the stream, then the holder, then a relaying edge.
    let response = client
        .post(format!("{base}/whep/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let answer = events
        .report_event(authorized(event(
            "edge-a",
            2,
            v1::event::Event::StreamStarted(v1::StreamStarted {
                stream: Some(stream("demo", v1::Protocol::Whip, "edge-a")),
            }),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.resync_required);
    beats
        .lock()
        .unwrap()
        .insert("edge-a".into(), (v1::NodeLoad::default(), 2));
    let response = client
        .post(format!("{base}/whep/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(
        header(&response, "location"),
        "http://edge-a.test:8080/whep/demo"
    );
    let response = client
        .post(format!("{base}/whep/bad%2Fname"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // edge-a is full of viewers: viewers go to edge-b, which will relay.
    let full = v1::NodeLoad {
        viewers: 10,
        ..v1::NodeLoad::default()
    };
    beats.lock().unwrap().insert("edge-a".into(), (full, 2));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let response = client
            .post(format!("{base}/whep/demo"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307);
        if header(&response, "location") == "http://edge-b.test:8080/whep/demo" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "viewers still sent to the full edge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Relay: edge-b asks where to pull from, with the cluster token.
    let response = client
        .post(format!("{base}/whep/demo?node=edge-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("{base}/whep/demo?node=edge-b"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = header(&response, "location");
    assert!(
        location.starts_with("http://edge-a.test:8080/whep/demo?ticket=w1~r~"),
        "{location}"
    );
    let response = client
        .post(format!("{base}/whep/demo?node=edge-a"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the requester itself is never chosen"
    );

    events
        .report_event(authorized(event(
            "edge-b",
            2,
            v1::event::Event::StreamStarted(v1::StreamStarted {
                stream: Some(stream("demo", v1::Protocol::Relay, "edge-a")),
            }),
        )))
        .await
        .unwrap();
    beats
        .lock()
        .unwrap()
        .insert("edge-b".into(), (v1::NodeLoad::default(), 2));
    let demo = json(&client, format!("{base}/api/v1/streams/demo")).await;
    assert_eq!(demo["origin"], "edge-a");
    assert_eq!(demo["relays"], serde_json::json!(["edge-b"]));
    assert_eq!(demo["tracks"][0]["codec"], "H264");
    assert!(demo["viewers"].get("edge-b").is_some(), "{demo}");
    let streams = json(&client, format!("{base}/api/v1/streams")).await;
    assert_eq!(streams.as_array().map(Vec::len), Some(1));
    let response = client
        .get(format!("{base}/api/v1/streams/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // --- A sequence gap asks for a resync until NodeUp.
    let answer = events
        .report_event(authorized(event(
            "edge-b",
            5,
            v1::event::Event::StreamEnded(v1::StreamEnded {
                name: "ghost".into(),
                ..v1::StreamEnded::default()
            }),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.resync_required);
    let answer = events
        .report_status(authorized(v1::ReportStatusRequest {
            node_id: "edge-b".into(),
            last_event_sequence: 5,
            ..v1::ReportStatusRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.resync_required);
    events
        .report_event(authorized(v1::ReportEventRequest {
            event: Some(v1::Event {
                event_id: "b-up-2".into(),
                node_id: "edge-b".into(),
                sequence: 1,
                at: None,
                event: Some(v1::event::Event::NodeUp(v1::NodeUp {
                    node: Some(node_info(
                        "edge-b",
                        "us",
                        edge_grpc,
                        &[C::EgressWhep, C::Relay],
                    )),
                    streams: vec![stream("demo", v1::Protocol::Relay, "edge-a")],
                })),
            }),
        }))
        .await
        .unwrap();
    beats
        .lock()
        .unwrap()
        .insert("edge-b".into(), (v1::NodeLoad::default(), 1));
    let answer = events
        .report_status(authorized(v1::ReportStatusRequest {
            node_id: "edge-b".into(),
            last_event_sequence: 1,
            ..v1::ReportStatusRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.resync_required);

    // --- Admin: drain and undrain a node, end a stream.
    let response = client
        .post(format!("{base}/api/v1/nodes/edge-a/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("{base}/api/v1/nodes/edge-a/drain"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the admin token is not the cluster token here"
    );
    let response = client
        .post(format!("{base}/api/v1/nodes/edge-a/drain"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let drained: serde_json::Value = response.json().await.unwrap();
    assert_eq!(drained["draining"], true);
    edge.wait_for_call("configure draining=Some(true)").await;
    let response = client
        .post(format!("{base}/whip/demo"))
        .bearer_auth("demo-key")
        .send()
        .await
        .unwrap();
    // The only WHIP edge is draining. (It still holds the publisher, but gets nothing new.)
    assert_eq!(response.status(), 503);
    let response = client
        .post(format!("{base}/api/v1/nodes/edge-a/undrain"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    edge.wait_for_call("configure draining=Some(false)").await;
    let response = client
        .post(format!("{base}/api/v1/nodes/nobody/drain"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let response = client
        .delete(format!("{base}/api/v1/streams/demo"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    edge.wait_for_call("destroy Some(1) demo (ended by admin)")
        .await;
    let demo = json(&client, format!("{base}/api/v1/streams/demo")).await;
    assert_eq!(demo["origin"], serde_json::Value::Null, "{demo}");

    // --- Health probes: NOT_SERVING makes both nodes (same fake) unhealthy, SERVING heals.
    *edge.status.lock().unwrap() = v1::ServingStatus::NotServing;
    let deadline = Instant::now() + Duration::from_secs(6);
    while json(&client, format!("{base}/api/v1/nodes/edge-a")).await["healthy"] != false {
        assert!(
            Instant::now() < deadline,
            "the probe did not mark edge-a unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("{base}/whip/demo"))
        .bearer_auth("demo-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    *edge.status.lock().unwrap() = v1::ServingStatus::Serving;
    let deadline = Instant::now() + Duration::from_secs(6);
    while json(&client, format!("{base}/api/v1/nodes/edge-a")).await["healthy"] != true {
        assert!(Instant::now() < deadline, "the probe did not heal edge-a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- A node silent for three heartbeats is dropped with its streams.
    beats.lock().unwrap().remove("edge-b");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nodes = json(&client, format!("{base}/api/v1/nodes")).await;
        let ids: Vec<&str> = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        if ids == ["edge-a"] {
            break;
        }
        assert!(Instant::now() < deadline, "edge-b still listed: {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = client
        .post(format!("{base}/whep/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "edge-b's relay went with it");

    // --- Readiness, metrics, OpenAPI, unknown routes.
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "waveguide_orchestrator_decisions_total{kind=\"whip\",outcome=\"redirect\"} 3",
        "waveguide_orchestrator_decisions_total{kind=\"whip\",outcome=\"unauthorized\"} 2",
        "waveguide_orchestrator_decisions_total{kind=\"relay\",outcome=\"redirect\"} 1",
        "waveguide_orchestrator_decisions_total{kind=\"whep\",outcome=\"not_found\"}",
        "waveguide_orchestrator_nodes 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    let openapi = json(&client, format!("{base}/api/v1/openapi.json")).await;
    assert_eq!(openapi["openapi"], "3.1.0");
    let response = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // --- Graceful shutdown.
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(12), running)
        .await
        .expect("stops within the grace period")
        .unwrap()
        .unwrap();
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());
}
