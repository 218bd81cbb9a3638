//! `glint serve` under load: bursts over the admission limit (hostile row 13), faulting and
//! looping tenants among 64 concurrent clients (row 14) with fds and memory back afterwards,
//! and SIGTERM with requests in flight (row 22).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{request, testguest_fn, Conn, Server, PATIENCE};

/// Row 13: with N running and Q waiting, a burst gets an immediate 503 with Retry-After for the
/// excess, and every accepted request succeeds.
#[test]
fn row13_a_burst_over_running_plus_waiting_is_shed() {
    require_kvm!();
    let s = Server::start(
        &[
            support::http_fn("f", "/fetch", "max_concurrency = 2\nqueue = 2\ntimeout_ms = 120000"),
            support::http_fn("g", "/...", ""),
        ]
        .concat(),
    );
    let gate = support::Gate::start();
    let addr = s.addr;
    // Fill the function: 2 running and 2 waiting, held by the gate.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let path = gate.fetch_path();
            std::thread::spawn(move || request(addr, "GET", &path, &[], b""))
        })
        .collect();
    gate.wait_held(2);
    s.wait_metric("glint_requests_in_flight{function=\"f\"}", 4.0);
    // The burst: every one refused at once, while the other function keeps answering.
    let burst: Vec<_> = (0..40)
        .map(|_| {
            let path = gate.fetch_path();
            std::thread::spawn(move || request(addr, "GET", &path, &[], b""))
        })
        .collect();
    for h in burst {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.error_kind().as_str()), (503, "overloaded"));
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(s.get("/echo/other").text(), "GET /echo/other\n");
    gate.open();
    for h in held {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "released\n"), "an accepted request failed");
    }
    assert_eq!(s.metric("glint_overload_rejections_total{function=\"f\"}"), 40.0);
    // A burst of short calls: each answer is a correct result or an immediate 503, never a hang.
    let t = Server::start(&testguest_fn("t", "/t", "max_concurrency = 2\nqueue = 2"));
    let addr = t.addr;
    let burst: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                (i, request(addr, "POST", "/t/call/busy", &[], format!("[{}]", 1_000_000 + i).as_bytes()))
            })
        })
        .collect();
    let mut ok = 0;
    for h in burst {
        let (_, r) = h.join().unwrap();
        match r.status {
            200 => ok += 1,
            503 => assert_eq!(r.header("retry-after"), Some("1")),
            other => panic!("{other}: {}", r.text()),
        }
    }
    assert!(ok >= 1, "a burst is served in part");
    assert_eq!(t.metric("glint_requests_total{function=\"t\",status=\"200\"}"), f64::from(ok));
}

/// A client loop: `count` requests on one keep-alive connection, reconnecting if the server
/// closes it. Returns (path, body, response) for each.
fn client(addr: std::net::SocketAddr, work: Vec<(String, String)>) -> Vec<(String, String, support::Response)> {
    let mut conn = Conn::open(addr);
    let mut out = Vec::new();
    for (path, body) in work {
        let r = conn.request("POST", &path, &[], body.as_bytes());
        if r.header("connection") == Some("close") {
            conn = Conn::open(addr);
        }
        out.push((path, body, r));
    }
    out
}

fn settle_fds(s: &Server) -> usize {
    // The scrape's own connection is the one left open.
    s.wait_metric("glint_connections_open", 1.0);
    // Lingering closes end a moment after the gauge: wait for the count to stop falling.
    let end = Instant::now() + PATIENCE;
    let mut last = s.open_fds();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = s.open_fds();
        if now == last || Instant::now() > end {
            return now;
        }
        last = now;
    }
}

