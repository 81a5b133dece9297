//! A scripted client (what ffmpeg and OBS send, in their order) against the session, with the
//! server's replies read back through our own chunk reader.

use super::*;
use crate::rtmp::amf0::{self, object, string};
use crate::rtmp::chunk_read::Message;
use crate::rtmp::handshake::{PACKET_LEN, VERSION};

struct Client {
    writer: ChunkWriter,
    reader: ChunkReader,
    /// Server bytes not yet parsed (after the handshake).
    from_server: BytesMut,
    handshake_left: usize,
}

impl Client {
    fn new() -> Self {
        Self {
            writer: ChunkWriter::new(),
            reader: ChunkReader::new(1 << 20, 1 << 20),
            from_server: BytesMut::new(),
            handshake_left: 1 + 2 * PACKET_LEN,
        }
    }

    fn handshake() -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&[0u8; PACKET_LEN]);
        v.extend_from_slice(&[0u8; PACKET_LEN]); // C2
        v
    }

    fn command(&self, stream_id: u32, values: &[Value]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let body = amf0::encode_all(values);
        self.writer
            .write(&mut out, 3, 0, message::COMMAND_AMF0, stream_id, &body);
        out.to_vec()
    }

    fn raw(&self, csid: u32, ts: u32, ty: u8, stream_id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.writer.write(&mut out, csid, ts, ty, stream_id, body);
        out.to_vec()
    }

    /// Every message the server has sent so far.
    fn messages(&mut self, session: &mut Session) -> Vec<Message> {
        while let Some(b) = session.take_output() {
            self.from_server.extend_from_slice(&b);
        }
        let skip = self.handshake_left.min(self.from_server.len());
        let _ = self.from_server.split_to(skip);
        self.handshake_left -= skip;
        let mut out = Vec::new();
        while let Read::Chunk(n, m) = self.reader.read(&self.from_server).unwrap() {
            let _ = self.from_server.split_to(n);
            if let Some(m) = m {
                if m.type_id == message::SET_CHUNK_SIZE {
                    let size = u32::from_be_bytes([
                        m.payload[0],
                        m.payload[1],
                        m.payload[2],
                        m.payload[3],
                    ]);
                    self.reader.set_chunk_size(size).unwrap();
                }
                out.push(m);
            }
        }
        out
    }
}

fn session() -> Session {
    Session::new(SessionConfig::default(), 0, Box::new([7; RANDOM_LEN]))
}

fn commands_in(messages: &[Message]) -> Vec<Vec<Value>> {
    messages
        .iter()
        .filter(|m| m.type_id == message::COMMAND_AMF0)
        .map(|m| amf0::decode_all(&m.payload).unwrap())
        .collect()
}

fn code_of(values: &[Value]) -> Option<&str> {
    values.get(3)?.get("code")?.as_str()
}

