//! Outbound HTTP against a real server on 127.0.0.1: allowed requests work; requests outside the
//! allow-list are denied naming the rule and never leave the host; a slow server times out; a huge
//! body hits the size cap; the per-request limit counts per request (HOSTILE-REQUESTS.md row 20).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{request, Response, Upstream};
use glint_caps::{
    enter_request, CapsConfig, CapsContext, CapsError, CapsErrorKind, Denial, FunctionCaps, Grants, Quota,
    RequestContext, Variables,
};
use std::sync::{Arc, Mutex};

fn caps_for(upstream: &Upstream, tweak: impl FnOnce(&mut Grants)) -> (FunctionCaps, Arc<Mutex<Vec<Denial>>>) {
    let denials = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&denials);
    let ctx = CapsContext::new(&CapsConfig::default(), None)
        .unwrap()
        .on_denial(move |d: &Denial| sink.lock().unwrap().push(d.clone()));
    let mut grants = Grants {
        allowed_outbound_hosts: vec![format!("http://127.0.0.1:{}", upstream.port)],
        outbound_timeout_ms: Some(2_000),
        outbound_max_response_bytes: Some(64 << 10),
        ..Grants::default()
    };
    tweak(&mut grants);
    (FunctionCaps::new("fetcher", &grants, &Variables::new(), &ctx).unwrap(), denials)
}

fn in_request<R>(f: impl FnOnce() -> R) -> R {
    let guard = enter_request(RequestContext { request_id: "r".into(), function: "fetcher".into() });
    let r = f();
    drop(guard);
    r
}

#[test]
fn an_allowed_request_reaches_the_server_and_returns_its_response() {
    let upstream = Upstream::start();
    let (caps, denials) = caps_for(&upstream, |_| {});
    let req = request("POST", &upstream.url("/ok?q=1"), &[("x-test", "yes")], b"payload");
    let resp = Response::decode(&in_request(|| caps.http_send(&req)).unwrap());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "ok POST /ok?q=1 x-test=yes\npayload");
    assert_eq!(resp.header("x-upstream").as_deref(), Some("yes"));
    // Not an error status: a 404 is a response like any other.
    let missing =
        Response::decode(&in_request(|| caps.http_send(&request("GET", &upstream.url("/nope"), &[], b""))).unwrap());
    assert_eq!(missing.status, 404);
    // Redirects are returned, not followed.
    let redirect = Response::decode(
        &in_request(|| caps.http_send(&request("GET", &upstream.url("/redirect"), &[], b""))).unwrap(),
    );
    assert_eq!((redirect.status, redirect.header("location").as_deref()), (302, Some("/ok")));
    assert_eq!(upstream.hits(), 3);
    assert!(denials.lock().unwrap().is_empty());
}

#[test]
fn hosts_outside_the_allow_list_are_denied_naming_the_rule_and_never_contacted() {
    let upstream = Upstream::start();
    let other = Upstream::start();
    let (caps, denials) = caps_for(&upstream, |_| {});
    for url in [
        other.url("/ok?token=s3cr3t"),                    // another port
        format!("http://localhost:{}/ok", upstream.port), // a name, where the pattern has an address
        format!("http://127.0.0.2:{}/ok", upstream.port),
    ] {
        let e = in_request(|| caps.http_send(&request("GET", &url, &[], b""))).unwrap_err();
        assert!(matches!(e, CapsError::HostDenied { rule: "allowed_outbound_hosts", .. }), "{url}: {e}");
        let text = e.to_string();
        assert!(text.starts_with("denied: ") && text.contains("allowed_outbound_hosts"), "{text}");
        assert!(text.contains(&format!("http://127.0.0.1:{}", upstream.port)), "the allowed pattern: {text}");
        assert!(!text.contains("s3cr3t") && !text.contains("/ok"), "only the origin: {text}");
    }
    assert_eq!(other.hits(), 0, "a denied request must not leave the host");
    assert_eq!(upstream.hits(), 0);
    let denials = denials.lock().unwrap();
    assert_eq!(denials.len(), 3);
    assert!(denials.iter().all(|d| d.rule == "allowed_outbound_hosts" && d.kind == CapsErrorKind::Denied));
    assert_eq!(denials[0].function.as_ref(), "fetcher");
}

#[test]
fn a_slow_server_times_out() {
    let upstream = Upstream::start();
    let (caps, _) = caps_for(&upstream, |g| g.outbound_timeout_ms = Some(300));
    for path in ["/slow", "/slow-body"] {
        let e = in_request(|| caps.http_send(&request("GET", &upstream.url(path), &[], b""))).unwrap_err();
        assert!(matches!(e, CapsError::Timeout { .. }), "{path}: {e}");
        assert_eq!(e.kind(), CapsErrorKind::Timeout);
        assert!(e.to_string().starts_with("timeout: http://127.0.0.1:"), "{e}");
    }
    assert_eq!(upstream.slow_finished.load(std::sync::atomic::Ordering::Acquire), 0);
}

