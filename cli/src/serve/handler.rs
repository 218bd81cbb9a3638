//! The host side of HTTP handler guests: a request encoded for the guest with
//! `glint_abi::http`, the guest's encoded response checked and turned into a hyper response.
//!
//! What the guest receives: the method, the path and query as received, the client's headers
//! (lowercase names) minus hop-by-hop ones and minus any `x-glint-*` a client sent, plus the
//! server's own `x-glint-*` headers:
//!
//! | header | value |
//! | --- | --- |
//! | `x-glint-route` | the matched route pattern, e.g. `/users/:id/...` |
//! | `x-glint-param-<name>` | each route parameter, percent-decoded |
//! | `x-glint-path-info` | for a `/...` route, the decoded rest of the path |
//! | `x-request-id` | the request id (also on the response) |
//!
//! What the server does with the response: a status outside 200..=599 is a 500 (`bad_response`);
//! framing and hop-by-hop headers the guest sets are dropped (the server frames the body), as
//! is `x-request-id`; a body above `max_response_bytes` is a 500 (`response_too_large`).

use super::respond::Failure;
use super::route::RouteMatch;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};

/// Headers that describe one connection or the framing, never passed either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Encodes a request for the guest.
///
/// # Errors
/// [`Failure::BadRequest`] when a field cannot be encoded (a target with non-ASCII bytes).
pub fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    route: &str,
    matched: &RouteMatch,
    request_id: &str,
    body: &[u8],
) -> Result<Vec<u8>, Failure> {
    let mut extra: Vec<(String, Vec<u8>)> = vec![
        ("x-glint-route".into(), route.as_bytes().to_vec()),
        ("x-request-id".into(), request_id.as_bytes().to_vec()),
    ];
    for (name, value) in &matched.params {
        extra.push((format!("x-glint-param-{}", name.to_ascii_lowercase()), value.as_bytes().to_vec()));
    }
    if let Some(rest) = &matched.rest {
        extra.push(("x-glint-path-info".into(), rest.as_bytes().to_vec()));
    }
    let passed = headers.iter().filter(|(name, _)| {
        let n = name.as_str();
        !n.starts_with("x-glint-") && n != "x-request-id" && !HOP_BY_HOP.contains(&n)
    });
    let mut all: Vec<(&str, &[u8])> = passed.map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
    all.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    // Header values decoded from a path may hold characters a header cannot: refuse the request
    // rather than hand the guest something malformed.
    let mut out = Vec::with_capacity(body.len() + 512);
    glint_abi::http::put_request(&mut out, method.as_str(), target, all.iter().copied(), body)
        .map_err(|e| Failure::BadRequest(format!("the request cannot be passed to the function: {e}")))?;
    Ok(out)
}

/// Checks and converts the guest's response bytes.
///
/// # Errors
/// [`Failure::BadResponse`] or [`Failure::ResponseTooLarge`]; the reason for a bad response is
/// for the log (it does not reach the client).
pub fn decode_response(bytes: &[u8], max_body: usize) -> Result<Response<Full<Bytes>>, Failure> {
    let r = glint_abi::http::read_response(bytes)
        .map_err(|e| Failure::BadResponse(format!("the handler's response is malformed: {e}")))?;
    if !(200..=599).contains(&r.status) {
        return Err(Failure::BadResponse(format!("the handler answered status {}, outside 200..=599", r.status)));
    }
    if r.body.len() > max_body {
        return Err(Failure::ResponseTooLarge { size: r.body.len(), limit: max_body });
    }
    let status = StatusCode::from_u16(r.status)
        .map_err(|_| Failure::BadResponse(format!("status {} is not valid", r.status)))?;
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(r.body)));
    *response.status_mut() = status;
    let h = response.headers_mut();
    for header in r.headers {
        let lower = header.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || lower == "x-request-id" {
            tracing::debug!(header = %lower, "dropped a framing header the handler set");
            continue;
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| Failure::BadResponse(format!("header name {:?} is not valid", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| Failure::BadResponse(format!("the value of header `{lower}` is not valid")))?;
        h.append(name, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_route_params_and_drop_spoofed_and_framing_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-glint-route", HeaderValue::from_static("/spoofed"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("accept", HeaderValue::from_static("text/plain"));
        let matched = RouteMatch { params: vec![("id".into(), "42".into())], rest: Some("a/b".into()) };
        let bytes =
            encode_request(&Method::PUT, "/u/42/a/b?x=1", &headers, "/u/:id/...", &matched, "rid", b"hi").unwrap();
        let r = glint_abi::http::read_request(&bytes).unwrap();
        assert_eq!((r.method, r.target, r.body), ("PUT", "/u/42/a/b?x=1", b"hi".as_slice()));
        let hs: Vec<(String, String)> =
            r.headers.map(|h| (h.name.to_owned(), String::from_utf8(h.value.to_vec()).unwrap())).collect();
        let get = |n: &str| hs.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("x-glint-route"), ["/u/:id/..."]);
        assert_eq!(get("x-glint-param-id"), ["42"]);
        assert_eq!(get("x-glint-path-info"), ["a/b"]);
        assert_eq!(get("x-request-id"), ["rid"]);
        assert_eq!(get("accept"), ["text/plain"]);
        assert!(get("transfer-encoding").is_empty());
    }

    fn response(status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        glint_abi::http::put_response(&mut v, status, headers.iter().copied(), body).unwrap();
        v
    }

    #[test]
    fn responses_are_checked_and_framing_is_the_servers() {
        let bytes = response(201, &[("X-Echo", b"1"), ("content-length", b"999"), ("connection", b"close")], b"ok");
        let r = decode_response(&bytes, 10).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["x-echo"], "1");
        assert!(r.headers().get("content-length").is_none() && r.headers().get("connection").is_none());
        assert!(matches!(decode_response(&response(101, &[], b""), 10), Err(Failure::BadResponse(_))));
        assert!(matches!(decode_response(&response(600, &[], b""), 10), Err(Failure::BadResponse(_))));
        assert!(matches!(
            decode_response(&response(200, &[], &[0; 11]), 10),
            Err(Failure::ResponseTooLarge { size: 11, limit: 10 })
        ));
        assert!(matches!(decode_response(b"\x01\x02", 10), Err(Failure::BadResponse(_))));
    }
}
