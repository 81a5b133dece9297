use super::*;

fn auth(service: &Service, request: PublishRequest<'_>) -> Result<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(service.authorize_publish(IngestProtocol::Whip, request))
}

fn static_service() -> Service {
    let hashed = StreamKeyEntry {
        name: "hashed".into(),
        key: None,
        key_sha256: Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"secret2",
        ))),
        ftl_channel: None,
    };
    Service::new(ServiceConfig {
        kind: ServiceKind::Static,
        streams: vec![StreamKeyEntry::with_key("demo", "demo-key"), hashed],
        ..ServiceConfig::default()
    })
    .expect("valid config")
}

#[test]
fn static_key_resolves_stream() {
    let s = static_service();
    let req = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: None,
        key: Some("demo-key"),
    };
    assert_eq!(auth(&s, req).unwrap(), "demo");
    let req = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: Some("demo"),
        key: Some("demo-key"),
    };
    assert_eq!(auth(&s, req).unwrap(), "demo");
    let req = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: None,
        key: Some("secret2"),
    };
    assert_eq!(auth(&s, req).unwrap(), "hashed");
}

#[test]
fn static_rejects_wrong_or_missing_key() {
    let s = static_service();
    let wrong = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: None,
        key: Some("nope"),
    };
    assert!(matches!(auth(&s, wrong), Err(Error::InvalidKey)));
    let other_stream = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: Some("hashed"),
        key: Some("demo-key"),
    };
    assert!(matches!(auth(&s, other_stream), Err(Error::InvalidKey)));
    let missing = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: Some("demo"),
        key: None,
    };
    assert!(matches!(auth(&s, missing), Err(Error::MissingKey)));
}

#[test]
fn open_names_stream_by_url_or_key() {
    let s = Service::new(ServiceConfig::default()).unwrap();
    assert!(s.is_open());
    let by_url = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: Some("a"),
        key: None,
    };
    assert_eq!(auth(&s, by_url).unwrap(), "a");
    let by_key = PublishRequest {
        remote_addr: None,
        ticket: None,
        stream: None,
        key: Some("b"),
    };
    assert_eq!(auth(&s, by_key).unwrap(), "b");
}

#[test]
fn debug_never_shows_key() {
    let e = StreamKeyEntry::with_key("demo", "demo-key");
    assert!(!format!("{e:?}").contains("demo-key"));
}

#[test]
fn ticket_replaces_the_key() {
    use crate::cluster::{TicketKey, TicketScope};
    use std::time::{Duration, SystemTime};
    let key = TicketKey::new("cluster-secret");
    let s = static_service().with_cluster_token("cluster-secret");
    let ticket = key.sign(
        TicketScope::Publish,
        "demo",
        Duration::from_secs(30),
        SystemTime::now(),
    );
    let req = PublishRequest {
        remote_addr: None,
        ticket: Some(&ticket),
        stream: Some("demo"),
        key: None,
    };
    assert_eq!(auth(&s, req).unwrap(), "demo");
    let other = PublishRequest {
        stream: Some("hashed"),
        ..req
    };
    assert_eq!(auth(&s, other).unwrap_err().http_status(), 401);
    // Without the cluster token configured no ticket is accepted.
    assert_eq!(auth(&static_service(), req).unwrap_err().http_status(), 401);
    let relay = key.sign(
        TicketScope::Relay,
        "demo",
        Duration::from_secs(30),
        SystemTime::now(),
    );
    let req = PublishRequest {
        ticket: Some(&relay),
        ..req
    };
    assert_eq!(auth(&s, req).unwrap_err().http_status(), 401);
}
