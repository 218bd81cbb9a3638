//! `glint serve` with HTTP handler guests and capabilities: every status on a handler route,
//! key-value persistence across a restart, outbound HTTP to an allowed local server and a
//! denied one, variables and secrets, and images refused at start for an ungranted import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{request, Conn, Server};

/// Everything the example HTTP guest imports, granted.
const ALL_GRANTS: &str = r#"capabilities = { clock = true, random = true, key_value_stores = ["default"], allowed_outbound_hosts = ["http://127.0.0.1:*"] }
variables = { greeting = "Hello", token = { value = "s3cr3t-t0ken", secret = true } }"#;

fn http_fn(name: &str, route: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\nimage = \"{}\"\nroute = \"{route}\"\nkind = \"http\"\n{extra}\n",
        glint_guest_artifacts::HTTP
    )
}

/// A plain HTTP server on 127.0.0.1 for outbound calls: `/hi` answers at once, `/slow` after
/// `slow`; it stops when dropped.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start(slow: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let _ = reader.read_line(&mut line);
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let body = if line.contains("/slow") {
                        std::thread::sleep(slow);
                        "slow upstream\n"
                    } else {
                        "upstream says hi\n"
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Upstream { addr, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

#[test]
fn a_handler_route_answers_and_every_status_is_provoked() {
    require_kvm!();
    let upstream = Upstream::start(Duration::from_secs(20));
    let manifest = [
        "[server]\nmax_body_bytes = 4096\nmax_header_bytes = 8192\n".to_owned(),
        http_fn("web", "/...", &format!("max_response_bytes = 2048\n{ALL_GRANTS}")),
        // The guest routes on the whole path: `/fetch` goes to `one`, the rest to `web`.
        http_fn("one", "/fetch", &format!("max_concurrency = 1\nqueue = 0\ntimeout_ms = 1000\n{ALL_GRANTS}")),
    ]
    .concat();
    let s = Server::start(&manifest);
    // 200: the handler sees method, target, body; its headers come back, framing is the server's.
    let mut c = Conn::open(s.addr);
    let r = c.request("PUT", "/echo/a%20b?x=1", &[("x-glint-route", "/spoofed")], b"body!");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "PUT /echo/a%20b?x=1\nbody!");
    assert_eq!(r.header("x-echo"), Some("1"));
    assert!(r.header("x-request-id").is_some());
    // The guest's own statuses pass through (its 404 for a route it does not know).
    assert_eq!(c.request("GET", "/nothing", &[], b"").status, 404);
    // 400 (path), 413 (body), 431 (headers).
    let bad = c.request("GET", "/echo/%2e%2e", &[], b"");
    assert_eq!((bad.status, bad.error_kind().as_str()), (400, "bad_request"));
    let big = request(s.addr, "POST", "/echo", &[], &[b'x'; 5000]);
    assert_eq!((big.status, big.error_kind().as_str()), (413, "body_too_large"));
    assert_eq!(request(s.addr, "GET", "/echo", &[("x-big", &"h".repeat(9000))], b"").status, 431);
    // 500: the echoed body is over max_response_bytes.
    let r = request(s.addr, "POST", "/echo", &[], &[b'y'; 3000]);
    assert_eq!((r.status, r.error_kind().as_str()), (500, "response_too_large"));
    // 503 while `one` (one running, none queued) waits for a slow upstream; that call then
    // ends at the function's deadline: 504.
    let addr = s.addr;
    let slow = format!("/fetch?url=http://{}/slow", upstream.addr);
    let held = std::thread::spawn(move || request(addr, "GET", &slow, &[], b""));
    s.wait_metric("glint_requests_in_flight{function=\"one\"}", 1.0);
    let r = request(s.addr, "GET", "/fetch?url=http://127.0.0.1:1/", &[], b"");
    assert_eq!((r.status, r.error_kind().as_str(), r.header("retry-after")), (503, "overloaded", Some("1")));
    let r = held.join().unwrap();
    assert_eq!((r.status, r.error_kind().as_str()), (504, "timeout"), "{}", r.text());
    // 404: with `/...` taken, a typed-only server shows it (no route at all).
    let t = Server::start(&support::testguest_fn("t", "/t", ""));
    assert_eq!(t.get("/elsewhere").error_kind(), "not_found");
}

#[test]
fn key_value_data_survives_a_restart_and_quotas_hold() {
    require_kvm!();
    let data = support::TempDir::new("kv");
    let manifest = format!(
        "[server]\ndata_dir = \"{}\"\n[capabilities.kv_stores.default]\nquota_bytes = 64\n{}",
        data.0.display(),
        http_fn("kv", "/...", ALL_GRANTS)
    );
    {
        let s = Server::start(&manifest);
        let mut c = Conn::open(s.addr);
        assert_eq!(c.request("PUT", "/kv/apple", &[], b"red").status, 204);
        assert_eq!(c.request("PUT", "/kv/avocado", &[], b"green").status, 204);
        assert_eq!(c.request("PUT", "/kv/banana", &[], b"yellow").status, 204);
        assert_eq!(c.request("GET", "/kv/apple", &[], b"").text(), "red");
        assert_eq!(c.request("GET", "/kv?prefix=a", &[], b"").text(), "apple\navocado\n");
        assert_eq!(c.request("DELETE", "/kv/banana", &[], b"").status, 204);
        assert_eq!(c.request("GET", "/kv/banana", &[], b"").status, 404);
        // 64 bytes: keys and values so far take 23; 50 more do not fit.
        let r = c.request("PUT", "/kv/big", &[], &[b'z'; 50]);
        assert_eq!(r.status, 507, "{}", r.text());
        assert!(r.text().starts_with("quota_exceeded"), "{}", r.text());
        assert_eq!(s.metric("glint_capability_denials_total{function=\"kv\",capability=\"glint:kv/set@1\"}"), 1.0);
    }
    let s = Server::start(&manifest);
    let mut c = Conn::open(s.addr);
    assert_eq!(c.request("GET", "/kv/apple", &[], b"").text(), "red", "data survives the restart");
    assert_eq!(c.request("GET", "/kv?prefix=", &[], b"").text(), "apple\navocado\n");
    assert_eq!(c.request("GET", "/kv/big", &[], b"").status, 404);
}

#[test]
fn outbound_http_reaches_allowed_hosts_only() {
    require_kvm!();
    let upstream = Upstream::start(Duration::from_millis(1));
    let allowed = format!("http://127.0.0.1:{}", upstream.addr.port());
    let grants = ALL_GRANTS.replace("http://127.0.0.1:*", &allowed);
    let s = Server::start(&http_fn("out", "/...", &grants));
    let r = s.get(&format!("/fetch?url=http://{}/hi", upstream.addr));
    assert_eq!((r.status, r.text().as_str(), r.header("x-upstream-status")), (200, "upstream says hi\n", Some("200")));
    // Another port of the same host is outside the allow-list.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = s.get(&format!("/fetch?url=http://{}/hi", other.local_addr().unwrap()));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().starts_with("denied:") && r.text().contains("allowed_outbound_hosts"), "{}", r.text());
    assert_eq!(s.metric("glint_capability_denials_total{function=\"out\",capability=\"glint:http/send@1\"}"), 1.0);
    assert!(
        s.log().contains("capability denied") && s.log().contains("rule=\"allowed_outbound_hosts\""),
        "{}",
        s.log()
    );
}

#[test]
fn variables_reach_the_guest_and_secrets_never_reach_the_log() {
    require_kvm!();
    let s = Server::start_with(&http_fn("vars", "/...", ALL_GRANTS), support::Stderr::File, &[("GLINT_LOG", "debug")]);
    let r = s.get("/hello/ada");
    assert!(r.text().starts_with("Hello, ada! visit 1 at "), "{}", r.text());
    assert_eq!(request(s.addr, "GET", "/auth", &[("authorization", "Bearer s3cr3t-t0ken")], b"").status, 200);
    assert_eq!(request(s.addr, "GET", "/auth", &[("authorization", "Bearer guess")], b"").status, 401);
    let log = s.log();
    assert!(log.contains("function=\"vars\""), "{log}");
    assert!(!log.contains("s3cr3t-t0ken"), "a secret reached the log:\n{log}");
}

#[test]
fn an_image_importing_an_ungranted_capability_is_refused_at_start() {
    require_kvm!();
    let dir = support::TempDir::new("grant");
    let manifest =
        http_fn("web", "/...", "capabilities = { clock = true, random = true }\nvariables = { greeting = \"hi\" }");
    let path = support::write(&dir.0, "glint.toml", &manifest);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("glint: ")).collect();
    // Reported by the deploy-time policy check (trust: rule `capability_grant`), which runs first.
    let kv = "policy `capability_grant` denies function `web`: imports `glint:kv/get@1` but its manifest entry does not grant it: add `key_value_stores = [\"<store>\"]` under [function.capabilities]";
    assert!(lines.iter().any(|l| l.ends_with(kv)), "{err}");
    assert!(lines.iter().any(|l| l.contains("`glint:http/send@1`") && l.contains("allowed_outbound_hosts")), "{err}");
    assert!(!lines.iter().any(|l| l.contains("glint:clock")), "clock is granted: {err}");
    // The test guest imports no capability: it starts without grants.
    let path = support::write(&dir.0, "ok.toml", &support::testguest_fn("t", "/t", ""));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn typed_exports_of_a_handler_guest_are_not_reachable_through_its_handler_route() {
    require_kvm!();
    let s = Server::start(
        &[
            http_fn("web", "/web/...", ALL_GRANTS),
            http_fn("calc", "/calc", ALL_GRANTS).replace("kind = \"http\"", "kind = \"typed\""),
        ]
        .concat(),
    );
    assert_eq!(s.post("/calc/call/add", "[2, 40]").json()["result"], 42);
    assert_eq!(s.post("/web/call/add", "[2, 40]").status, 404, "the handler answers its own 404");
}
