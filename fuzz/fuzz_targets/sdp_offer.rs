#![no_main]
//! A WHIP/WHEP offer body: refused or answered, never a panic in our code or the engine's.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = std::str::from_utf8(data) {
        waveguide_control::engine::fuzzing::answer_offers(sdp);
    }
});
