//! AMF0, the value encoding of RTMP commands and metadata: decode every type a client may send,
//! encode the ones our replies use.
//!
//! Owns the wire format only; what a command means lives in `commands`. Decoding is bounded by
//! its input: nesting depth is capped, counts claimed by the input are never trusted for
//! allocation (a strict array claiming more elements than bytes remain is refused before any
//! element is read), and one decode produces at most [`MAX_VALUES`] values. A value takes about
//! 56 bytes in memory however short its encoding (`null` is one byte), so without that cap an
//! 8 MiB message of `null`s would decode to ~450 MB; with it, a decode holds at most its input's
//! string bytes plus `MAX_VALUES` values (well under 1 MiB).

use bytes::{BufMut, BytesMut};

/// Objects nested deeper than this are refused (a hostile peer could otherwise recurse us
/// off the stack with a few bytes per level).
const MAX_DEPTH: usize = 16;

/// Values (object properties included) one [`decode_all`] produces at most. `connect` carries
/// about ten, `onMetaData` a few dozen; a message needing more is refused, not decoded.
pub const MAX_VALUES: usize = 4096;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const MOVIECLIP: u8 = 0x04;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;
const DATE: u8 = 0x0b;
const LONG_STRING: u8 = 0x0c;
const UNSUPPORTED: u8 = 0x0d;
const XML_DOCUMENT: u8 = 0x0f;
const TYPED_OBJECT: u8 = 0x10;

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// IEEE 754 double.
    Number(f64),
    /// `true` / `false`.
    Boolean(bool),
    /// A string (short or long form on the wire).
    String(String),
    /// Anonymous object: ordered key/value pairs.
    Object(Vec<(String, Value)>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// A reference to an earlier complex value (index); kept, never resolved.
    Reference(u16),
    /// Associative array (what `onMetaData` usually is).
    EcmaArray(Vec<(String, Value)>),
    /// Dense array.
    StrictArray(Vec<Value>),
    /// Milliseconds since the epoch (the time zone field is ignored by every client).
    Date(f64),
    /// An XML document, as text.
    XmlDocument(String),
    /// A named class instance.
    TypedObject(String, Vec<(String, Value)>),
    /// The `unsupported` marker.
    Unsupported,
}

