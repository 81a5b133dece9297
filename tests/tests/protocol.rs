//! WHIP/WHEP over HTTP against the real edge: every status code of the contract, CORS, and the
//! REST and health endpoints. Offers come from the `rtc` crate; no media flows here (the
//! browser/aiortc suites cover media).

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue};
use std::time::Duration;
use waveguide_tests::edge::{http_client, static_config};
use waveguide_tests::offer::{OfferSpec, Video, make_offer, sdp_attr};
use waveguide_tests::{EdgeProcess, poll_until};

const ORIGIN: &str = "http://127.0.0.1:9";
const SDP: &str = "application/sdp";

fn post_offer(
    client: &Client,
    url: &str,
    key: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::blocking::Body>,
) -> Response {
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .header("origin", ORIGIN)
        .body(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
}

/// Lower-cased, comma-separated header items (`Access-Control-*` lists).
fn header_items(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A 201 from WHIP/WHEP: answer SDP, absolute Location, ETag, exposed headers.
struct Created {
    location: String,
    etag: String,
    answer: String,
}

fn expect_created(resp: Response, edge: &EdgeProcess, what: &str) -> Created {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().unwrap_or_default();
    assert_eq!(status, 201, "{what}: expected 201, body: {body}");
    let ct = header(&headers, "content-type").unwrap_or_default();
    assert!(ct.starts_with(SDP), "{what}: content-type {ct:?}");
    assert!(body.starts_with("v=0"), "{what}: answer is not SDP: {body}");
    let location = header(&headers, "location")
        .unwrap_or_else(|| panic!("{what}: no Location"))
        .to_owned();
    assert!(
        location.starts_with(&edge.base_url()),
        "{what}: Location {location:?} is not an absolute URL on {}",
        edge.base_url()
    );
    let etag = header(&headers, "etag")
        .unwrap_or_else(|| panic!("{what}: no ETag"))
        .to_owned();
    let exposed = header_items(&headers, "access-control-expose-headers");
    for h in ["location", "etag", "link"] {
        assert!(
            exposed.iter().any(|e| e == h || e == "*"),
            "{what}: Access-Control-Expose-Headers {exposed:?} lacks {h}"
        );
    }
    Created {
        location,
        etag,
        answer: body,
    }
}

fn publish_demo(edge: &EdgeProcess, client: &Client) -> Created {
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = post_offer(
        client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer,
    );
    expect_created(resp, edge, "WHIP publish")
}

fn delete(client: &Client, url: &str) -> u16 {
    client
        .delete(url)
        .header("origin", ORIGIN)
        .send()
        .unwrap_or_else(|e| panic!("DELETE {url}: {e}"))
        .status()
        .as_u16()
}

fn status_of(resp: Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

#[test]
fn health_ready_and_metrics_answer() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    for path in ["/healthz", "/readyz"] {
        let status = client.get(edge.url(path)).send().expect(path).status();
        assert_eq!(status, 200, "GET {path}");
    }
    let resp = client.get(edge.url("/metrics")).send().expect("/metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().expect("metrics body");
    assert!(
        text.lines().any(|l| l.starts_with("waveguide_")),
        "no waveguide_ metric in:\n{text}"
    );
}

#[test]
fn whip_publish_is_201_and_delete_is_200_then_404() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let created = publish_demo(&edge, &client);
    assert!(
        created.answer.contains("m=video") && created.answer.contains("m=audio"),
        "answer lacks a media section:\n{}",
        created.answer
    );
    assert!(
        created.answer.contains("a=ice-lite"),
        "the edge is ICE-lite:\n{}",
        created.answer
    );
    assert!(
        created.answer.contains("a=candidate:") && created.answer.contains("127.0.0.1"),
        "answer has no 127.0.0.1 host candidate:\n{}",
        created.answer
    );
    assert!(!created.etag.is_empty());

    assert_eq!(delete(&client, &created.location), 200, "DELETE session");
    assert_eq!(delete(&client, &created.location), 404, "DELETE again");
}

/// The reconnect grace is for publishers that vanish; a DELETE is the streamer saying "stop".
#[test]
fn publisher_delete_ends_the_stream_at_once() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let created = publish_demo(&edge, &client);
    assert!(
        edge.stream_info("demo").is_some(),
        "demo live after publish"
    );
    assert_eq!(delete(&client, &created.location), 200, "DELETE session");
    // The stream ended with its publisher's DELETE, so the next publisher is welcome.
    poll_until(
        "the stream to end after DELETE",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || edge.stream_info("demo").is_none().then_some(()),
    );
    let again = publish_demo(&edge, &client);
    assert_eq!(delete(&client, &again.location), 200);
}

#[test]
fn whip_by_bearer_key_alone_picks_the_stream() {
    let edge = EdgeProcess::start(&static_config(
        &[("demo", "demo-key"), ("other", "other-key")],
        15,
    ));
    let client = http_client();
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = post_offer(&client, &edge.url("/whip"), Some("other-key"), SDP, offer);
    let created = expect_created(resp, &edge, "POST /whip");
    let info = poll_until(
        "stream `other` in the REST API",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || edge.stream_info("other"),
    );
    assert_eq!(info["name"], "other", "{info}");
    assert!(
        edge.stream_info("demo").is_none(),
        "`demo` must not be live"
    );
    assert_eq!(delete(&client, &created.location), 200);
}

#[test]
fn whip_without_or_with_wrong_key_is_401() {
    let edge = EdgeProcess::start(&static_config(
        &[("demo", "demo-key"), ("other", "other-key")],
        15,
    ));
    let client = http_client();
    let cases: [(&str, Option<&str>); 5] = [
        ("/whip/demo", None),
        ("/whip/demo", Some("wrong-key")),
        // A valid key, but for another stream.
        ("/whip/demo", Some("other-key")),
        ("/whip", None),
        ("/whip", Some("wrong-key")),
    ];
    for (path, key) in cases {
        let (_pc, offer) = make_offer(&OfferSpec::publisher());
        let (status, body) = status_of(post_offer(&client, &edge.url(path), key, SDP, offer));
        assert_eq!(status, 401, "POST {path} with key {key:?}: {body}");
        assert!(
            !body.contains("demo-key") && !body.contains("other-key"),
            "a 401 must not echo stream keys: {body}"
        );
    }
    assert!(edge.stream_info("demo").is_none());
}

#[test]
fn second_publisher_on_a_live_stream_is_409() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let first = publish_demo(&edge, &client);
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let (status, body) = status_of(post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer,
    ));
    assert_eq!(status, 409, "second publisher: {body}");
    assert_eq!(delete(&client, &first.location), 200);
}