/// Row 14 and the load test: 64 concurrent clients, 2,000 requests, 10% of them to a
/// function that faults, panics or loops; every other request answers correctly, and the
/// server's open fds and RSS are back near where they started.
#[test]
fn row14_faulting_tenants_cost_only_their_own_requests_and_nothing_leaks() {
    require_kvm!();
    let manifest = [
        testguest_fn("good", "/good", "queue = 512"),
        testguest_fn("bad", "/bad", "queue = 512\ntimeout_ms = 50"),
        "[server]\nmax_connections = 256\n".into(),
    ]
    .concat();
    let s = Server::start(&manifest);
    let addr = s.addr;
    // Warm up (pools full, allocator and code paths touched) before the baseline.
    let warm: Vec<(String, String)> = (0..100)
        .flat_map(|i| {
            [("/good/call/rt_i32".to_owned(), format!("[{i}]")), ("/bad/call/ud2".to_owned(), "[]".to_owned())]
        })
        .collect();
    client(addr, warm);
    let fds_before = settle_fds(&s);
    let rss_before = s.rss_kib();

    let total = 2000;
    let clients = 64;
    let mut work: Vec<Vec<(String, String)>> = vec![Vec::new(); clients];
    for i in 0..total {
        let job = if i % 10 == 0 {
            let bad = ["/bad/call/ud2", "/bad/call/spin", "/bad/call/panics"][(i / 10) % 3];
            (bad.to_owned(), if bad.ends_with("panics") { "[\"boom\"]".into() } else { "[]".into() })
        } else {
            ("/good/call/rt_i32".to_owned(), format!("[{i}]"))
        };
        work[i % clients].push(job);
    }
    let handles: Vec<_> = work.into_iter().map(|w| std::thread::spawn(move || client(addr, w))).collect();
    let mut counts = std::collections::BTreeMap::new();
    for h in handles {
        for (path, body, r) in h.join().unwrap() {
            *counts.entry((path.clone(), r.status)).or_insert(0) += 1;
            if path.starts_with("/good") {
                assert_eq!(r.status, 200, "{path} {body}: {}", r.text());
                let sent: i64 = body.trim_matches(['[', ']']).parse().unwrap();
                assert_eq!(r.json()["result"], sent, "{path} {body}");
            } else if path.ends_with("spin") {
                assert_eq!((r.status, r.error_kind().as_str()), (504, "timeout"));
            } else {
                assert_eq!(r.status, 500, "{path}: {}", r.text());
            }
        }
    }
    assert_eq!(counts.values().sum::<usize>(), total);
    let fds_after = settle_fds(&s);
    let rss_after = s.rss_kib();
    eprintln!(
        "load: {counts:?}\nserver fds {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    assert!(fds_after <= fds_before + 2, "fds {fds_before} -> {fds_after}");
    assert!(rss_after <= rss_before + 32 * 1024, "RSS {rss_before} KiB -> {rss_after} KiB");
    assert_eq!(s.metric("glint_requests_in_flight{function=\"good\"}"), 0.0);
    assert_eq!(s.metric("glint_sandboxes{function=\"bad\",state=\"busy\"}"), 0.0);
}

/// Graceful shutdown and row 22: SIGTERM with requests running and queued: each completes once,
/// new connections are refused, idle connections are closed, and the server exits 0.
#[test]
fn row22_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    require_kvm!();
    let manifest = [
        "[server]\ngrace_period_ms = 60000\n".to_owned(),
        support::http_fn("f", "/...", "max_concurrency = 2\nqueue = 8\ntimeout_ms = 120000"),
    ]
    .concat();
    let mut s = Server::start(&manifest);
    let gate = support::Gate::start();
    let addr = s.addr;
    let mut idle = Conn::open(addr);
    assert_eq!(idle.request("GET", "/echo/1", &[], b"").status, 200);
    // 2 running (at the gate) and 4 waiting.
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let path = gate.fetch_path();
            std::thread::spawn(move || request(addr, "GET", &path, &[], b""))
        })
        .collect();
    gate.wait_held(2);
    s.wait_metric("glint_requests_in_flight{function=\"f\"}", 6.0);
    s.sigterm();
    // New connections are refused once the listener is closed.
    let end = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < end, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(idle.closed_by_server(), "an idle keep-alive connection is closed at shutdown");
    gate.open();
    for h in in_flight {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "released\n"), "an in-flight request was cut");
    }
    assert_eq!(s.wait_exit(), Some(0), "{}", s.log());
    let log = s.log();
    assert!(log.contains("every in-flight request finished"), "{log}");
    // Each request answered once: 1 echo + 6 fetches.
    assert_eq!(log.matches("SIGTERM").count(), 1, "{log}");
}
