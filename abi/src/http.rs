//! HTTP requests and responses as bytes, for HTTP-handler guests and the outbound HTTP capability.
//!
//! An HTTP handler is an export `(Vec<u8>) -> Vec<u8>` named [`HANDLER_EXPORT`]: its argument
//! is an encoded request, its result an encoded response. The outbound capability
//! (`glint:http/send@1`, see [`crate::caps`]) uses the same two encodings the other way round,
//! with an absolute URL as the request target. Integers are little-endian, `str` and `bytes` are a
//! `u32` length and the bytes, as in [`crate::wire`]:
//!
//! ```text
//! request:  str method | str target | u32 n | n × (str name, bytes value) | bytes body
//! response: u32 status | u32 n | n × (str name, bytes value) | bytes body
//! ```
//!
//! Every decoder takes untrusted input: it checks each length against the bytes that remain,
//! never allocates, validates every field once (so the header iterators it returns cannot
//! fail) and refuses trailing bytes. The encoders refuse what the decoders would refuse, so a
//! well-behaved side never produces a message the other side rejects. `docs/ABI.md` (section
//! "HTTP handlers") spells out the same facts for guests in other languages.

use crate::wire::{self, DecodeError, Full, Reader, Sink};
use core::fmt;

/// Default name of the export an HTTP handler guest provides (`(Vec<u8>) -> Vec<u8>`).
pub const HANDLER_EXPORT: &str = "handle";
/// Longest method, in bytes.
pub const MAX_METHOD_LEN: usize = 32;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Smallest bytes a header takes on the wire (two empty lengths), which bounds a header count.
const MIN_HEADER_BYTES: usize = 8;

/// A field that breaks the rules of HTTP (or of this encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The method is empty, longer than [`MAX_METHOD_LEN`] or not an RFC 9110 token.
    Method,
    /// The target is empty or holds something other than visible ASCII.
    Target,
    /// Header `index` has an empty, over-long or non-token name.
    HeaderName {
        /// Position of the header.
        index: usize,
    },
    /// Header `index` has a value with CR, LF or NUL in it.
    HeaderValue {
        /// Position of the header.
        index: usize,
    },
    /// A status outside 100..=999.
    Status(u32),
    /// More headers announced than the message can hold, or than the encoder was given.
    HeaderCount(u64),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Method => write!(f, "method is not a token of at most {MAX_METHOD_LEN} bytes"),
            Invalid::Target => f.write_str("target is empty or not visible ASCII"),
            Invalid::HeaderName { index } => write!(f, "header {index} has an invalid name"),
            Invalid::HeaderValue { index } => write!(f, "header {index} has CR, LF or NUL in its value"),
            Invalid::Status(s) => write!(f, "status {s} is outside 100..=999"),
            Invalid::HeaderCount(n) => write!(f, "header count {n} does not match the headers"),
        }
    }
}

/// Why bytes are not an HTTP request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpDecodeError {
    /// The bytes do not decode (truncated, bad UTF-8, trailing bytes).
    Wire(DecodeError),
    /// A field decodes but breaks a rule.
    Invalid(Invalid),
}

impl From<DecodeError> for HttpDecodeError {
    fn from(e: DecodeError) -> Self {
        HttpDecodeError::Wire(e)
    }
}

impl fmt::Display for HttpDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpDecodeError::Wire(e) => write!(f, "malformed HTTP message: {e}"),
            HttpDecodeError::Invalid(e) => write!(f, "invalid HTTP message: {e}"),
        }
    }
}

/// Why a request or response could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpEncodeError {
    /// The sink is full.
    Full,
    /// A field breaks a rule; nothing the decoder would accept can be written.
    Invalid(Invalid),
}

impl From<Full> for HttpEncodeError {
    fn from(_: Full) -> Self {
        HttpEncodeError::Full
    }
}

impl fmt::Display for HttpEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpEncodeError::Full => f.write_str("HTTP message does not fit in the buffer"),
            HttpEncodeError::Invalid(e) => write!(f, "cannot encode HTTP message: {e}"),
        }
    }
}

/// Whether `s` is an RFC 9110 token (methods, header names): `!#$%&'*+-.^_`|~`, digits, letters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `method` is a valid method.
pub fn is_method(method: &str) -> bool {
    method.len() <= MAX_METHOD_LEN && is_token(method)
}

