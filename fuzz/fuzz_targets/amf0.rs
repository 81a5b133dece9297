#![no_main]
//! AMF0 decoding is bounded by its input: any bytes decode or fail without a panic, a decode
//! never yields more than `MAX_VALUES` values (object properties included) and never nests
//! deeper than the decoder allows, and what decodes encodes back to bytes that decode to the
//! same values.

use libfuzzer_sys::fuzz_target;
use waveguide_inputs::rtmp::amf0::{self, MAX_VALUES, Value};

/// Values in `v` (itself included) and its depth.
fn size(v: &Value) -> (usize, usize) {
    let children: Vec<(usize, usize)> = match v {
        Value::Object(p) | Value::EcmaArray(p) | Value::TypedObject(_, p) => {
            p.iter().map(|(_, v)| size(v)).collect()
        }
        Value::StrictArray(items) => items.iter().map(size).collect(),
        _ => Vec::new(),
    };
    let count = 1 + children.iter().map(|c| c.0).sum::<usize>();
    let depth = 1 + children.iter().map(|c| c.1).max().unwrap_or(0);
    (count, depth)
}

fuzz_target!(|data: &[u8]| {
    let Ok(values) = amf0::decode_all(data) else {
        return;
    };
    let mut count = 0;
    for v in &values {
        let (n, depth) = size(v);
        count += n;
        assert!(depth <= 17, "depth {depth}");
    }
    assert!(count <= MAX_VALUES, "{count} values decoded");
    // Every value takes at least one input byte.
    assert!(count <= data.len());
    let encoded = amf0::encode_all(&values);
    // NaN numbers compare unequal; compare their encodings instead.
    let again = amf0::decode_all(&encoded).expect("our own encoding decodes");
    assert_eq!(amf0::encode_all(&again), encoded);
});