fn events(session: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

/// Feeds `bytes` to the session in pieces of `step`.
fn feed(session: &mut Session, bytes: &[u8], step: usize) {
    for piece in bytes.chunks(step) {
        session.receive(piece).unwrap();
    }
}

fn connect_and_publish(s: &mut Session, c: &mut Client, step: usize) -> Vec<Event> {
    let mut script = Client::handshake();
    script.extend(c.raw(2, 0, message::SET_CHUNK_SIZE, 0, &4096u32.to_be_bytes()));
    c.writer.set_chunk_size(4096);
    script.extend(c.command(
        0,
        &[
            string("connect"),
            Value::Number(1.0),
            object([
                ("app", string("live")),
                ("type", string("nonprivate")),
                ("tcUrl", string("rtmp://127.0.0.1:1935/live")),
            ]),
        ],
    ));
    script.extend(c.command(
        0,
        &[
            string("releaseStream"),
            Value::Number(2.0),
            Value::Null,
            string("k"),
        ],
    ));
    script.extend(c.command(
        0,
        &[
            string("FCPublish"),
            Value::Number(3.0),
            Value::Null,
            string("k"),
        ],
    ));
    script.extend(c.command(
        0,
        &[string("createStream"), Value::Number(4.0), Value::Null],
    ));
    script.extend(c.command(
        1,
        &[
            string("publish"),
            Value::Number(5.0),
            Value::Null,
            string("the-key"),
            string("live"),
        ],
    ));
    feed(s, &script, step);
    events(s)
}

#[test]
fn ffmpeg_publish_sequence_with_split_reads() {
    for step in [1usize, 13, 1537, 100_000] {
        let mut s = session();
        let mut c = Client::new();
        let ev = connect_and_publish(&mut s, &mut c, step);
        assert_eq!(
            ev,
            vec![
                Event::Connected,
                Event::Publish {
                    key: "the-key".into()
                }
            ],
            "step {step}"
        );
        let replies = c.messages(&mut s);
        let types: Vec<u8> = replies.iter().map(|m| m.type_id).collect();
        assert_eq!(
            &types[..3],
            &[
                message::WINDOW_ACK_SIZE,
                message::SET_PEER_BANDWIDTH,
                message::SET_CHUNK_SIZE
            ]
        );
        let cmds = commands_in(&replies);
        assert_eq!(cmds[0][0].as_str(), Some("_result"));
        assert_eq!(code_of(&cmds[0]), Some("NetConnection.Connect.Success"));
        // releaseStream, FCPublish, createStream answered with their transaction ids.
        assert_eq!(cmds[1][1].as_f64(), Some(2.0));
        assert_eq!(cmds[2][1].as_f64(), Some(3.0));
        assert_eq!(cmds[3][1].as_f64(), Some(4.0));
        assert_eq!(cmds[3][3].as_f64(), Some(1.0), "stream id");
        assert_eq!(cmds.len(), 4, "no publish answer before the decision");

        s.accept_publish();
        let replies = c.messages(&mut s);
        assert_eq!(replies[0].type_id, message::USER_CONTROL);
        let cmds = commands_in(&replies);
        assert_eq!(cmds[0][0].as_str(), Some("onStatus"));
        assert_eq!(code_of(&cmds[0]), Some("NetStream.Publish.Start"));
        assert_eq!(replies[1].stream_id, 1);

        // Metadata and media flow as events.
        let meta = amf0::encode_all(&[
            string("@setDataFrame"),
            string("onMetaData"),
            Value::EcmaArray(vec![
                ("width".into(), Value::Number(640.0)),
                ("height".into(), Value::Number(480.0)),
            ]),
        ]);
        let mut media = c.raw(4, 0, message::DATA_AMF0, 1, &meta);
        media.extend(c.raw(6, 0, message::VIDEO, 1, &[0x17, 0, 0, 0, 0, 1, 0x64]));
        media.extend(c.raw(4, 0, message::AUDIO, 1, &[0xaf, 0, 0x12, 0x10]));
        media.extend(c.raw(6, 33, message::VIDEO, 1, &[0x27, 1, 0, 0, 0x21]));
        feed(&mut s, &media, step);
        let ev = events(&mut s);
        assert!(matches!(&ev[0], Event::Metadata(m) if m.size == Some((640, 480))));
        assert!(matches!(&ev[1], Event::Video { timestamp: 0, .. }));
        assert!(matches!(&ev[2], Event::Audio { timestamp: 0, .. }));
        assert!(matches!(&ev[3], Event::Video { timestamp: 33, payload } if payload[0] == 0x27));

        let end = [
            c.command(
                0,
                &[
                    string("FCUnpublish"),
                    Value::Number(6.0),
                    Value::Null,
                    string("k"),
                ],
            ),
            c.command(
                0,
                &[
                    string("deleteStream"),
                    Value::Number(7.0),
                    Value::Null,
                    Value::Number(1.0),
                ],
            ),
        ]
        .concat();
        feed(&mut s, &end, step);
        assert_eq!(events(&mut s), vec![Event::Unpublish]);
    }
}

#[test]
fn wrong_key_gets_bad_name_and_close() {
    let mut s = session();
    let mut c = Client::new();
    connect_and_publish(&mut s, &mut c, 4096);
    let _ = c.messages(&mut s);
    s.reject_publish("NetStream.Publish.BadName", "invalid stream key");
    assert!(s.should_close());
    let cmds = commands_in(&c.messages(&mut s));
    assert_eq!(cmds[0][0].as_str(), Some("onStatus"));
    assert_eq!(
        cmds[0][3].get("level").and_then(Value::as_str),
        Some("error")
    );
    assert_eq!(code_of(&cmds[0]), Some("NetStream.Publish.BadName"));
}

#[test]
fn unknown_app_is_rejected() {
    let mut s = session();
    let mut c = Client::new();
    let mut script = Client::handshake();
    script.extend(c.command(
        0,
        &[
            string("connect"),
            Value::Number(1.0),
            object([("app", string("vod"))]),
        ],
    ));
    feed(&mut s, &script, 4096);
    assert!(s.should_close());
    let cmds = commands_in(&c.messages(&mut s));
    assert_eq!(cmds[0][0].as_str(), Some("_error"));
    assert_eq!(code_of(&cmds[0]), Some("NetConnection.Connect.Rejected"));
}

#[test]
fn media_before_publish_is_not_an_event() {
    let mut s = session();
    let c = Client::new();
    let mut script = Client::handshake();
    script.extend(c.raw(6, 0, message::VIDEO, 1, &[0x17, 0, 0, 0, 0]));
    feed(&mut s, &script, 4096);
    assert!(events(&mut s).is_empty());
}

#[test]
fn acknowledges_the_clients_window_and_answers_pings() {
    let mut s = session();
    let mut c = Client::new();
    connect_and_publish(&mut s, &mut c, 4096);
    s.accept_publish();
    let _ = c.messages(&mut s);
    let mut bytes = c.raw(2, 0, message::WINDOW_ACK_SIZE, 0, &1000u32.to_be_bytes());
    bytes.extend(c.raw(2, 0, message::USER_CONTROL, 0, &[0, 6, 0, 0, 0, 9]));
    for _ in 0..10 {
        bytes.extend(c.raw(6, 0, message::VIDEO, 1, &[0x27; 300]));
    }
    feed(&mut s, &bytes, 4096);
    let replies = c.messages(&mut s);
    let ping: Vec<_> = replies
        .iter()
        .filter(|m| m.type_id == message::USER_CONTROL)
        .collect();
    assert_eq!(&ping[0].payload[..], &[0, 7, 0, 0, 0, 9]);
    let acks: Vec<_> = replies
        .iter()
        .filter(|m| m.type_id == message::ACKNOWLEDGEMENT)
        .collect();
    assert!(!acks.is_empty(), "an acknowledgement after 1000 bytes");
    assert_eq!(events(&mut s).len(), 10);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    // Random bytes after a good handshake, many seeds, many split points.
    let mut state = 0x1234_5678_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for _ in 0..200 {
        let mut s = session();
        let mut bytes = Client::handshake();
        let len = (next() % 3000) as usize;
        bytes.extend((0..len).map(|_| next() as u8));
        let step = 1 + (next() % 700) as usize;
        for piece in bytes.chunks(step) {
            if s.receive(piece).is_err() {
                break;
            }
        }
        while s.poll_event().is_some() {}
    }
    let mut s = session();
    assert!(s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
}

#[test]
fn small_limits_until_publish_is_accepted() {
    // Before the key is checked: a 1 MiB command is refused at its first chunk header.
    let mut s = session();
    let c = Client::new();
    let mut script = Client::handshake();
    let huge = vec![0x05u8; 1 << 20];
    script.extend(c.raw(3, 0, message::COMMAND_AMF0, 0, &huge));
    let err = s.receive(&script).unwrap_err();
    assert!(
        matches!(err, RtmpError::MessageTooLarge { max, .. } if max == 64 << 10),
        "{err}"
    );
    // Partial messages over several chunk streams hit the small budget too: two messages of
    // 60 000 bytes, each 40 000 bytes in (chunk size 40 000), hold 80 000 > 64 KiB.
    let mut s = session();
    let mut script = Client::handshake();
    script.extend(c.raw(2, 0, message::SET_CHUNK_SIZE, 0, &40_000u32.to_be_bytes()));
    for csid in 4..6u8 {
        script.extend_from_slice(&[csid, 0, 0, 0, 0x00, 0xea, 0x60, 0x09, 1, 0, 0, 0]);
        script.extend_from_slice(&[0u8; 40_000]);
    }
    let err = s.receive(&script).unwrap_err();
    assert!(
        matches!(err, RtmpError::BufferBudget(n) if n == 64 << 10),
        "{err}"
    );
    // After an accepted publish a 1 MiB keyframe is fine.
    let mut s = session();
    let mut c = Client::new();
    connect_and_publish(&mut s, &mut c, 4096);
    s.accept_publish();
    let mut frame = vec![0x17u8, 1, 0, 0, 0];
    frame.resize(1 << 20, 0x41);
    feed(&mut s, &c.raw(6, 0, message::VIDEO, 1, &frame), 65_536);
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Video { payload, .. }] if payload.len() == 1 << 20
    ));
}