/// Whether `target` is a valid request target: non-empty visible ASCII (a path and query, or an
/// absolute URL; percent-encoding is the sender's business).
pub fn is_target(target: &str) -> bool {
    !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `name` is a valid header name.
pub fn is_header_name(name: &str) -> bool {
    name.len() <= MAX_HEADER_NAME_LEN && is_token(name)
}

/// Whether `value` is a valid header value: anything but CR, LF and NUL (obs-text allowed).
pub fn is_header_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// One header of a decoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// The name, as sent (the server sends lowercase names).
    pub name: &'a str,
    /// The value: bytes, not necessarily UTF-8.
    pub value: &'a [u8],
}

/// The headers of a decoded message, already validated.
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Headers<'a> {
    /// The first header named `name`, compared ASCII case-insensitively.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.clone().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = HeaderRef<'a>;

    fn next(&mut self) -> Option<HeaderRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left = self.left.saturating_sub(1);
        // Validated when the message was decoded, so these reads succeed.
        let name = self.reader.str().ok()?;
        let value = self.reader.bytes().ok()?;
        Some(HeaderRef { name, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// A decoded request. It borrows from the bytes it was read from.
#[derive(Clone, Debug)]
pub struct RequestRef<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The path and query as received (inbound), or an absolute URL (outbound).
    pub target: &'a str,
    /// The headers, in order.
    pub headers: Headers<'a>,
    /// The body.
    pub body: &'a [u8],
}

/// A decoded response. It borrows from the bytes it was read from.
#[derive(Clone, Debug)]
pub struct ResponseRef<'a> {
    /// The status, 100..=999.
    pub status: u16,
    /// The headers, in order.
    pub headers: Headers<'a>,
    /// The body.
    pub body: &'a [u8],
}

/// Reads and validates a header block; returns it for iteration.
fn read_headers<'a>(r: &mut Reader<'a>) -> Result<Headers<'a>, HttpDecodeError> {
    let count = r.u32()?;
    let left = usize::try_from(count).map_err(|_| HttpDecodeError::Invalid(Invalid::HeaderCount(u64::from(count))))?;
    if left > r.remaining() / MIN_HEADER_BYTES {
        return Err(HttpDecodeError::Invalid(Invalid::HeaderCount(u64::from(count))));
    }
    let start = r.clone();
    for index in 0..left {
        if !is_header_name(r.str()?) {
            return Err(HttpDecodeError::Invalid(Invalid::HeaderName { index }));
        }
        if !is_header_value(r.bytes()?) {
            return Err(HttpDecodeError::Invalid(Invalid::HeaderValue { index }));
        }
    }
    Ok(Headers { reader: start, left })
}

/// Decodes and validates a request.
///
/// # Errors
/// Truncated or trailing bytes, bad UTF-8, or a field that breaks the rules of [`Invalid`].
pub fn read_request(bytes: &[u8]) -> Result<RequestRef<'_>, HttpDecodeError> {
    let mut r = Reader::new(bytes);
    let method = r.str()?;
    if !is_method(method) {
        return Err(HttpDecodeError::Invalid(Invalid::Method));
    }
    let target = r.str()?;
    if !is_target(target) {
        return Err(HttpDecodeError::Invalid(Invalid::Target));
    }
    let headers = read_headers(&mut r)?;
    let body = r.bytes()?;
    r.finish()?;
    Ok(RequestRef { method, target, headers, body })
}

/// Decodes and validates a response.
///
/// # Errors
/// Truncated or trailing bytes, bad UTF-8, a status outside 100..=999, or a bad header.
pub fn read_response(bytes: &[u8]) -> Result<ResponseRef<'_>, HttpDecodeError> {
    let mut r = Reader::new(bytes);
    let raw = r.u32()?;
    let status = match u16::try_from(raw) {
        Ok(s) if (100..=999).contains(&s) => s,
        _ => return Err(HttpDecodeError::Invalid(Invalid::Status(raw))),
    };
    let headers = read_headers(&mut r)?;
    let body = r.bytes()?;
    r.finish()?;
    Ok(ResponseRef { status, headers, body })
}

