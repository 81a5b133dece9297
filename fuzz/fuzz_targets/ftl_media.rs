#![no_main]
//! FTL media datagrams: any bytes are classified without a panic.

use libfuzzer_sys::fuzz_target;
use waveguide_inputs::ftl::media::{Declared, MediaSession};

fuzz_target!(|data: Vec<&[u8]>| {
    let mut session = MediaSession::new(Declared {
        video: Some((1234, 96)),
        audio: Some((1235, 97)),
    });
    for datagram in &data {
        let _ = session.on_datagram(datagram);
    }
});
