//! The generated code and the descriptor set agree with the `.proto` files.

use prost::Message as _;
use waveguide_proto::prost_types::{FileDescriptorSet, Timestamp};
use waveguide_proto::v1;

#[test]
fn descriptor_set_holds_every_service() {
    let set = FileDescriptorSet::decode(v1::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<&str> = set
        .file
        .iter()
        .filter(|file| file.package() == waveguide_proto::PACKAGE)
        .flat_map(|file| file.service.iter().map(|service| service.name()))
        .collect();
    for expected in [
        "ModuleService",
        "EntityService",
        "PipelineService",
        "WebRtcSignaling",
        "EventService",
    ] {
        assert!(services.contains(&expected), "{expected} in {services:?}");
    }
}

#[test]
fn event_round_trips() {
    let event = v1::Event {
        event_id: "0b6f7c9e-0000-4000-8000-000000000001".into(),
        node_id: "edge-1".into(),
        sequence: 7,
        at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        event: Some(v1::event::Event::StreamStarted(v1::StreamStarted {
            stream: Some(v1::StreamInfo {
                name: "demo".into(),
                protocol: v1::Protocol::Whip.into(),
                tracks: vec![v1::Track {
                    id: "video".into(),
                    kind: v1::TrackKind::Video.into(),
                    codec: "H264".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })),
    };
    let decoded = v1::Event::decode(event.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, event);
}

#[test]
fn signaling_oneofs_cover_the_exchange() {
    let request = v1::SignalingRequest {
        request_id: "1".into(),
        message: Some(v1::signaling_request::Message::Announce(v1::Announce {
            role: v1::PeerRole::Viewer.into(),
            stream: "demo".into(),
            ..Default::default()
        })),
    };
    let response = v1::SignalingResponse {
        request_id: request.request_id.clone(),
        message: Some(v1::signaling_response::Message::Error(v1::ErrorResponse {
            reason: v1::ErrorReason::StreamNotFound.into(),
            code: 5,
            message: "no stream named demo".into(),
            ..Default::default()
        })),
    };
    let decoded = v1::SignalingResponse::decode(response.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, response);
}