fn put_headers<'h, I>(sink: &mut impl Sink, headers: I) -> Result<(), HttpEncodeError>
where
    I: IntoIterator<Item = (&'h str, &'h [u8])>,
    I::IntoIter: ExactSizeIterator,
{
    let headers = headers.into_iter();
    let count = headers.len();
    let wire_count = u32::try_from(count).map_err(|_| HttpEncodeError::Invalid(Invalid::HeaderCount(count as u64)))?;
    sink.put(&wire_count.to_le_bytes())?;
    let mut written = 0usize;
    for (index, (name, value)) in headers.enumerate() {
        if index >= count {
            // An iterator that yields more than its `len()` said would corrupt the message.
            return Err(HttpEncodeError::Invalid(Invalid::HeaderCount(count as u64)));
        }
        if !is_header_name(name) {
            return Err(HttpEncodeError::Invalid(Invalid::HeaderName { index }));
        }
        if !is_header_value(value) {
            return Err(HttpEncodeError::Invalid(Invalid::HeaderValue { index }));
        }
        wire::put_bytes(sink, name.as_bytes())?;
        wire::put_bytes(sink, value)?;
        written = index.saturating_add(1);
    }
    if written != count {
        return Err(HttpEncodeError::Invalid(Invalid::HeaderCount(count as u64)));
    }
    Ok(())
}

/// Encodes a request.
///
/// # Errors
/// The sink is full, or a field is invalid (see [`Invalid`]); the sink then holds a partial
/// message the caller must discard.
pub fn put_request<'h, I>(
    sink: &mut impl Sink,
    method: &str,
    target: &str,
    headers: I,
    body: &[u8],
) -> Result<(), HttpEncodeError>
where
    I: IntoIterator<Item = (&'h str, &'h [u8])>,
    I::IntoIter: ExactSizeIterator,
{
    if !is_method(method) {
        return Err(HttpEncodeError::Invalid(Invalid::Method));
    }
    if !is_target(target) {
        return Err(HttpEncodeError::Invalid(Invalid::Target));
    }
    wire::put_bytes(sink, method.as_bytes())?;
    wire::put_bytes(sink, target.as_bytes())?;
    put_headers(sink, headers)?;
    Ok(wire::put_bytes(sink, body)?)
}

