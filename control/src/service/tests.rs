use super::*;

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
    })
    .expect("valid config")
}

#[test]
fn static_key_resolves_stream() {
    let s = static_service();
    let req = PublishRequest {
        stream: None,
        key: Some("demo-key"),
    };
    assert_eq!(s.authorize_publish(req).unwrap(), "demo");
    let req = PublishRequest {
        stream: Some("demo"),
        key: Some("demo-key"),
    };
    assert_eq!(s.authorize_publish(req).unwrap(), "demo");
    let req = PublishRequest {
        stream: None,
        key: Some("secret2"),
    };
    assert_eq!(s.authorize_publish(req).unwrap(), "hashed");
}

#[test]
fn static_rejects_wrong_or_missing_key() {
    let s = static_service();
    let wrong = PublishRequest {
        stream: None,
        key: Some("nope"),
    };
    assert!(matches!(s.authorize_publish(wrong), Err(Error::InvalidKey)));
    let other_stream = PublishRequest {
        stream: Some("hashed"),
        key: Some("demo-key"),
    };
    assert!(matches!(
        s.authorize_publish(other_stream),
        Err(Error::InvalidKey)
    ));
    let missing = PublishRequest {
        stream: Some("demo"),
        key: None,
    };
    assert!(matches!(
        s.authorize_publish(missing),
        Err(Error::MissingKey)
    ));
}

#[test]
fn open_names_stream_by_url_or_key() {
    let s = Service::new(ServiceConfig::default()).unwrap();
    assert!(s.is_open());
    let by_url = PublishRequest {
        stream: Some("a"),
        key: None,
    };
    assert_eq!(s.authorize_publish(by_url).unwrap(), "a");
    let by_key = PublishRequest {
        stream: None,
        key: Some("b"),
    };
    assert_eq!(s.authorize_publish(by_key).unwrap(), "b");
}

#[test]
fn debug_never_shows_key() {
    let e = StreamKeyEntry::with_key("demo", "demo-key");
    assert!(!format!("{e:?}").contains("demo-key"));
}
