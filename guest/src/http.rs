//! HTTP handlers: request and response types, and the one-line export that serves them.
//!
//! ```ignore
//! use glint_guest::http::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     Response::text(200, &alloc::format!("you asked for {}", req.path()))
//! }
//! glint_guest::http_handler!(handle);
//! ```
//!
//! The server calls the export [`HANDLER_EXPORT`] (`handle`) with the request encoded by
//! `glint_abi::http` and sends back the response it returns. A handler returning `Result` may
//! fail: the call then fails with the error's message, which the server logs (it never reaches
//! the client, who gets a 500). The same types serve outbound requests through
//! [`crate::caps::outbound`], with an absolute URL as the target.

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Display;
use glint_abi::http::{self as codec, HttpDecodeError, HttpEncodeError};

pub use glint_abi::http::HANDLER_EXPORT;

/// An HTTP request: what a handler receives, or what a guest sends through the outbound capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path and query as received (`/hello/ada?x=1`), or an absolute URL for an outbound request.
    pub target: String,
    /// Header names (lowercase from the server) and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// An HTTP response: what a handler returns, or what an outbound request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

fn owned_headers(headers: codec::Headers<'_>) -> Vec<(String, Vec<u8>)> {
    headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect()
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: &str, target: &str) -> Self {
        Request { method: method.to_owned(), target: target.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The path: the target up to `?` (still percent-encoded).
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(p, _)| p)
    }

    /// The query: the target after `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first query parameter named `name`, percent-decoded (`+` as space); `None` when absent
    /// or not UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v)).flatten()
        })
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }

    /// The first header named `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| core::str::from_utf8(v).ok())
    }

    /// Decodes a request (what the handler export receives).
    ///
    /// # Errors
    /// The bytes are not a valid encoded request.
    pub fn decode(bytes: &[u8]) -> Result<Self, HttpDecodeError> {
        let r = codec::read_request(bytes)?;
        Ok(Request {
            method: r.method.to_owned(),
            target: r.target.to_owned(),
            headers: owned_headers(r.headers),
            body: r.body.to_vec(),
        })
    }

    /// Encodes the request (what the outbound capability takes).
    ///
    /// # Errors
    /// A field is invalid: a method that is not a token, a target that is not visible ASCII, a
    /// header name that is not a token, CR, LF or NUL in a header value.
    pub fn encode(&self) -> Result<Vec<u8>, HttpEncodeError> {
        let mut out = Vec::new();
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        codec::put_request(&mut out, &self.method, &self.target, headers, &self.body)?;
        Ok(out)
    }
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: &str) -> Self {
        Response::new(status).with_header("content-type", "text/plain; charset=utf-8").with_body(body.as_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }

    /// Decodes a response (what the outbound capability returns).
    ///
    /// # Errors
    /// The bytes are not a valid encoded response.
    pub fn decode(bytes: &[u8]) -> Result<Self, HttpDecodeError> {
        let r = codec::read_response(bytes)?;
        Ok(Response { status: r.status, headers: owned_headers(r.headers), body: r.body.to_vec() })
    }

    /// Encodes the response (what the handler export returns).
    ///
    /// # Errors
    /// A status outside 100..=999, or an invalid header.
    pub fn encode(&self) -> Result<Vec<u8>, HttpEncodeError> {
        let mut out = Vec::new();
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        codec::put_response(&mut out, self.status, headers, &self.body)?;
        Ok(out)
    }
}

/// What a handler may return: a [`Response`], or `Result<Response, E: Display>` whose error fails
/// the call (the server answers 500 and logs the message).
pub trait IntoResponse {
    /// The response, or the message the call fails with.
    fn into_response(self) -> Result<Response, String>;
}

impl IntoResponse for Response {
    fn into_response(self) -> Result<Response, String> {
        Ok(self)
    }
}

impl<E: Display> IntoResponse for Result<Response, E> {
    fn into_response(self) -> Result<Response, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Decodes `request`, runs `handler`, encodes its response: the body of the export that
/// [`http_handler!`](crate::http_handler) generates.
///
/// # Errors
/// The request does not decode, the handler failed, or its response does not encode.
#[doc(hidden)]
pub fn serve<R: IntoResponse>(request: &[u8], handler: impl FnOnce(Request) -> R) -> Result<Vec<u8>, String> {
    let request = Request::decode(request).map_err(|e| e.to_string())?;
    let response = handler(request).into_response()?;
    response.encode().map_err(|e| e.to_string())
}

#[doc(hidden)]
pub type __Bytes = Vec<u8>;
#[doc(hidden)]
pub type __Text = String;

/// Percent-decodes `s` (`%XX` escapes, `+` as space); `None` for a bad escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Exports an HTTP handler `fn(Request) -> impl IntoResponse` as [`HANDLER_EXPORT`] (and
/// provides the guest's entry point, like [`exports!`](crate::exports)).
///
/// `http_handler!(handle)` exports only the handler; `http_handler!(handle; add, count)` also
/// exports the typed functions listed after the semicolon (a guest has one export table, so use
/// this instead of a separate `exports!`).
#[macro_export]
macro_rules! http_handler {
    ($handler:path $(; $($f:ident),* $(,)?)?) => {
        fn __glint_http_handle(
            request: $crate::http::__Bytes,
        ) -> ::core::result::Result<$crate::http::__Bytes, $crate::http::__Text> {
            $crate::http::serve(&request, $handler)
        }
        $crate::exports!($crate::http::HANDLER_EXPORT => __glint_http_handle $($(, stringify!($f) => $f)*)?);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn request_helpers() {
        let r = Request::new("GET", "/kv/a%2Fb?prefix=x%20y&flag&plus=a+b").with_header("Authorization", "Bearer t");
        assert_eq!(r.path(), "/kv/a%2Fb");
        assert_eq!(r.query_param("prefix").as_deref(), Some("x y"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("plus").as_deref(), Some("a b"));
        assert_eq!(r.query_param("absent"), None);
        assert_eq!(r.header_str("authorization"), Some("Bearer t"));
        assert_eq!(Request::new("GET", "/").query(), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn serve_round_trips_through_the_codec() {
        let request = Request::new("POST", "/echo").with_header("x-a", "1").with_body(vec![1, 2, 3]).encode().unwrap();
        let out = serve(&request, |req: Request| {
            Response::text(201, req.path()).with_header("x-len", alloc::format!("{}", req.body.len()))
        })
        .unwrap();
        let response = Response::decode(&out).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.body, b"/echo");
        assert_eq!(response.header("X-Len"), Some(&b"3"[..]));
    }

    #[test]
    fn failures_become_call_errors() {
        let request = Request::new("GET", "/").encode().unwrap();
        let failed = serve(&request, |_| -> Result<Response, &str> { Err("no luck") });
        assert_eq!(failed, Err(String::from("no luck")));
        let bad_status = serve(&request, |_| Response::new(42));
        assert!(bad_status.unwrap_err().contains("status 42"));
        assert!(serve(&[1, 2, 3], |_| Response::new(200)).is_err());
    }
}
