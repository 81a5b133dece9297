#![no_main]
//! A trickle-ICE PATCH body: parsed or refused, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fragment) = std::str::from_utf8(data) {
        waveguide_control::engine::fuzzing::parse_fragment(fragment);
    }
});
