#![no_main]
//! The RTMP session (handshake, chunk stream, AMF0 commands): any bytes, in any pieces, end in
//! events or an error that closes the connection, never a panic or unbounded buffering.

use libfuzzer_sys::fuzz_target;
use waveguide_inputs::rtmp::handshake::RANDOM_LEN;
use waveguide_inputs::rtmp::session::{Event, Session, SessionConfig};

fuzz_target!(|pieces: Vec<&[u8]>| {
    let mut session = Session::new(SessionConfig::default(), 0, Box::new([3; RANDOM_LEN]));
    for piece in pieces {
        if session.receive(piece).is_err() {
            return;
        }
        while let Some(event) = session.poll_event() {
            if let Event::Publish { .. } = event {
                session.accept_publish();
            }
        }
        while session.take_output().is_some() {}
    }
});
