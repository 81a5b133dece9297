#![no_main]
//! FLV audio/video bodies (AVC sequence headers, NAL units, AAC configs and frames) into the
//! RTMP publisher: RTP out or a media error, never a panic.

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use waveguide_inputs::rtmp::publisher::Publisher;

fuzz_target!(|messages: Vec<(bool, u32, &[u8])>| {
    let mut publisher = Publisher::new(1, 2, (0, 0));
    let mut out = Vec::new();
    let mut started = false;
    for (video, ts, body) in messages {
        let body = Bytes::copy_from_slice(body);
        let result = if video {
            publisher.on_video(ts, body, &mut out)
        } else {
            publisher.on_audio(ts, body, &mut out)
        };
        if result.is_err() {
            continue;
        }
        if !started && publisher.is_ready() {
            started = publisher.start(&mut out).is_ok();
        }
        out.clear();
    }
});
