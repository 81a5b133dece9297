//! The FTL control channel (TCP, port 8084) as a sans-IO state machine: bytes in, replies and
//! events out. It owns the line protocol and nothing else: no sockets, no clock, no keys.
//!
//! `HMAC` → `200 <hex challenge>`; `CONNECT <channel> $<hex HMAC-SHA512(key, challenge)>` →
//! `200` or `405`; attribute lines (`Key: Value`, no reply); `.` → `200 hi. Use UDP port N`;
//! `PING <channel>` → `201`; `DISCONNECT`. Clients end lines with `\r\n\r\n`; replies end with
//! `\n` only, because `ftl_app` fails to parse `\r\n`.

use std::collections::HashMap;

/// Longest line accepted; real lines are under 300 bytes.
const MAX_LINE: usize = 4096;
/// Most attribute lines accepted.
const MAX_ATTRIBUTES: usize = 64;

/// What the connection owner must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// Check `hmac` for `channel` against the challenge, then call [`ControlChannel::accept`]
    /// or [`ControlChannel::reject`].
    Connect {
        /// Channel id.
        channel: u32,
        /// The client's HMAC-SHA512 of the challenge, decoded.
        hmac: Vec<u8>,
    },
    /// The attributes are complete; start media and call [`ControlChannel::media_port`].
    Ready,
    /// Keep-alive.
    Ping,
    /// The client ends the stream.
    Disconnect,
}

/// Why the connection must close.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// A line longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// Not UTF-8 or not a command of this protocol in this state.
    #[error("unexpected line `{0}`")]
    Unexpected(String),
    /// Too many attribute lines.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHmac,
    AwaitConnect,
    Authorizing,
    Attributes,
    AwaitPort,
    Streaming,
}

/// One control connection.
#[derive(Debug)]
pub struct ControlChannel {
    state: State,
    challenge: Vec<u8>,
    buffer: Vec<u8>,
    replies: Vec<u8>,
    attributes: HashMap<String, String>,
    channel: Option<u32>,
}

impl ControlChannel {
    /// A connection that will send `challenge` (128 random bytes) when asked for HMAC.
    pub fn new(challenge: Vec<u8>) -> Self {
        Self {
            state: State::AwaitHmac,
            challenge,
            buffer: Vec::new(),
            replies: Vec::new(),
            attributes: HashMap::new(),
            channel: None,
        }
    }

    /// The challenge the client signs.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// The channel id once `CONNECT` was seen.
    pub fn channel(&self) -> Option<u32> {
        self.channel
    }

