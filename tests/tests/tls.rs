//! TLS everywhere, with a self-signed certificate made for the run: Chromium publishes and
//! watches over `https://` WHIP/WHEP on the edge; the edge's gRPC answers over TLS (a tonic
//! client that trusts only this certificate) and refuses plaintext; an edge reports to an
//! orchestrator whose HTTP and gRPC are TLS too, and the orchestrator's `https://` redirect
//! publishes.

use std::path::PathBuf;
use std::time::Duration;
use waveguide_proto::v1::HealthCheckRequest;
use waveguide_proto::v1::module_service_client::ModuleServiceClient;
use waveguide_tests::browser::PublishOptions;
use waveguide_tests::cluster::{OrchestratorAddr, POLL, SERVICE, TOKEN};
use waveguide_tests::edge::http_client;
use waveguide_tests::{Browser, EdgeProcess, OrchestratorProcess, exclusive, poll_until, ports};

/// A certificate for 127.0.0.1/localhost and its key, written as PEM files.
struct SelfSigned {
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
}

fn self_signed(label: &str) -> SelfSigned {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("generate a self-signed certificate");
    let dir = std::env::temp_dir().join(format!("wg-tls-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    SelfSigned {
        cert,
        key,
        cert_pem,
    }
}

fn tls_lines(section: &str, tls: &SelfSigned) -> String {
    format!(
        "[{section}]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        tls.cert.display(),
        tls.key.display()
    )
}

/// Chromium publishes over https WHIP and watches over https WHEP; gRPC is TLS-only.
#[test]
fn https_whip_whep_and_grpc_over_tls() {
    let tls = self_signed("edge");
    let config = format!(
        "{}{}[cluster]\ntoken = \"{TOKEN}\"\n{SERVICE}",
        tls_lines("http", &tls),
        tls_lines("grpc", &tls),
    );
    let edge = EdgeProcess::start(&config);
    let grpc_port = edge.grpc_port();
    assert!(edge.base_url().starts_with("https://"));
    // Plain HTTP on the TLS port is not served.
    let plain = format!("http://127.0.0.1:{}/healthz", edge.http_port());
    assert!(
        http_client()
            .get(plain)
            .send()
            .is_ok_and(|r| r.status().is_success())
            .eq(&false),
        "plaintext HTTP must not be answered"
    );

    let mut browser = Browser::launch();
    let publisher = browser.open_page();
    let published = browser.publish(
        publisher,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        &PublishOptions::default(),
    );
    assert_eq!(published.status, 201, "{published:?}");
    assert!(
        published
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("https://")),
        "{published:?}"
    );
    let viewer = browser.open_page();
    let watched = browser.watch(viewer, &edge.url("/whep/demo"), 1);
    assert_eq!(watched[0].status, 201, "{:?}", watched[0]);
    browser.wait_connected(viewer, &[watched[0].id], Duration::from_secs(15));
    browser.wait_stats(
        viewer,
        watched[0].id,
        "frames over https WHEP",
        Duration::from_secs(20),
        |s| s.frames_decoded() >= 30,
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = format!("https://127.0.0.1:{grpc_port}");
        let tls_config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.cert_pem))
            .domain_name("127.0.0.1");
        let channel = tonic::transport::Endpoint::from_shared(url)
            .expect("endpoint")
            .tls_config(tls_config)
            .expect("tls config")
            .connect()
            .await
            .expect("gRPC over TLS connects");
        let mut client = ModuleServiceClient::new(channel);
        let mut request = tonic::Request::new(HealthCheckRequest {});
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("metadata"),
        );
        let health = client.health_check(request).await.expect("HealthCheck");
        assert_eq!(health.get_ref().version, env!("CARGO_PKG_VERSION"));
        let plain =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .expect("endpoint")
                .connect()
                .await;
        let refused = match plain {
            Err(_) => true,
            Ok(channel) => ModuleServiceClient::new(channel)
                .health_check(HealthCheckRequest {})
                .await
                .is_err(),
        };
        assert!(refused, "plaintext gRPC must not be answered");
    });
}

/// An orchestrator with HTTPS and TLS gRPC; an edge reports to it over TLS (trusting the
/// test CA) and the orchestrator's https redirect sends a publisher to the https edge.
#[test]
fn cluster_over_tls() {
    let _turn = exclusive();
    let tls = self_signed("cluster");
    let addr = OrchestratorAddr::new();
    let orchestrator_config = format!(
        "[http]\nlisten = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[grpc]\nlisten = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[cluster]\ntoken = \"{TOKEN}\"\nca_cert = \"{}\"\n{SERVICE}",
        addr.http,
        tls.cert.display(),
        tls.key.display(),
        addr.grpc,
        tls.cert.display(),
        tls.key.display(),
        tls.cert.display(),
    );
    let orchestrator = OrchestratorProcess::start(&orchestrator_config);
    let http = ports::free_port();
    let edge_config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{}\
         [cluster]\ntoken = \"{TOKEN}\"\nca_cert = \"{}\"\n\
         [orchestrator]\nurl = \"https://127.0.0.1:{}\"\ngrpc = \"https://127.0.0.1:{}\"\n\
         [node]\nid = \"edge-a\"\npublic_url = \"https://127.0.0.1:{http}\"\n{SERVICE}",
        tls.cert.display(),
        tls.key.display(),
        tls_lines("grpc", &tls),
        tls.cert.display(),
        addr.http,
        addr.grpc,
    );
    let edge = EdgeProcess::start_member(&edge_config);
    poll_until(
        "the orchestrator knows edge-a over TLS (and probes it over TLS)",
        Duration::from_secs(10),
        POLL,
        || {
            let nodes: serde_json::Value = http_client()
                .get(orchestrator.url("/api/v1/nodes"))
                .send()
                .ok()?
                .json()
                .ok()?;
            nodes
                .as_array()?
                .iter()
                .find(|n| n["id"] == "edge-a" && n["healthy"] == true)
                .cloned()
        },
    );
    let r = http_client()
        .post(orchestrator.url("/whip/demo"))
        .header("Authorization", "Bearer demo-key")
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .expect("POST https /whip/demo");
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap_or_default();
    assert!(
        location.starts_with(&edge.url("/whip/demo?ticket=")),
        "{location}"
    );
}