/// Encodes a response.
///
/// # Errors
/// The sink is full, or a field is invalid (see [`Invalid`]); the sink then holds a partial
/// message the caller must discard.
pub fn put_response<'h, I>(sink: &mut impl Sink, status: u16, headers: I, body: &[u8]) -> Result<(), HttpEncodeError>
where
    I: IntoIterator<Item = (&'h str, &'h [u8])>,
    I::IntoIter: ExactSizeIterator,
{
    if !(100..=999).contains(&status) {
        return Err(HttpEncodeError::Invalid(Invalid::Status(u32::from(status))));
    }
    sink.put(&u32::from(status).to_le_bytes())?;
    put_headers(sink, headers)?;
    Ok(wire::put_bytes(sink, body)?)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_request(&mut v, method, target, headers.iter().copied(), body).unwrap();
        v
    }

    #[test]
    fn request_round_trips() {
        let bytes = request("POST", "/hello/ada?x=1", &[("content-type", b"text/plain"), ("x-raw", &[0xff, 1])], b"hi");
        let r = read_request(&bytes).unwrap();
        assert_eq!((r.method, r.target, r.body), ("POST", "/hello/ada?x=1", &b"hi"[..]));
        assert_eq!(r.headers.len(), 2);
        let all: Vec<_> = r.headers.clone().collect();
        assert_eq!(all[1], HeaderRef { name: "x-raw", value: &[0xff, 1] });
        assert_eq!(r.headers.get("Content-Type"), Some(&b"text/plain"[..]));
        assert_eq!(r.headers.get("absent"), None);
    }

    #[test]
    fn request_layout_is_the_documented_one() {
        let bytes = request("GET", "/", &[("a", b"b")], b"");
        let expected: &[u8] = &[
            3, 0, 0, 0, b'G', b'E', b'T', // method
            1, 0, 0, 0, b'/', // target
            1, 0, 0, 0, // one header
            1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b', // name, value
            0, 0, 0, 0, // empty body
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn response_layout_is_the_documented_one() {
        let mut v = Vec::new();
        put_response(&mut v, 404, [("x-a", &b"1"[..])], b"nope").unwrap();
        let expected: &[u8] = &[
            0x94, 1, 0, 0, // status 404
            1, 0, 0, 0, // one header
            3, 0, 0, 0, b'x', b'-', b'a', 1, 0, 0, 0, b'1', // name, value
            4, 0, 0, 0, b'n', b'o', b'p', b'e', // body
        ];
        assert_eq!(v, expected);
    }

    #[test]
    fn response_round_trips() {
        let mut v = Vec::new();
        put_response(&mut v, 404, [("x-a", &b"1"[..])], b"nope").unwrap();
        assert_eq!(&v[..4], &404u32.to_le_bytes());
        let r = read_response(&v).unwrap();
        assert_eq!((r.status, r.body), (404, &b"nope"[..]));
        assert_eq!(r.headers.collect::<Vec<_>>(), [HeaderRef { name: "x-a", value: b"1" }]);
    }

    #[test]
    fn invalid_fields_are_refused_on_both_sides() {
        let mut v = Vec::new();
        assert_eq!(put_request(&mut v, "GE T", "/", [], b""), Err(HttpEncodeError::Invalid(Invalid::Method)));
        assert_eq!(put_request(&mut v, "GET", "/a b", [], b""), Err(HttpEncodeError::Invalid(Invalid::Target)));
        assert_eq!(put_request(&mut v, "GET", "", [], b""), Err(HttpEncodeError::Invalid(Invalid::Target)));
        assert_eq!(
            put_request(&mut v, "GET", "/", [("x", &b"a\r\nset-cookie: 1"[..])], b""),
            Err(HttpEncodeError::Invalid(Invalid::HeaderValue { index: 0 }))
        );
        assert_eq!(
            put_response(&mut v, 200, [("bad name", &b""[..])], b""),
            Err(HttpEncodeError::Invalid(Invalid::HeaderName { index: 0 }))
        );
        assert_eq!(put_response(&mut v, 99, [], b""), Err(HttpEncodeError::Invalid(Invalid::Status(99))));

        // The decoder refuses the same things when a hostile side writes them by hand.
        let mut hostile = Vec::new();
        wire::put_bytes(&mut hostile, b"GET").unwrap();
        wire::put_bytes(&mut hostile, b"/").unwrap();
        hostile.extend_from_slice(&1u32.to_le_bytes());
        wire::put_bytes(&mut hostile, b"x").unwrap();
        wire::put_bytes(&mut hostile, b"a\nb").unwrap();
        wire::put_bytes(&mut hostile, b"").unwrap();
        assert_eq!(read_request(&hostile).unwrap_err(), HttpDecodeError::Invalid(Invalid::HeaderValue { index: 0 }));

        let mut status = Vec::new();
        status.extend_from_slice(&70_000u32.to_le_bytes());
        status.extend_from_slice(&[0; 8]);
        assert_eq!(read_response(&status).unwrap_err(), HttpDecodeError::Invalid(Invalid::Status(70_000)));
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused() {
        // A header count far beyond the bytes that follow.
        let mut v = Vec::new();
        v.extend_from_slice(&200u32.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        assert_eq!(read_response(&v).unwrap_err(), HttpDecodeError::Invalid(Invalid::HeaderCount(u64::from(u32::MAX))));
        // Truncated body, trailing bytes.
        let mut ok = Vec::new();
        put_response(&mut ok, 200, [], b"body").unwrap();
        assert_eq!(read_response(&ok[..ok.len() - 1]).unwrap_err(), HttpDecodeError::Wire(DecodeError::Truncated));
        ok.push(0);
        assert_eq!(read_response(&ok).unwrap_err(), HttpDecodeError::Wire(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn lying_header_iterators_are_refused() {
        struct Liar(usize);
        impl Iterator for Liar {
            type Item = (&'static str, &'static [u8]);
            fn next(&mut self) -> Option<Self::Item> {
                self.0 += 1;
                (self.0 < 4).then_some(("a", b"b"))
            }
        }
        impl ExactSizeIterator for Liar {
            fn len(&self) -> usize {
                1
            }
        }
        let mut v = Vec::new();
        assert_eq!(put_response(&mut v, 200, Liar(0), b""), Err(HttpEncodeError::Invalid(Invalid::HeaderCount(1))));
    }

    #[test]
    fn full_sinks_are_reported() {
        let mut buf = [0u8; 8];
        let mut sink = wire::SliceSink::new(&mut buf);
        assert_eq!(put_response(&mut sink, 200, [], b"0123456789"), Err(HttpEncodeError::Full));
    }
}
