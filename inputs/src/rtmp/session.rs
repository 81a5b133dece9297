//! One RTMP connection as a sans-IO state machine: bytes in ([`Session::receive`]), bytes out
//! ([`Session::take_output`]) and events ([`Session::poll_event`]).
//!
//! Owns the handshake, the chunk stream in both directions, acknowledgements and the command
//! conversation of a publisher. It owns no socket, no clock and no stream: deciding whether a
//! `publish` is allowed is the caller's, who answers with [`Session::accept_publish`] or
//! [`Session::reject_publish`]. After every `receive`, drain `poll_event` and send
//! `take_output`; once [`Session::should_close`] is true, flush the output and close.

use super::amf0::Value;
use super::chunk_read::{ChunkReader, Read};
use super::chunk_write::ChunkWriter;
use super::commands::{self, Command, Level, Metadata};
use super::error::RtmpError;
use super::handshake::{Handshake, RANDOM_LEN};
use super::message::{self, CSID_COMMAND, CSID_CONTROL, Incoming};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Limits and names for one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The application publishers connect to (`rtmp://host/<app>/<key>`).
    pub app: String,
    /// Longest message accepted once `publish` is accepted (a keyframe of a high-bitrate
    /// stream is the largest).
    pub max_message: u32,
    /// Bytes of partial messages held across all chunk streams once `publish` is accepted.
    pub max_buffered: usize,
    /// Longest message accepted before that: until the key is checked a client has proven
    /// nothing, and the commands it needs (`connect` … `publish`) are a few hundred bytes.
    pub max_message_unauthorized: u32,
    /// Bytes of partial messages held before `publish` is accepted.
    pub max_buffered_unauthorized: usize,
    /// Chunk size we send with (announced with `Set Chunk Size`).
    pub out_chunk_size: u32,
    /// Window we ask the client to acknowledge, and the bandwidth we announce.
    pub window: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            app: "live".to_owned(),
            max_message: 8 << 20,
            max_buffered: 16 << 20,
            max_message_unauthorized: 64 << 10,
            max_buffered_unauthorized: 64 << 10,
            out_chunk_size: 4096,
            window: 2_500_000,
        }
    }
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` to our application succeeded.
    Connected,
    /// The client wants to publish with this name (the stream key; never log it). Answer with
    /// [`Session::accept_publish`] or [`Session::reject_publish`].
    Publish {
        /// The stream key.
        key: String,
    },
    /// `onMetaData`.
    Metadata(Metadata),
    /// An FLV audio tag body.
    Audio {
        /// Milliseconds.
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// An FLV video tag body.
    Video {
        /// Milliseconds (decode time).
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// The publisher said it is done (`FCUnpublish` / `deleteStream`).
    Unpublish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    /// Waiting for `connect`.
    Connecting,
    Connected,
    /// `publish` received, waiting for the caller's decision.
    Deciding {
        stream_id: u32,
    },
    Publishing {
        stream_id: u32,
    },
    Closing,
}

/// One RTMP server connection.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    handshake: Handshake,
    input: BytesMut,
    reader: ChunkReader,
    writer: ChunkWriter,
    output: BytesMut,
    events: VecDeque<Event>,
    incoming: Vec<Incoming>,
    /// Bytes received after the handshake (the acknowledgement sequence number).
    received: u64,
    acked: u64,
    /// Acknowledge every this many bytes, once the client has asked.
    ack_window: Option<u32>,
    next_stream_id: u32,
}

impl Session {
    /// A session whose S1 carries `time_ms` and `random`.
    pub fn new(config: SessionConfig, time_ms: u32, random: Box<[u8; RANDOM_LEN]>) -> Self {
        let reader = ChunkReader::new(
            config.max_message_unauthorized,
            config.max_buffered_unauthorized,
        );
        Self {
            config,
            state: State::Handshake,
            handshake: Handshake::new(time_ms, random),
            input: BytesMut::new(),
            reader,
            writer: ChunkWriter::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            incoming: Vec::new(),
            received: 0,
            acked: 0,
            ack_window: None,
            next_stream_id: 1,
        }
    }

    /// Whether the handshake has completed.
    pub fn handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// Whether the session is publishing (accepted).
    pub fn is_publishing(&self) -> bool {
        matches!(self.state, State::Publishing { .. })
    }

    /// Whether the connection should be closed once the output is flushed.
    pub fn should_close(&self) -> bool {
        self.state == State::Closing
    }

    /// Next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send, if any.
    pub fn take_output(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    /// Processes received bytes. An error means the connection must close (nothing more will
    /// be read); the output may still hold a farewell worth flushing.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), RtmpError> {
        if self.state == State::Closing {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        if self.state == State::Handshake {
            let progress = self.handshake.receive(&self.input)?;
            let _ = self.input.split_to(progress.consumed);
            if let Some(reply) = progress.reply {
                self.output.extend_from_slice(&reply);
            }
            if !progress.done {
                return Ok(());
            }
            self.state = State::Connecting;
        }
        loop {
            if self.state == State::Closing {
                self.input.clear();
                return Ok(());
            }
            match self.reader.read(&self.input)? {
                Read::NeedMore => break,
                Read::Chunk(consumed, message) => {
                    let _ = self.input.split_to(consumed);
                    self.received += consumed as u64;
                    self.maybe_acknowledge();
                    if let Some(message) = message {
                        message::classify(message, &mut self.incoming)?;
                        let incoming = std::mem::take(&mut self.incoming);
                        for m in incoming {
                            self.on_message(m)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Accepts the pending `publish`: the client may start sending media.
    pub fn accept_publish(&mut self) {
        let State::Deciding { stream_id } = self.state else {
            return;
        };
        self.state = State::Publishing { stream_id };
        // The key checked out: media messages (keyframes) may now be large.
        self.reader
            .set_limits(self.config.max_message, self.config.max_buffered);
        self.send_control(
            message::USER_CONTROL,
            &message::user_control_body(message::UC_STREAM_BEGIN, &stream_id.to_be_bytes()),
        );
        self.send_command(
            stream_id,
            &commands::on_status(Level::Status, "NetStream.Publish.Start", "Publishing."),
        );
    }

    /// Refuses the pending `publish` with an `onStatus` error (`NetStream.Publish.BadName` for
    /// a wrong key or a busy stream) and closes the connection.
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        let stream_id = match self.state {
            State::Deciding { stream_id } | State::Publishing { stream_id } => stream_id,
            _ => 1,
        };
        self.send_command(
            stream_id,
            &commands::on_status(Level::Error, code, description),
        );
        self.state = State::Closing;
    }

    /// Ends a live publish from our side (a newer publisher took the stream over).
    pub fn end_publish(&mut self, description: &str) {
        if let State::Publishing { stream_id } = self.state {
            self.send_command(
                stream_id,
                &commands::on_status(Level::Error, "NetStream.Publish.BadName", description),
            );
        }
        self.state = State::Closing;
    }

    fn maybe_acknowledge(&mut self) {
        let Some(window) = self.ack_window else {
            return;
        };
        if window > 0 && self.received - self.acked >= u64::from(window) {
            self.acked = self.received;
            // The sequence number wraps at 32 bits by definition.
            let seq = self.received as u32;
            self.send_control(message::ACKNOWLEDGEMENT, &message::u32_body(seq));
        }
    }

    fn send_control(&mut self, type_id: u8, body: &[u8]) {
        self.writer
            .write(&mut self.output, CSID_CONTROL, 0, type_id, 0, body);
    }

    fn send_command(&mut self, stream_id: u32, values: &[Value]) {
        let body = message::amf_body(values);
        self.writer.write(
            &mut self.output,
            CSID_COMMAND,
            0,
            message::COMMAND_AMF0,
            stream_id,
            &body,
        );
    }

    fn on_message(&mut self, m: Incoming) -> Result<(), RtmpError> {
        match m {
            Incoming::SetChunkSize(size) => self.reader.set_chunk_size(size)?,
            Incoming::Abort(csid) => self.reader.abort(csid),
            Incoming::WindowAckSize(w) => self.ack_window = Some(w),
            Incoming::Acknowledgement(_) | Incoming::SetPeerBandwidth | Incoming::Ignored(_) => {}
            Incoming::UserControl { event, data } => {
                if event == message::UC_PING_REQUEST {
                    let body = message::user_control_body(message::UC_PING_RESPONSE, &data);
                    self.send_control(message::USER_CONTROL, &body);
                }
            }
            Incoming::Audio { timestamp, payload } => {
                if self.is_publishing() {
                    self.events.push_back(Event::Audio { timestamp, payload });
                }
            }
            Incoming::Video { timestamp, payload } => {
                if self.is_publishing() {
                    self.events.push_back(Event::Video { timestamp, payload });
                }
            }
            Incoming::Data(values) => {
                if let Some(meta) = commands::metadata(&values)
                    && self.is_publishing()
                {
                    self.events.push_back(Event::Metadata(meta));
                }
            }
            Incoming::Command { stream_id, values } => {
                let command = commands::parse(stream_id, &values)?;
                self.on_command(command);
            }
        }
        Ok(())
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect {
                transaction,
                app,
                object_encoding,
            } => self.on_connect(transaction, &app, object_encoding),
            Command::Prepare { transaction } => {
                if transaction > 0.0 {
                    self.send_command(0, &commands::result(transaction, Value::Undefined));
                }
            }
            Command::CreateStream { transaction } => {
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.saturating_add(1);
                self.send_command(
                    0,
                    &commands::result(transaction, Value::Number(f64::from(id))),
                );
            }
            Command::Publish {
                stream_id, name, ..
            } => self.on_publish(stream_id, name),
            Command::Unpublish { .. } => {
                if self.is_publishing() {
                    self.events.push_back(Event::Unpublish);
                    self.state = State::Connected;
                }
            }
            Command::Play { transaction } => {
                self.send_command(
                    0,
                    &commands::call_failed(transaction, "this server only accepts publishers"),
                );
                self.state = State::Closing;
            }
            Command::Other { transaction, .. } => {
                if transaction > 0.0 {
                    self.send_command(0, &commands::call_failed(transaction, "unknown command"));
                }
            }
        }
    }

    fn on_connect(&mut self, transaction: f64, app: &str, object_encoding: f64) {
        if self.state != State::Connecting {
            return;
        }
        let app = app
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        if app != self.config.app {
            let description = format!(
                "unknown application; publish to /{}/<stream key>",
                self.config.app
            );
            self.send_command(0, &commands::connect_rejected(transaction, &description));
            self.state = State::Closing;
            return;
        }
        self.send_control(
            message::WINDOW_ACK_SIZE,
            &message::u32_body(self.config.window),
        );
        self.send_control(
            message::SET_PEER_BANDWIDTH,
            &message::peer_bandwidth_body(self.config.window),
        );
        self.send_control(
            message::SET_CHUNK_SIZE,
            &message::u32_body(self.config.out_chunk_size),
        );
        self.writer
            .set_chunk_size(self.config.out_chunk_size as usize);
        self.send_command(0, &commands::connect_result(transaction, object_encoding));
        self.state = State::Connected;
        self.events.push_back(Event::Connected);
    }

    fn on_publish(&mut self, stream_id: u32, name: String) {
        match self.state {
            State::Connected => {}
            State::Connecting | State::Handshake => {
                self.send_command(
                    stream_id,
                    &commands::on_status(Level::Error, "NetStream.Publish.Denied", "connect first"),
                );
                self.state = State::Closing;
                return;
            }
            _ => {
                // A second publish on one connection.
                self.send_command(
                    stream_id,
                    &commands::on_status(
                        Level::Error,
                        "NetStream.Publish.BadName",
                        "already publishing",
                    ),
                );
                return;
            }
        }
        // `key?param=value` is how some tools pass extras; the key is what comes before.
        let key = name.split('?').next().unwrap_or_default().to_owned();
        self.state = State::Deciding { stream_id };
        self.events.push_back(Event::Publish { key });
    }
}

#[cfg(test)]
mod tests;