#[test]
fn a_huge_body_hits_the_size_cap() {
    let upstream = Upstream::start();
    let (caps, _) = caps_for(&upstream, |_| {});
    for path in ["/huge", "/huge-chunked"] {
        let e = in_request(|| caps.http_send(&request("GET", &upstream.url(path), &[], b""))).unwrap_err();
        assert!(matches!(e, CapsError::ResponseTooLarge { limit: 65536, .. }), "{path}: {e}");
        assert!(e.to_string().starts_with("too_large: "), "{e}");
    }
    // Exactly at the cap is fine: raise the cap to the body's size.
    let (caps, _) = caps_for(&upstream, |g| g.outbound_max_response_bytes = Some(common::HUGE as u64));
    for path in ["/huge", "/huge-chunked"] {
        let resp =
            Response::decode(&in_request(|| caps.http_send(&request("GET", &upstream.url(path), &[], b""))).unwrap());
        assert_eq!(resp.body.len(), common::HUGE, "{path}");
    }
}

#[test]
fn the_outbound_limit_counts_per_request() {
    let upstream = Upstream::start();
    let (caps, denials) = caps_for(&upstream, |g| g.max_outbound_requests = Some(2));
    let send = || caps.http_send(&request("GET", &upstream.url("/ok"), &[], b""));
    for round in 0..2 {
        let guard =
            enter_request(RequestContext { request_id: format!("req-{round}").into(), function: "fetcher".into() });
        send().unwrap();
        send().unwrap();
        let e = send().unwrap_err();
        assert!(matches!(e, CapsError::QuotaExceeded { quota: Quota::OutboundRequests, limit: 2, .. }), "{e}");
        assert_eq!(e.to_string(), "quota_exceeded: outbound requests per request is limited to 2");
        let usage = guard.finish();
        assert_eq!((usage.outbound_requests, usage.denials), (2, 1));
    }
    // Outside any request the limit counts since registration, and says so.
    send().unwrap();
    send().unwrap();
    let e = send().unwrap_err();
    assert!(matches!(e, CapsError::QuotaExceeded { quota: Quota::OutboundRequestsUnscoped, .. }), "{e}");
    assert!(e.to_string().contains("outside a request scope"), "{e}");
    assert_eq!(upstream.hits(), 6);
    let denials = denials.lock().unwrap();
    let ids: Vec<_> = denials.iter().map(|d| d.request_id.as_deref()).collect();
    assert_eq!(ids, [Some("req-0"), Some("req-1"), None]);
    assert!(denials.iter().all(|d| d.rule == "quota.outbound_requests"));
}

#[test]
fn malformed_or_smuggling_requests_are_refused_before_sending() {
    let upstream = Upstream::start();
    let (caps, _) = caps_for(&upstream, |_| {});
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "invalid: outbound request"),
        (request("GET", "/relative", &[], b""), "invalid: url"),
        (request("GET", &format!("http://user@127.0.0.1:{}/ok", upstream.port), &[], b""), "user information"),
        (request("GET", &upstream.url("/ok"), &[("host", "evil")], b""), "set by the host"),
        (request("GET", &upstream.url("/ok"), &[("Transfer-Encoding", "chunked")], b""), "set by the host"),
    ];
    for (bytes, expected) in cases {
        let e = in_request(|| caps.http_send(&bytes)).unwrap_err();
        assert_eq!(e.kind(), CapsErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains(expected), "{e}");
    }
    assert_eq!(upstream.hits(), 0);
}

#[test]
fn a_connection_refused_is_unavailable() {
    // Bind then drop a listener: nothing listens on its port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ctx = CapsContext::new(&CapsConfig::default(), None).unwrap();
    let grants = Grants { allowed_outbound_hosts: vec![format!("http://127.0.0.1:{port}")], ..Grants::default() };
    let caps = FunctionCaps::new("f", &grants, &Variables::new(), &ctx).unwrap();
    let e = in_request(|| caps.http_send(&request("GET", &format!("http://127.0.0.1:{port}/"), &[], b""))).unwrap_err();
    assert_eq!(e.kind(), CapsErrorKind::Unavailable, "{e}");
    assert!(e.to_string().starts_with(&format!("unavailable: request to http://127.0.0.1:{port} failed")), "{e}");
}
