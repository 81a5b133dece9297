#![no_main]
//! The FTL control channel never panics and never buffers more than a line's worth, whatever
//! arrives, in whatever pieces.

use libfuzzer_sys::fuzz_target;
use waveguide_inputs::ftl::control::{ControlChannel, ControlEvent};

fuzz_target!(|data: &[u8]| {
    let mut channel = ControlChannel::new(vec![7; 128]);
    // Split the input where it says so (first byte), so partial reads are exercised.
    let (split, rest) = match data.split_first() {
        Some((s, rest)) => (*s as usize, rest),
        None => return,
    };
    let cut = if rest.is_empty() { 0 } else { split % rest.len() };
    for piece in [&rest[..cut], &rest[cut..]] {
        match channel.feed(piece) {
            Ok(events) => {
                for e in events {
                    match e {
                        ControlEvent::Connect { .. } => channel.accept(),
                        ControlEvent::Ready => channel.media_port(8085),
                        _ => {}
                    }
                }
            }
            Err(_) => return,
        }
        let _ = channel.take_replies();
    }
});