    /// An attribute the client declared (`VideoIngestSSRC`, `VideoPayloadType` …).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Feeds received bytes; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ControlEvent>, ControlError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = std::str::from_utf8(&line)
                .map_err(|_| ControlError::Unexpected("<not UTF-8>".into()))?
                .trim();
            if line.is_empty() {
                continue;
            }
            if let Some(e) = self.line(line)? {
                events.push(e);
            }
        }
        if self.buffer.len() > MAX_LINE {
            return Err(ControlError::LineTooLong);
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Result<Option<ControlEvent>, ControlError> {
        let unexpected = || ControlError::Unexpected(line.chars().take(80).collect());
        match self.state {
            State::AwaitHmac if line == "HMAC" => {
                let reply = format!("200 {}\n", hex::encode(&self.challenge));
                self.replies.extend_from_slice(reply.as_bytes());
                self.state = State::AwaitConnect;
                Ok(None)
            }
            State::AwaitConnect => {
                let rest = line.strip_prefix("CONNECT ").ok_or_else(unexpected)?;
                let (channel, hmac) = rest.split_once(' ').ok_or_else(unexpected)?;
                let channel: u32 = channel.parse().map_err(|_| unexpected())?;
                let hmac = hex::decode(hmac.trim_start_matches('$')).map_err(|_| unexpected())?;
                self.channel = Some(channel);
                self.state = State::Authorizing;
                Ok(Some(ControlEvent::Connect { channel, hmac }))
            }
            State::Attributes if line == "." => {
                self.state = State::AwaitPort;
                Ok(Some(ControlEvent::Ready))
            }
            State::Attributes => {
                let (k, v) = line.split_once(':').ok_or_else(unexpected)?;
                if self.attributes.len() >= MAX_ATTRIBUTES {
                    return Err(ControlError::TooManyAttributes);
                }
                self.attributes
                    .insert(k.trim().to_owned(), v.trim().to_owned());
                Ok(None)
            }
            State::Streaming | State::AwaitPort if line.starts_with("PING") => {
                self.replies.extend_from_slice(b"201\n");
                Ok(Some(ControlEvent::Ping))
            }
            _ if line == "DISCONNECT" => Ok(Some(ControlEvent::Disconnect)),
            _ => Err(unexpected()),
        }
    }

    /// The key checked out: `200`, then attributes follow.
    pub fn accept(&mut self) {
        if self.state == State::Authorizing {
            self.replies.extend_from_slice(b"200\n");
            self.state = State::Attributes;
        }
    }

    /// Wrong key: `405`; the owner closes the connection after sending it.
    pub fn reject(&mut self) {
        self.replies.extend_from_slice(b"405\n");
    }

    /// Refuses with another FTL reply code (`403`/`404`: the declared audio/video SSRC is
    /// in use); the owner closes the connection after sending it.
    pub fn refuse(&mut self, code: u16) {
        self.replies
            .extend_from_slice(format!("{code}\n").as_bytes());
    }

    /// Media is expected on UDP `port`.
    pub fn media_port(&mut self, port: u16) {
        if self.state == State::AwaitPort {
            self.replies
                .extend_from_slice(format!("200 hi. Use UDP port {port}\n").as_bytes());
            self.state = State::Streaming;
        }
    }

    /// Bytes to send to the client.
    pub fn take_replies(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_handshake_in_pieces() {
        let mut c = ControlChannel::new(vec![1, 2, 3]);
        assert!(c.feed(b"HM").unwrap().is_empty());
        assert!(c.feed(b"AC\r\n\r\n").unwrap().is_empty());
        assert_eq!(c.take_replies(), b"200 010203\n");
        let e = c.feed(b"CONNECT 1234 $abcd\r\n\r\n").unwrap();
        assert_eq!(
            e,
            vec![ControlEvent::Connect {
                channel: 1234,
                hmac: vec![0xab, 0xcd]
            }]
        );
        c.accept();
        assert_eq!(c.take_replies(), b"200\n");
        let e = c
            .feed(b"ProtocolVersion: 0.9\r\n\r\nVideoIngestSSRC: 1234\r\n\r\n.\r\n\r\n")
            .unwrap();
        assert_eq!(e, vec![ControlEvent::Ready]);
        assert_eq!(c.attribute("VideoIngestSSRC"), Some("1234"));
        c.media_port(8085);
        assert_eq!(c.take_replies(), b"200 hi. Use UDP port 8085\n");
        assert_eq!(
            c.feed(b"PING 1234\r\n\r\n").unwrap(),
            vec![ControlEvent::Ping]
        );
        assert_eq!(c.take_replies(), b"201\n");
        assert_eq!(
            c.feed(b"DISCONNECT\r\n\r\n").unwrap(),
            vec![ControlEvent::Disconnect]
        );
    }

    #[test]
    fn garbage_and_oversized_lines_fail() {
        let mut c = ControlChannel::new(vec![0]);
        assert!(c.feed(b"GET / HTTP/1.1\r\n").is_err());
        let mut c = ControlChannel::new(vec![0]);
        assert_eq!(c.feed(&[b'a'; 5000]), Err(ControlError::LineTooLong));
        let mut c = ControlChannel::new(vec![0]);
        c.feed(b"HMAC\r\n").unwrap();
        assert!(c.feed(b"CONNECT x $zz\r\n").is_err());
    }
}
