//! One test per row of the hostile-requests catalogue (shared/HOSTILE-REQUESTS.md) that the
//! server itself handles: rows 1-12 (clients), 15-17 (tenants). Rows 13, 14 and 22 (load,
//! overload, SIGTERM under load) are in serve_load.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{encode, testguest_fn, Conn, Server, Stderr, PATIENCE};

fn server(server_section: &str, function_extra: &str) -> Server {
    Server::start(&format!("[server]\n{server_section}\n{}", testguest_fn("f", "/f", function_extra)))
}

/// Dribbles bytes of an endless header block until the server closes the connection; returns
/// whether it did.
fn dribble_until_closed(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    if s.write_all(b"GET /f/call/rt_i32 HTTP/1.1\r\nx-slow: ").is_err() {
        return true;
    }
    let end = Instant::now() + PATIENCE;
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        if s.write_all(b"a").is_err() {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (408/400): keep reading until the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Row 1: slowloris. Every slow connection is closed by the header read timeout while
/// ordinary requests keep being answered.
#[test]
fn row01_slowloris_connections_are_closed_and_others_served() {
    require_kvm!();
    let s = server("header_read_timeout_ms = 500\nmax_connections = 64", "");
    let addr = s.addr;
    let slow: Vec<_> = (0..20).map(|_| std::thread::spawn(move || dribble_until_closed(addr))).collect();
    let mut served = 0;
    while !slow.iter().all(|h| h.is_finished()) {
        let r = s.post("/f/call/rt_i32", "[3]");
        assert_eq!((r.status, r.json()["result"].as_i64()), (200, Some(3)));
        served += 1;
    }
    for h in slow {
        assert!(h.join().unwrap(), "a slow connection outlived the patience");
    }
    assert!(served > 0);
}

/// Row 2: a body sent slowly after complete headers gets 408, and no sandbox is taken (the
/// request is not even admitted) while the body is incomplete.
#[test]
fn row02_slow_body_times_out_before_any_sandbox_is_taken() {
    require_kvm!();
    let s = server("body_read_timeout_ms = 1500", "");
    let mut c = Conn::open(s.addr);
    c.send(b"POST /f/call/rt_i32 HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n[").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.metric("glint_requests_in_flight{function=\"f\"}"), 0.0);
    assert_eq!(s.metric("glint_sandboxes{function=\"f\",state=\"busy\"}"), 0.0);
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.error_kind().as_str()), (408, "body_timeout"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());
}

/// Row 3: a Content-Length above the limit is refused at once, before any body byte is sent.
#[test]
fn row03_oversize_content_length_is_413_without_reading_the_body() {
    require_kvm!();
    let s = server("max_body_bytes = 1024", "");
    let mut c = Conn::open(s.addr);
    c.send(b"POST /f/call/rt_bytes HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n").unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.error_kind().as_str()), (413, "body_too_large"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());
}

/// Row 4: a chunked body that grows past the limit is refused as soon as it crosses it.
#[test]
fn row04_growing_chunked_body_is_413_once_over_the_limit() {
    require_kvm!();
    let s = server("max_body_bytes = 4096", "");
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    stream.write_all(b"POST /f/call/rt_bytes HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
    let chunk = format!("3e8\r\n{}\r\n", "a".repeat(1000));
    let mut got = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    while sent < 1000 && !got.windows(4).any(|w| w == b"\r\n\r\n") {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
        sent += 1;
        match stream.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "after {sent} chunks: {text:?}");
    assert!(sent < 1000, "the server read a megabyte before refusing");
}

/// Row 5: malformed chunked encoding: 400 and the connection closed.
#[test]
fn row05_malformed_chunked_bodies_are_400_and_close() {
    require_kvm!();
    let s = server("", "");
    for body in [&b"zz\r\n[1]\r\n0\r\n\r\n"[..], b"3\r\n[1]XY\r\n0\r\n\r\n", b"fffffffffffffffffffff\r\n"] {
        let mut c = Conn::open(s.addr);
        let mut req = b"POST /f/call/rt_i32 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        c.send(&req).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(body), r.text());
        assert!(c.closed_by_server());
    }
    assert_eq!(s.post("/f/call/rt_i32", "[1]").status, 200);
}

/// Row 6: thousands of headers, or a megabyte of them: 431.
#[test]
fn row06_too_many_or_too_large_headers_are_431() {
    require_kvm!();
    let s = server("max_headers = 100\nmax_header_bytes = 16384", "");
    let many: String = (0..2000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut c = Conn::open(s.addr);
    c.send(format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes()).unwrap();
    assert_eq!(c.read_response().unwrap().status, 431);
    let mut c = Conn::open(s.addr);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let big = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "b".repeat(1_000_000));
        let _ = writer.write_all(big.as_bytes());
    });
    assert_eq!(c.read_response().unwrap().status, 431);
    sender.join().unwrap();
    assert_eq!(s.get("/healthz").status, 200);
}