/// Why bytes are not AMF0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmfError {
    /// The input ended inside a value.
    #[error("AMF0 value truncated")]
    Truncated,
    /// A type marker we do not know (or AMF3's switch marker).
    #[error("unknown AMF0 type marker 0x{0:02x}")]
    UnknownMarker(u8),
    /// Objects nested deeper than we accept.
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A string that is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    NotUtf8,
    /// More values than [`MAX_VALUES`] in one message.
    #[error("AMF0 message holds more than {MAX_VALUES} values")]
    TooManyValues,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The property `key` of an object, ECMA array or typed object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) | Value::TypedObject(_, props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Decodes every value in `input` (a command's body is a sequence of values), at most
/// [`MAX_VALUES`] of them.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut budget = MAX_VALUES;
    decode_all_within(input, &mut budget)
}

/// Decodes every value in `input`, taking each from `budget` (shared by several messages
/// that are held at once, such as the data tags of one aggregate message).
pub fn decode_all_within(mut input: &[u8], budget: &mut usize) -> Result<Vec<Value>, AmfError> {
    let mut values = Vec::new();
    while !input.is_empty() {
        values.push(decode(&mut input, 0, budget)?);
    }
    Ok(values)
}

/// Decodes one value from the front of `input`, advancing it (at most [`MAX_VALUES`] values
/// inside it).
pub fn decode_one(input: &mut &[u8]) -> Result<Value, AmfError> {
    let mut budget = MAX_VALUES;
    decode(input, 0, &mut budget)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if input.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn u8_of(input: &mut &[u8]) -> Result<u8, AmfError> {
    Ok(take(input, 1)?[0])
}

fn u16_of(input: &mut &[u8]) -> Result<u16, AmfError> {
    let b = take(input, 2)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_of(input: &mut &[u8]) -> Result<u32, AmfError> {
    let b = take(input, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn f64_of(input: &mut &[u8]) -> Result<f64, AmfError> {
    let b = take(input, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(f64::from_be_bytes(a))
}

fn utf8(bytes: &[u8]) -> Result<String, AmfError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| AmfError::NotUtf8)
}

fn short_string(input: &mut &[u8]) -> Result<String, AmfError> {
    let len = u16_of(input)? as usize;
    utf8(take(input, len)?)
}

fn long_string(input: &mut &[u8]) -> Result<String, AmfError> {
    let len = u32_of(input)? as usize;
    utf8(take(input, len)?)
}

/// Takes one value from the budget.
fn spend(budget: &mut usize) -> Result<(), AmfError> {
    *budget = budget.checked_sub(1).ok_or(AmfError::TooManyValues)?;
    Ok(())
}

/// Properties up to the empty-key object-end marker.
fn properties(
    input: &mut &[u8],
    depth: usize,
    budget: &mut usize,
) -> Result<Vec<(String, Value)>, AmfError> {
    let mut props = Vec::new();
    loop {
        let key = short_string(input)?;
        if key.is_empty() && input.first() == Some(&OBJECT_END) {
            *input = &input[1..];
            return Ok(props);
        }
        let value = decode(input, depth + 1, budget)?;
        props.push((key, value));
    }
}

fn decode(input: &mut &[u8], depth: usize, budget: &mut usize) -> Result<Value, AmfError> {
    if depth > MAX_DEPTH {
        return Err(AmfError::TooDeep);
    }
    spend(budget)?;
    let marker = u8_of(input)?;
    Ok(match marker {
        NUMBER => Value::Number(f64_of(input)?),
        BOOLEAN => Value::Boolean(u8_of(input)? != 0),
        STRING => Value::String(short_string(input)?),
        OBJECT => Value::Object(properties(input, depth, budget)?),
        NULL => Value::Null,
        UNDEFINED => Value::Undefined,
        REFERENCE => Value::Reference(u16_of(input)?),
        ECMA_ARRAY => {
            // The count is a hint; the end marker is authoritative (ffmpeg writes both).
            let _count = u32_of(input)?;
            Value::EcmaArray(properties(input, depth, budget)?)
        }
        STRICT_ARRAY => {
            let count = u32_of(input)? as usize;
            // Every element takes at least its marker byte: a count beyond the bytes left is a
            // lie, refused before anything is allocated for it.
            if count > input.len() {
                return Err(AmfError::Truncated);
            }
            if count > *budget {
                return Err(AmfError::TooManyValues);
            }
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(decode(input, depth + 1, budget)?);
            }
            Value::StrictArray(items)
        }
        DATE => {
            let ms = f64_of(input)?;
            let _tz = u16_of(input)?;
            Value::Date(ms)
        }
        LONG_STRING => Value::String(long_string(input)?),
        UNSUPPORTED => Value::Unsupported,
        XML_DOCUMENT => Value::XmlDocument(long_string(input)?),
        TYPED_OBJECT => {
            let class = short_string(input)?;
            Value::TypedObject(class, properties(input, depth, budget)?)
        }
        MOVIECLIP | OBJECT_END => return Err(AmfError::UnknownMarker(marker)),
        other => return Err(AmfError::UnknownMarker(other)),
    })
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut BytesMut) {
    match value {
        Value::Number(n) => {
            out.put_u8(NUMBER);
            out.put_f64(*n);
        }
        Value::Boolean(b) => {
            out.put_u8(BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) => encode_string(s, out),
        Value::Object(props) => {
            out.put_u8(OBJECT);
            encode_properties(props, out);
        }
        Value::Null => out.put_u8(NULL),
        Value::Undefined => out.put_u8(UNDEFINED),
        Value::Reference(i) => {
            out.put_u8(REFERENCE);
            out.put_u16(*i);
        }
        Value::EcmaArray(props) => {
            out.put_u8(ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Value::StrictArray(items) => {
            out.put_u8(STRICT_ARRAY);
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                encode(item, out);
            }
        }
        Value::Date(ms) => {
            out.put_u8(DATE);
            out.put_f64(*ms);
            out.put_u16(0);
        }
        Value::XmlDocument(s) => {
            out.put_u8(XML_DOCUMENT);
            put_long_str(s, out);
        }
        Value::TypedObject(class, props) => {
            out.put_u8(TYPED_OBJECT);
            put_short_str(class, out);
            encode_properties(props, out);
        }
        Value::Unsupported => out.put_u8(UNSUPPORTED),
    }
}

/// Encodes a sequence of values (a command).
pub fn encode_all(values: &[Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

fn encode_string(s: &str, out: &mut BytesMut) {
    if s.len() <= usize::from(u16::MAX) {
        out.put_u8(STRING);
        put_short_str(s, out);
    } else {
        out.put_u8(LONG_STRING);
        put_long_str(s, out);
    }
}

/// A key or class name: short strings only; a longer one is cut at a character boundary
/// (our own replies never come near the limit).
fn put_short_str(s: &str, out: &mut BytesMut) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // `end` <= u16::MAX by construction.
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn put_long_str(s: &str, out: &mut BytesMut) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.put_slice(s.as_bytes());
}

fn encode_properties(props: &[(String, Value)], out: &mut BytesMut) {
    for (k, v) in props {
        put_short_str(k, out);
        encode(v, out);
    }
    out.put_u16(0);
    out.put_u8(OBJECT_END);
}

/// Shorthand for an object from `(&str, Value)` pairs.
pub fn object<const N: usize>(props: [(&str, Value); N]) -> Value {
    Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Shorthand for a string value.
pub fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let bytes = encode_all(std::slice::from_ref(&v));
        let back = decode_all(&bytes).unwrap();
        assert_eq!(back, vec![v]);
    }

    #[test]
    fn round_trips_every_encoded_type() {
        round_trip(Value::Number(1.5));
        round_trip(Value::Boolean(true));
        round_trip(string("live"));
        round_trip(Value::String("x".repeat(70_000)));
        round_trip(Value::Null);
        round_trip(Value::Undefined);
        round_trip(Value::Reference(3));
        round_trip(Value::Date(1_700_000_000_000.0));
        round_trip(Value::XmlDocument("<a/>".into()));
        round_trip(Value::Unsupported);
        round_trip(object([
            ("app", string("live")),
            ("nested", object([("n", Value::Number(2.0))])),
        ]));
        round_trip(Value::EcmaArray(vec![
            ("width".into(), Value::Number(640.0)),
            ("stereo".into(), Value::Boolean(true)),
        ]));
        round_trip(Value::StrictArray(vec![Value::Null, Value::Number(1.0)]));
        round_trip(Value::TypedObject(
            "Cls".into(),
            vec![("a".into(), Value::Null)],
        ));
    }

    #[test]
    fn decodes_an_ffmpeg_connect_command() {
        let v = encode_all(&[
            string("connect"),
            Value::Number(1.0),
            object([
                ("app", string("live")),
                ("type", string("nonprivate")),
                ("tcUrl", string("rtmp://127.0.0.1:1935/live")),
            ]),
        ]);
        let values = decode_all(&v).unwrap();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_f64(), Some(1.0));
        assert_eq!(values[2].get("app").and_then(Value::as_str), Some("live"));
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert_eq!(
            decode_all(&[0x02, 0x00, 0x05, b'a']),
            Err(AmfError::Truncated)
        );
        assert_eq!(decode_all(&[0x11]), Err(AmfError::UnknownMarker(0x11)));
        assert_eq!(decode_all(&[0x09]), Err(AmfError::UnknownMarker(0x09)));
        // A strict array claiming four billion elements in five bytes.
        assert_eq!(
            decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]),
            Err(AmfError::Truncated)
        );
        // ... or in 8 MiB: refused before any element is decoded or allocated.
        let mut lying = vec![0x0a, 0xff, 0xff, 0xff, 0xff];
        lying.resize(8 << 20, NULL);
        assert_eq!(decode_all(&lying), Err(AmfError::Truncated));
        // Deep nesting.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x03, 0x00, 0x01, b'k']);
        }
        assert_eq!(decode_all(&deep), Err(AmfError::TooDeep));
        // Deep nesting through strict arrays too.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        deep.push(NULL);
        assert_eq!(decode_all(&deep), Err(AmfError::TooDeep));
        // Every prefix of a valid command fails cleanly.
        let v = encode_all(&[string("publish"), Value::Number(5.0), Value::Null]);
        for n in 0..v.len() {
            let _ = decode_all(&v[..n]);
        }
    }

    /// The memory a decoded value holds: the value itself plus what it points to.
    fn held(v: &Value) -> usize {
        let props = |p: &Vec<(String, Value)>| {
            p.capacity() * std::mem::size_of::<(String, Value)>()
                + p.iter()
                    .map(|(k, v)| k.capacity() + held(v) - std::mem::size_of::<Value>())
                    .sum::<usize>()
        };
        std::mem::size_of::<Value>()
            + match v {
                Value::String(s) | Value::XmlDocument(s) => s.capacity(),
                Value::Object(p) | Value::EcmaArray(p) => props(p),
                Value::TypedObject(c, p) => c.capacity() + props(p),
                Value::StrictArray(items) => {
                    items.capacity() * std::mem::size_of::<Value>()
                        + items
                            .iter()
                            .map(|v| held(v) - std::mem::size_of::<Value>())
                            .sum::<usize>()
                }
                _ => 0,
            }
    }

    #[test]
    fn decoded_memory_is_bounded_by_the_input() {
        // 8 MiB of one-byte `null`s (the ~48x amplification): refused at the value cap.
        let nulls = vec![NULL; 8 << 20];
        assert_eq!(decode_all(&nulls), Err(AmfError::TooManyValues));
        // The same inside an object, an ECMA array and a strict array.
        for head in [
            &[OBJECT][..],
            &[ECMA_ARRAY, 0, 0, 0, 0][..],
            &[STRICT_ARRAY, 0, 0x10, 0, 0][..],
        ] {
            let mut v = head.to_vec();
            for i in 0..(1u32 << 20) {
                if head[0] != STRICT_ARRAY {
                    v.extend_from_slice(&[0, 1, (i % 26) as u8 + b'a']);
                }
                v.push(NULL);
            }
            assert_eq!(decode_all(&v), Err(AmfError::TooManyValues), "{head:?}");
        }
        // Just under the cap decodes, and holds a bounded multiple of the cap, whatever the
        // input's shape: values and properties alike.
        let ok = vec![NULL; MAX_VALUES];
        let values = decode_all(&ok).unwrap();
        assert_eq!(values.len(), MAX_VALUES);
        let mut obj = vec![OBJECT];
        for _ in 0..MAX_VALUES - 1 {
            obj.extend_from_slice(&[0, 1, b'k', BOOLEAN, 1]);
        }
        obj.extend_from_slice(&[0, 0, OBJECT_END]);
        let value = decode_all(&obj).unwrap().remove(0);
        let bound = obj.len() + 2 * MAX_VALUES * std::mem::size_of::<(String, Value)>();
        assert!(held(&value) <= bound, "{} > {bound}", held(&value));
        assert!(
            bound < 1 << 20,
            "the cap keeps a decode under 1 MiB: {bound}"
        );
        let mut one_more = ok;
        one_more.push(NULL);
        assert_eq!(decode_all(&one_more), Err(AmfError::TooManyValues));
    }
}
