//! RTMP commands: the AMF0 commands a publisher sends (`connect`, `releaseStream`, `FCPublish`,
//! `createStream`, `publish`, `FCUnpublish`, `deleteStream`, `@setDataFrame`) parsed into a
//! type, and the `_result` / `_error` / `onStatus` replies OBS, ffmpeg and GStreamer wait for.
//!
//! Owns the shape of commands and replies; the order they happen in is `session`'s.

use super::amf0::{Value, object, string};
use super::error::RtmpError;

/// A command from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Opens the application (`app` is the first URL path segment).
    Connect {
        /// Transaction id to answer.
        transaction: f64,
        /// The application, e.g. `live`.
        app: String,
        /// Requested AMF encoding (0 or 3); echoed back.
        object_encoding: f64,
    },
    /// `releaseStream` / `FCPublish`: preparation calls from OBS and ffmpeg.
    Prepare {
        /// Transaction id to answer.
        transaction: f64,
    },
    /// Asks for a message stream id.
    CreateStream {
        /// Transaction id to answer.
        transaction: f64,
    },
    /// Starts publishing `name` (the stream key) on message stream `stream_id`.
    Publish {
        /// Transaction id (usually 0 or 5; the answer is an `onStatus`).
        transaction: f64,
        /// The message stream it was sent on.
        stream_id: u32,
        /// The publishing name: here, the stream key. Never logged.
        name: String,
    },
    /// `FCUnpublish`, `deleteStream` or `closeStream`: the publisher is done.
    Unpublish {
        /// Transaction id to answer (0 when no answer is expected).
        transaction: f64,
    },
    /// `play` and friends: this server takes no players over RTMP.
    Play {
        /// Transaction id to answer.
        transaction: f64,
    },
    /// Anything else; answered with `_error` when it has a transaction id.
    Other {
        /// Command name (for the log).
        name: String,
        /// Transaction id.
        transaction: f64,
    },
}

/// Parses a command message's values.
pub fn parse(stream_id: u32, values: &[Value]) -> Result<Command, RtmpError> {
    let name = values
        .first()
        .and_then(Value::as_str)
        .ok_or(RtmpError::MalformedCommand)?;
    // Some clients send the transaction id as null for notifications; treat as 0.
    let transaction = values.get(1).and_then(Value::as_f64).unwrap_or(0.0);
    let command_object = values.get(2);
    let arg = |i: usize| values.get(i).and_then(Value::as_str);
    Ok(match name {
        "connect" => {
            let obj = command_object.ok_or(RtmpError::MalformedCommand)?;
            Command::Connect {
                transaction,
                app: obj
                    .get("app")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                object_encoding: obj
                    .get("objectEncoding")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            }
        }
        "releaseStream" | "FCPublish" => Command::Prepare { transaction },
        "createStream" => Command::CreateStream { transaction },
        "publish" => Command::Publish {
            transaction,
            stream_id,
            name: arg(3).unwrap_or_default().to_owned(),
        },
        "FCUnpublish" | "deleteStream" | "closeStream" => Command::Unpublish { transaction },
        "play" | "play2" => Command::Play { transaction },
        other => Command::Other {
            name: other.chars().take(64).collect(),
            transaction,
        },
    })
}

/// `_result` for `connect`.
pub fn connect_result(transaction: f64, object_encoding: f64) -> Vec<Value> {
    vec![
        string("_result"),
        Value::Number(transaction),
        object([
            ("fmsVer", string("FMS/3,5,7,7009")),
            ("capabilities", Value::Number(31.0)),
            ("mode", Value::Number(1.0)),
        ]),
        object([
            ("level", string("status")),
            ("code", string("NetConnection.Connect.Success")),
            ("description", string("Connection succeeded.")),
            ("objectEncoding", Value::Number(object_encoding)),
        ]),
    ]
}

/// `_error` for a `connect` to an application we do not serve.
pub fn connect_rejected(transaction: f64, description: &str) -> Vec<Value> {
    vec![
        string("_error"),
        Value::Number(transaction),
        Value::Null,
        object([
            ("level", string("error")),
            ("code", string("NetConnection.Connect.Rejected")),
            ("description", string(description)),
        ]),
    ]
}

/// `_result` carrying one value (`createStream`'s stream id; `undefined` for the rest).
pub fn result(transaction: f64, value: Value) -> Vec<Value> {
    vec![
        string("_result"),
        Value::Number(transaction),
        Value::Null,
        value,
    ]
}