/// Row 7: Content-Length and Transfer-Encoding together (request smuggling): refused.
#[test]
fn row07_content_length_with_transfer_encoding_is_refused() {
    require_kvm!();
    let s = server("", "");
    for head in
        ["content-length: 3\r\ntransfer-encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n"]
    {
        let mut c = Conn::open(s.addr);
        let smuggled = "GET /f/call/ud2 HTTP/1.1\r\nhost: x\r\n\r\n";
        c.send(
            format!("POST /f/call/rt_i32 HTTP/1.1\r\nhost: x\r\n{head}\r\n3\r\n[1]\r\n0\r\n\r\n{smuggled}").as_bytes(),
        )
        .unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 400, "{head:?}");
        assert!(c.closed_by_server(), "nothing after a smuggling attempt is read");
    }
    assert_eq!(s.metric("glint_requests_total{function=\"f\",status=\"500\"}"), 0.0, "the smuggled request never ran");
    assert_eq!(s.metric("glint_requests_total{function=\"f\",status=\"200\"}"), 0.0);
}

/// Row 8: invalid UTF-8, dot segments, encoded slashes: 400, and the function never runs.
#[test]
fn row08_hostile_paths_are_400() {
    require_kvm!();
    let s = server("", "");
    for path in ["/f/call/%ff", "/f/../f/call/rt_i32", "/f/%2e%2e/call/rt_i32", "/f%2Fcall/rt_i32", "/f/call/rt%00i32"]
    {
        let r = s.post(path, "[1]");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    // Raw bytes that are not ASCII in the request line.
    let mut c = Conn::open(s.addr);
    c.send(b"POST /f/call/\xff\xfe HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n[1]").unwrap();
    let status = c.read_response().unwrap().status;
    assert!(status == 400 || status == 404, "{status}");
    assert_eq!(s.metric("glint_request_duration_seconds_count{function=\"f\"}"), 0.0);
}

/// Row 9: connections over the bound are refused (503, closed) and accepted ones still served.
#[test]
fn row09_connections_over_the_bound_are_refused_without_starving_the_others() {
    require_kvm!();
    let s = server("max_connections = 4\nheader_read_timeout_ms = 30000", "");
    let mut held: Vec<Conn> = (0..4).map(|_| Conn::open(s.addr)).collect();
    // Each held connection is accepted (a request on it works).
    for c in &mut held {
        assert_eq!(c.request("POST", "/f/call/rt_i32", &[], b"[1]").status, 200);
    }
    let mut extra = Conn::open(s.addr);
    let r = extra.read_response().unwrap();
    assert_eq!((r.status, r.error_kind().as_str()), (503, "too_many_connections"));
    assert!(extra.closed_by_server());
    assert_eq!(held[0].request("POST", "/f/call/rt_i32", &[], b"[2]").json()["result"], 2);
    drop(held.pop());
    let end = Instant::now() + PATIENCE;
    loop {
        let mut c = Conn::open(s.addr);
        c.send(&encode("POST", "/f/call/rt_i32", &[], b"[3]")).unwrap();
        match c.read_response() {
            Ok(r) if r.status == 200 => break,
            Ok(r) => assert_eq!(r.status, 503),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < end, "the freed place never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Scrape on a held connection: a new one may find the bound full.
    let metrics = held[0].request("GET", "/metrics", &[], b"").text();
    assert!(support::metric_value(&metrics, "glint_connections_rejected_total") >= 1.0, "{metrics}");
}

/// Row 10: pipelined requests, one of which faults its guest: all answered, in order.
#[test]
fn row10_pipelined_requests_are_answered_in_order_around_a_fault() {
    require_kvm!();
    let s = server("", "");
    let mut c = Conn::open(s.addr);
    let mut all = encode("POST", "/f/call/rt_i32", &[], b"[1]");
    all.extend(encode("POST", "/f/call/ud2", &[], b"[]"));
    all.extend(encode("POST", "/f/call/rt_i32", &[], b"[3]"));
    all.extend(encode("POST", "/f/call/panics", &[], b"[\"x\"]"));
    all.extend(encode("POST", "/f/call/rt_i32", &[], b"[5]"));
    c.send(&all).unwrap();
    let got: Vec<(u16, serde_json::Value)> = (0..5)
        .map(|_| {
            let r = c.read_response().unwrap();
            (r.status, r.json().get("result").cloned().unwrap_or_else(|| r.json()["error"].clone()))
        })
        .collect();
    let want =
        [(200, 1.into()), (500, "guest_fault".into()), (200, 3.into()), (500, "guest_error".into()), (200, 5.into())];
    assert_eq!(got, want);
}

/// Row 11: a client that disconnects while its guest runs: the call is killed, the sandbox is
/// restored and ready again, nothing is left in flight.
#[test]
fn row11_client_disconnect_kills_the_running_call() {
    require_kvm!();
    // A deadline far beyond the patience: only a kill can end the call in time.
    let s = server("", "timeout_ms = 600000\nmax_concurrency = 1\npool = { ready = 1, max = 1 }");
    for _ in 0..3 {
        let mut c = Conn::open(s.addr);
        c.send(&encode("POST", "/f/call/spin", &[], b"[]")).unwrap();
        s.wait_metric("glint_sandboxes{function=\"f\",state=\"busy\"}", 1.0);
        c.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(c);
        s.wait_metric("glint_requests_in_flight{function=\"f\"}", 0.0);
        s.wait_metric("glint_sandboxes{function=\"f\",state=\"ready\"}", 1.0);
        assert_eq!(s.post("/f/call/get_state", "[]").json()["result"], 0);
    }
    assert_eq!(s.metric("glint_calls_cancelled_total{function=\"f\"}"), 3.0);
}

/// Row 12: typed arguments out of range, NaN, wrong count, bad base64: 400 naming the parameter.
#[test]
fn row12_bad_typed_arguments_are_400_naming_the_parameter() {
    require_kvm!();
    let s = server("", "");
    let cases = [
        ("rt_i32", "[2147483648]", "parameter 1 (i32): 2147483648 is out of range for i32"),
        ("rt_u32", "[-1]", "parameter 1 (u32): -1 is out of range for u32"),
        ("rt_i64", "[9223372036854775808]", "parameter 1 (i64): 9223372036854775808 is out of range for i64"),
        ("rt_f64", "[NaN]", "the body is not JSON"),
        ("rt_f32", "[1e39]", "parameter 1 (f32): 1e39 is out of range for f32"),
        ("mix", "[1, 2, \"c\"]", "`mix` takes 6 argument(s)"),
        ("rt_bytes", "[\"not base64!\"]", "parameter 1 (Vec<u8>): not base64"),
        ("mix", "[1, -2, \"c\", true, 1.0, \"\"]", "parameter 2 (u64): -2 is out of range for u64"),
        ("rt_bool", "[\"true\"]", "parameter 1 (bool): expected true or false, got a string"),
        ("rt_i32", "{}", "the body must be a JSON array"),
    ];
    for (export, body, message) in cases {
        let r = s.post(&format!("/f/call/{export}"), body);
        assert_eq!(r.status, 400, "{export} {body}");
        let got = r.json()["message"].as_str().unwrap().to_owned();
        assert!(got.starts_with(message), "{export} {body}: {got}");
    }
    // Non-finite floats travel as strings.
    assert_eq!(s.post("/f/call/rt_f64", "[\"-inf\"]").json()["result"], "-inf");
}

/// Row 15: a guest that floods its log costs only its own requests, and a log pipeline that
/// does not drain (a stderr pipe nobody reads) never blocks a worker.
#[test]
fn row15_log_floods_are_budgeted_and_a_stuck_log_never_blocks() {
    require_kvm!();
    // `f` may log a lot (its lines fill the pipe within the first call), `g` only 2 KiB.
    let manifest = [
        testguest_fn("f", "/f", "max_log_bytes = 1048576\ntimeout_ms = 10000"),
        testguest_fn("g", "/g", "max_log_bytes = 2048\ntimeout_ms = 10000"),
        testguest_fn("h", "/h", "timeout_ms = 300"),
    ]
    .concat();
    let s = Server::start_with(&manifest, Stderr::StuckPipe, &[("GLINT_LOG", "debug")]);
    // 8 x 3000 lines: more than the 16384 lines the log channel holds.
    for _ in 0..8 {
        assert_eq!(s.post("/f/call/log_lines", "[3000]").json()["result"], 3000);
        assert_eq!(s.post("/g/call/log_lines", "[3000]").json()["result"], 3000);
        assert_eq!(s.post("/h/call/rt_i32", "[9]").json()["result"], 9);
    }
    assert_eq!(s.post("/h/call/log_forever", "[]").status, 504);
    assert_eq!(s.post("/f/call/rt_i32", "[10]").json()["result"], 10);
    // 3000 lines of about 9 bytes a call, 2048 bytes of them kept.
    let dropped = s.metric("glint_guest_log_lines_dropped_total{function=\"g\"}");
    assert!(dropped > 8.0 * 2000.0, "{dropped}");
    assert_eq!(s.metric("glint_guest_log_lines_dropped_total{function=\"f\"}"), 0.0);
}

/// Row 16: a result above the response limit is a 500 naming the kind; one above the guest's
/// output buffer never leaves the guest.
#[test]
fn row16_oversize_responses_are_500() {
    require_kvm!();
    let s = server("", "max_response_bytes = 4096");
    let r = s.post("/f/call/make_bytes", "[100000, 1]");
    assert_eq!((r.status, r.error_kind().as_str()), (500, "response_too_large"));
    let r = s.post("/f/call/make_bytes", "[67108864, 1]");
    assert_eq!(r.status, 500);
    assert_eq!(s.post("/f/call/make_bytes", "[3, 1]").json()["result"], "AQEB");
}