#[test]
fn malformed_sdp_is_400_with_a_reason() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    for body in ["this is not sdp", "v=0\r\nm=video\r\n", ""] {
        let (status, reason) = status_of(post_offer(
            &client,
            &edge.url("/whip/demo"),
            Some("demo-key"),
            SDP,
            body,
        ));
        assert_eq!(status, 400, "offer {body:?}: {reason}");
        assert!(!reason.trim().is_empty(), "400 for {body:?} has no reason");
    }
    let (status, reason) = status_of(post_offer(
        &client,
        &edge.url("/whep/demo"),
        None,
        SDP,
        "garbage",
    ));
    // With no live `demo`, 404 is as right as 400; anything else is not.
    assert!(
        status == 400 || status == 404,
        "WHEP garbage: {status} {reason}"
    );
}

#[test]
fn body_over_64_kib_is_413() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let mut big = offer;
    while big.len() <= 64 * 1024 + 1 {
        big.push_str("a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
    }
    let (status, body) = status_of(post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        big,
    ));
    assert_eq!(status, 413, "{body}");
    assert!(edge.stream_info("demo").is_none());
}

#[test]
fn wrong_content_type_is_415() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    for ct in [
        "text/plain",
        "application/json",
        "application/x-www-form-urlencoded",
    ] {
        let (_pc, offer) = make_offer(&OfferSpec::publisher());
        let (status, body) = status_of(post_offer(
            &client,
            &edge.url("/whip/demo"),
            Some("demo-key"),
            ct,
            offer,
        ));
        assert_eq!(status, 415, "content-type {ct}: {body}");
    }
    // No content type at all.
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = client
        .post(edge.url("/whip/demo"))
        .bearer_auth("demo-key")
        .body(offer)
        .send()
        .expect("POST without content-type");
    let (status, body) = status_of(resp);
    assert_eq!(status, 415, "no content-type: {body}");
}