/// `_error` for a call we do not support.
pub fn call_failed(transaction: f64, description: &str) -> Vec<Value> {
    vec![
        string("_error"),
        Value::Number(transaction),
        Value::Null,
        object([
            ("level", string("error")),
            ("code", string("NetConnection.Call.Failed")),
            ("description", string(description)),
        ]),
    ]
}

/// Whether an `onStatus` reports progress or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `status`
    Status,
    /// `error`
    Error,
}

/// `onStatus` on a message stream (`NetStream.Publish.Start`, `…BadName` …).
pub fn on_status(level: Level, code: &str, description: &str) -> Vec<Value> {
    let level = match level {
        Level::Status => "status",
        Level::Error => "error",
    };
    vec![
        string("onStatus"),
        Value::Number(0.0),
        Value::Null,
        object([
            ("level", string(level)),
            ("code", string(code)),
            ("description", string(description)),
        ]),
    ]
}

/// What `onMetaData` says about the stream (all optional; used for readiness and the log).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// `videocodecid` as a number (7 = AVC) or FourCC string.
    pub video_codec: Option<String>,
    /// `audiocodecid` as a number (10 = AAC) or FourCC string.
    pub audio_codec: Option<String>,
    /// `width` × `height`.
    pub size: Option<(u32, u32)>,
    /// `framerate`.
    pub framerate: Option<f64>,
    /// `encoder` (e.g. `obs-output module`, `Lavf59.27.100`).
    pub encoder: Option<String>,
}

fn codec_id(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(format!("{n}")),
        Value::String(s) => Some(s.chars().take(16).collect()),
        _ => None,
    }
}

/// The `onMetaData` properties from a data message (`@setDataFrame`, `onMetaData`, props) or
/// (`onMetaData`, props); `None` for other data messages.
pub fn metadata(values: &[Value]) -> Option<Metadata> {
    let mut rest = values;
    if rest.first().and_then(Value::as_str) == Some("@setDataFrame") {
        rest = &rest[1..];
    }
    if rest.first().and_then(Value::as_str) != Some("onMetaData") {
        return None;
    }
    let props = rest.get(1)?;
    let num = |k: &str| props.get(k).and_then(Value::as_f64);
    let size = match (num("width"), num("height")) {
        (Some(w), Some(h)) if w > 0.0 && h > 0.0 => Some((w as u32, h as u32)),
        _ => None,
    };
    Some(Metadata {
        video_codec: props.get("videocodecid").and_then(codec_id),
        audio_codec: props.get("audiocodecid").and_then(codec_id),
        size,
        framerate: num("framerate"),
        encoder: props
            .get("encoder")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_publish_sequence() {
        let connect = vec![
            string("connect"),
            Value::Number(1.0),
            object([
                ("app", string("live")),
                ("objectEncoding", Value::Number(0.0)),
            ]),
        ];
        assert_eq!(
            parse(0, &connect).unwrap(),
            Command::Connect {
                transaction: 1.0,
                app: "live".into(),
                object_encoding: 0.0
            }
        );
        let publish = vec![
            string("publish"),
            Value::Number(5.0),
            Value::Null,
            string("secret-key"),
            string("live"),
        ];
        assert_eq!(
            parse(1, &publish).unwrap(),
            Command::Publish {
                transaction: 5.0,
                stream_id: 1,
                name: "secret-key".into()
            }
        );
        assert!(matches!(
            parse(0, &[string("FCPublish"), Value::Number(3.0)]).unwrap(),
            Command::Prepare { transaction: 3.0 }
        ));
        assert!(parse(0, &[Value::Number(1.0)]).is_err());
        assert!(parse(0, &[string("connect"), Value::Number(1.0)]).is_err());
    }

    #[test]
    fn reads_metadata_from_set_data_frame() {
        let values = vec![
            string("@setDataFrame"),
            string("onMetaData"),
            Value::EcmaArray(vec![
                ("width".into(), Value::Number(640.0)),
                ("height".into(), Value::Number(480.0)),
                ("videocodecid".into(), Value::Number(7.0)),
                ("audiocodecid".into(), Value::Number(10.0)),
                ("framerate".into(), Value::Number(30.0)),
                ("encoder".into(), string("Lavf59.27.100")),
            ]),
        ];
        let m = metadata(&values).unwrap();
        assert_eq!(m.size, Some((640, 480)));
        assert_eq!(m.video_codec.as_deref(), Some("7"));
        assert_eq!(m.audio_codec.as_deref(), Some("10"));
        assert!(metadata(&[string("|RtmpSampleAccess")]).is_none());
    }
}