fn sdpfrag(offer: &str) -> String {
    let ufrag = sdp_attr(offer, "ice-ufrag").expect("offer has ice-ufrag");
    let pwd = sdp_attr(offer, "ice-pwd").expect("offer has ice-pwd");
    format!(
        "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    )
}

#[test]
fn trickle_patch_is_204_and_unknown_sessions_are_404() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer.clone(),
    );
    let created = expect_created(resp, &edge, "WHIP publish");

    let patch = |url: &str, etag: Option<&str>| {
        let mut req = client
            .patch(url)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("origin", ORIGIN)
            .body(sdpfrag(&offer));
        if let Some(etag) = etag {
            req = req.header("if-match", etag);
        }
        status_of(req.send().expect("PATCH"))
    };
    let (status, body) = patch(&created.location, Some(&created.etag));
    assert_eq!(status, 204, "trickle PATCH with If-Match: {body}");
    let (status, body) = patch(&created.location, None);
    assert_eq!(status, 204, "trickle PATCH without If-Match: {body}");

    let unknown = format!("{}-no-such-session", created.location);
    let (status, body) = patch(&unknown, None);
    assert_eq!(status, 404, "PATCH unknown session: {body}");
    assert_eq!(delete(&client, &unknown), 404, "DELETE unknown session");
    assert_eq!(
        delete(&client, &edge.url("/whip/demo/no-such-session")),
        404
    );
    assert_eq!(
        delete(&client, &edge.url("/whep/demo/no-such-session")),
        404
    );
    assert_eq!(delete(&client, &created.location), 200);
}

#[test]
fn whep_on_an_unknown_stream_is_404() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    for stream in ["demo", "nope"] {
        let (_pc, offer) = make_offer(&OfferSpec::viewer());
        let (status, body) = status_of(post_offer(
            &client,
            &edge.url(&format!("/whep/{stream}")),
            None,
            SDP,
            offer,
        ));
        assert_eq!(status, 404, "WHEP {stream} with no publisher: {body}");
    }
}

#[test]
fn whep_viewer_is_201_and_delete_is_200() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let publisher = publish_demo(&edge, &client);
    let (_pc, offer) = make_offer(&OfferSpec::viewer());
    let resp = post_offer(&client, &edge.url("/whep/demo"), None, SDP, offer);
    let viewer = expect_created(resp, &edge, "WHEP watch");
    assert!(
        viewer.answer.contains("m=video"),
        "viewer answer lacks video:\n{}",
        viewer.answer
    );
    assert_ne!(viewer.location, publisher.location);
    assert_eq!(delete(&client, &viewer.location), 200, "DELETE viewer");
    assert_eq!(
        delete(&client, &viewer.location),
        404,
        "DELETE viewer again"
    );
    assert_eq!(
        delete(&client, &publisher.location),
        200,
        "DELETE publisher"
    );
}

#[test]
fn whep_offer_without_a_common_codec_is_406_naming_the_codecs() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let (_pub_pc, offer) = make_offer(&OfferSpec {
        video: vec![Video::Vp8],
        audio: true,
        send: true,
    });
    let resp = post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer,
    );
    let publisher = expect_created(resp, &edge, "VP8 publish");
    let (_pc, offer) = make_offer(&OfferSpec {
        video: vec![Video::H264],
        audio: false,
        send: false,
    });
    let (status, body) = status_of(post_offer(
        &client,
        &edge.url("/whep/demo"),
        None,
        SDP,
        offer,
    ));
    assert!(
        status == 406 || status == 422,
        "H264-only viewer of a VP8 stream: {status} {body}"
    );
    assert!(
        body.to_ascii_uppercase().contains("VP8"),
        "the refusal should name the stream's codecs: {body}"
    );
    assert_eq!(delete(&client, &publisher.location), 200);
}

#[test]
fn cors_preflight_and_exposed_headers() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let publisher = publish_demo(&edge, &client);
    let session = publisher.location.clone();
    let cases = [
        (edge.url("/whip"), "POST"),
        (edge.url("/whip/demo"), "POST"),
        (edge.url("/whep/demo"), "POST"),
        (session.clone(), "PATCH"),
        (session.clone(), "DELETE"),
    ];
    for (url, method) in cases {
        let resp = client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://127.0.0.1:1")
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type, if-match",
            )
            .send()
            .unwrap_or_else(|e| panic!("OPTIONS {url}: {e}"));
        let status = resp.status();
        let h = resp.headers().clone();
        assert_eq!(status, 204, "OPTIONS {url}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("*"),
            "OPTIONS {url}: allow-origin"
        );
        let methods = header_items(&h, "access-control-allow-methods");
        assert!(
            methods.iter().any(|m| m == &method.to_ascii_lowercase()),
            "OPTIONS {url}: allow-methods {methods:?} lacks {method}"
        );
        let allowed = header_items(&h, "access-control-allow-headers");
        for name in ["authorization", "content-type", "if-match"] {
            // `*` does not cover Authorization in the Fetch spec, so it must be named.
            assert!(
                allowed.iter().any(|a| a == name),
                "OPTIONS {url}: allow-headers {allowed:?} lacks {name}"
            );
        }
    }
    assert_eq!(delete(&client, &session), 200);
}

#[test]
fn streams_api_describes_the_live_stream() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let resp = client
        .get(edge.url("/api/v1/streams"))
        .send()
        .expect("GET streams");
    assert_eq!(resp.status(), 200);
    let list: serde_json::Value = resp.json().expect("streams JSON");
    assert_eq!(list, serde_json::json!([]), "no streams before a publish");

    let (_pc, offer) = make_offer(&OfferSpec {
        video: vec![Video::H264],
        audio: true,
        send: true,
    });
    let resp = post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer,
    );
    let publisher = expect_created(resp, &edge, "H264 publish");

    let list: serde_json::Value = client
        .get(edge.url("/api/v1/streams"))
        .send()
        .expect("GET streams")
        .json()
        .expect("streams JSON");
    let items = list.as_array().expect("an array");
    assert_eq!(items.len(), 1, "{list}");
    let demo = &items[0];
    assert_eq!(demo["name"], "demo", "{demo}");
    assert_eq!(demo["protocol"], "whip", "{demo}");
    assert!(demo["viewers"].is_u64(), "viewers: {demo}");
    assert!(demo["uptime_secs"].is_number(), "uptime_secs: {demo}");
    let tracks = demo["tracks"].as_array().expect("tracks array");
    let kind_codec = |kind: &str| {
        tracks
            .iter()
            .find(|t| t["kind"] == kind)
            .map(|t| t["codec"].as_str().unwrap_or_default().to_ascii_uppercase())
    };
    assert_eq!(kind_codec("video").as_deref(), Some("H264"), "{demo}");
    assert_eq!(kind_codec("audio").as_deref(), Some("OPUS"), "{demo}");

    let one = edge.stream_info("demo").expect("GET /api/v1/streams/demo");
    assert_eq!(one["name"], "demo");
    let status = client
        .get(edge.url("/api/v1/streams/nope"))
        .send()
        .expect("GET unknown stream")
        .status();
    assert_eq!(status, 404);
    assert_eq!(delete(&client, &publisher.location), 200);
}

#[test]
fn open_service_accepts_any_stream_without_a_key() {
    let edge = EdgeProcess::start("[service]\nkind = \"open\"\n");
    let client = http_client();
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = post_offer(&client, &edge.url("/whip/anything"), None, SDP, offer);
    let created = expect_created(resp, &edge, "open-mode publish");
    assert!(edge.stream_info("anything").is_some());
    assert_eq!(delete(&client, &created.location), 200);
}

#[test]
fn patch_with_new_ice_credentials_is_an_ice_restart_answer() {
    let edge = EdgeProcess::start_demo();
    let client = http_client();
    let (_pc, offer) = make_offer(&OfferSpec::publisher());
    let resp = post_offer(
        &client,
        &edge.url("/whip/demo"),
        Some("demo-key"),
        SDP,
        offer.clone(),
    );
    let created = expect_created(resp, &edge, "WHIP publish");
    let old_ufrag = sdp_attr(&created.answer, "ice-ufrag")
        .expect("answer has ice-ufrag")
        .to_owned();
    let restart = sdpfrag(&offer)
        .replace(sdp_attr(&offer, "ice-ufrag").expect("ufrag"), "rstrtUfrag")
        .replace(
            sdp_attr(&offer, "ice-pwd").expect("pwd"),
            "restartPasswordOf22chars+",
        );
    let resp = client
        .patch(&created.location)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "*")
        .body(restart)
        .send()
        .expect("PATCH restart");
    let (status, body) = status_of(resp);
    assert_eq!(status, 200, "ICE restart PATCH: {body}");
    let new_ufrag = sdp_attr(&body, "ice-ufrag").expect("restart answer has ice-ufrag");
    assert_ne!(new_ufrag, old_ufrag, "an ICE restart gets new credentials");
    assert!(sdp_attr(&body, "ice-pwd").is_some(), "{body}");
    assert_eq!(delete(&client, &created.location), 200);
}
