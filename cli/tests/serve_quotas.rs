//! `glint serve`'s run-time quotas, each exceeded once: the answer (status, error kind, the quota's
//! manifest key and value), the one audit event it leaves (`rule` = the manifest key, `detail`
//! naming the value), its counter in /metrics, and the next request of the same function served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::PathBuf;
use support::{testguest_fn, Conn, Gate, Response, Server};

/// A server for `functions` with an audit log.
struct Fixture {
    server: Server,
    audit: PathBuf,
    _dir: support::TempDir,
}

impl Fixture {
    /// `caps`: the `[capabilities]` tables (store quotas), if any.
    fn start(caps: &str, functions: &str) -> Fixture {
        let dir = support::TempDir::new("quota");
        let audit = dir.0.join("audit.jsonl");
        let manifest = format!(
            "[server]\ndata_dir = \"{}\"\n{caps}\n[trust]\naudit_log = \"{}\"\n\n{functions}",
            dir.0.join("data").display(),
            audit.display()
        );
        Fixture { server: Server::start(&manifest), audit, _dir: dir }
    }

    /// The audit events so far, without the `image_verified` ones of the start.
    fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] != "image_verified")
            .collect()
    }

    /// Exactly one run-time audit event so far: `event` for `function` with `rule`, a detail
    /// naming `rule = limit`, and the request id the client saw. Also checks the counter.
    fn expect_one(&self, event: &str, function: &str, rule: &str, limit: u64, answer: &Response) {
        let events = self.events();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(
            (e["event"].as_str(), e["function"].as_str(), e["rule"].as_str()),
            (Some(event), Some(function), Some(rule)),
            "{e}"
        );
        let detail = e["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("quota {rule} = {limit} exceeded: ")), "{detail}");
        assert_eq!(e["request_id"].as_str(), answer.header("x-request-id"), "{e}");
        let series = format!("glint_quota_exceeded_total{{function=\"{function}\",quota=\"{rule}\"}}");
        assert_eq!(self.server.metric(&series), 1.0, "{series}");
    }
}

/// The error body of a quota: kind, quota key, value.
fn expect_answer(r: &Response, status: u16, kind: &str, quota: &str, limit: u64) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["error"].as_str(), body["quota"].as_str(), body["limit"].as_u64()),
        (Some(kind), Some(quota), Some(limit)),
        "{body}"
    );
}

#[test]
fn call_time_timeout_ms() {
    require_kvm!();
    let f = Fixture::start("", &testguest_fn("t", "/t", "timeout_ms = 300"));
    let r = f.server.post("/t/call/spin", "[]");
    expect_answer(&r, 504, "timeout", "timeout_ms", 300);
    f.expect_one("timeout", "t", "timeout_ms", 300, &r);
    assert_eq!(f.server.metric("glint_timeouts_total{function=\"t\"}"), 1.0);
    assert_eq!(f.server.post("/t/call/rt_i32", "[7]").json()["result"], 7);
}

#[test]
fn memory_memory_mib() {
    require_kvm!();
    let f = Fixture::start("", &testguest_fn("m", "/m", "memory_mib = 16"));
    // 32 MiB in a 16 MiB guest: the heap cannot hold it.
    let r = f.server.post("/m/call/make_bytes", "[33554432, 1]");
    expect_answer(&r, 500, "quota_exceeded", "memory_mib", 16);
    f.expect_one("quota_exceeded", "m", "memory_mib", 16, &r);
    assert!(f.events()[0]["detail"].as_str().unwrap().contains("could not allocate 33554432 bytes"));
    assert_eq!(f.server.post("/m/call/make_bytes", "[3, 1]").json()["result"], "AQEB");
}

#[test]
fn host_calls_per_request_max_host_calls() {
    require_kvm!();
    let f = Fixture::start("", &http_fn("h", "/...", "max_host_calls = 1", ""));
    // `/time` reads two clocks: two host calls.
    let r = f.server.get("/time");
    expect_answer(&r, 500, "quota_exceeded", "max_host_calls", 1);
    f.expect_one("quota_exceeded", "h", "max_host_calls", 1, &r);
    // `/random` makes one.
    let r = f.server.get("/random");
    assert_eq!((r.status, r.text().len()), (200, 32), "{}", r.text());
}

#[test]
fn log_bytes_per_request_max_log_bytes() {
    require_kvm!();
    let functions = [
        testguest_fn("l", "/l", "max_log_bytes = 2048\nlog_overflow = \"fail\""),
        testguest_fn("d", "/d", "max_log_bytes = 2048"),
    ]
    .concat();
    let f = Fixture::start("", &functions);
    // 3000 lines of about 9 bytes: past 2048 bytes.
    let r = f.server.post("/l/call/log_lines", "[3000]");
    expect_answer(&r, 500, "quota_exceeded", "max_log_bytes", 2048);
    f.expect_one("quota_exceeded", "l", "max_log_bytes", 2048, &r);
    assert_eq!(f.server.post("/l/call/log_lines", "[3]").json()["result"], 3);
    // The default, log_overflow = "drop": the call goes on without the lines past the budget,
    // and the quota is still reported.
    assert_eq!(f.server.post("/d/call/log_lines", "[3000]").json()["result"], 3000);
    let events = f.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[1]["event"].as_str(), events[1]["rule"].as_str()),
        (Some("quota_exceeded"), Some("max_log_bytes"))
    );
    assert!(
        events[1]["detail"].as_str().unwrap().starts_with("quota max_log_bytes = 2048 exceeded: "),
        "{}",
        events[1]
    );
    assert_eq!(f.server.metric("glint_quota_exceeded_total{function=\"d\",quota=\"max_log_bytes\"}"), 1.0);
}

#[test]
fn response_size_max_response_bytes() {
    require_kvm!();
    let f = Fixture::start("", &testguest_fn("r", "/r", "max_response_bytes = 1024"));
    let r = f.server.post("/r/call/make_bytes", "[2000, 7]");
    expect_answer(&r, 500, "response_too_large", "max_response_bytes", 1024);
    f.expect_one("quota_exceeded", "r", "max_response_bytes", 1024, &r);
    assert_eq!(f.server.post("/r/call/make_bytes", "[3, 1]").json()["result"], "AQEB");
}

#[test]
fn key_value_bytes_per_store_quota_bytes() {
    require_kvm!();
    let f = Fixture::start("[capabilities.kv_stores.default]\nquota_bytes = 64", &http_fn("kv", "/...", "", ""));
    let mut c = Conn::open(f.server.addr);
    // The guest gets the typed error (kind quota_exceeded) and answers 507 with its message.
    let r = c.request("PUT", "/kv/big", &[], &[b'z'; 100]);
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().starts_with("quota_exceeded: ") && r.text().contains("limited to 64"), "{}", r.text());
    f.expect_one("quota_exceeded", "kv", "kv_stores.default.quota_bytes", 64, &r);
    assert_eq!(c.request("PUT", "/kv/small", &[], b"ok").status, 204);
    assert_eq!(c.request("GET", "/kv/small", &[], b"").text(), "ok");
}

#[test]
fn outbound_requests_per_request_max_outbound_requests() {
    require_kvm!();
    let upstream = Gate::start();
    upstream.open();
    let f = Fixture::start("", &http_fn("o", "/...", "", ", max_outbound_requests = 2"));
    let r = f.server.get(&format!("{}&times=3", upstream.fetch_path()));
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().starts_with("quota_exceeded: ") && r.text().contains("limited to 2"), "{}", r.text());
    f.expect_one("quota_exceeded", "o", "max_outbound_requests", 2, &r);
    let r = f.server.get(&format!("{}&times=2", upstream.fetch_path()));
    assert_eq!((r.status, r.text().as_str()), (200, "released\n"));
}

/// A `[[function]]` of the example HTTP guest with `extra` lines and every capability it imports
/// granted (serve refuses an image that imports one not granted), `more_grants` appended to the
/// capabilities table.
fn http_fn(name: &str, route: &str, extra: &str, more_grants: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\nimage = \"{}\"\nroute = \"{route}\"\nkind = \"http\"\n{extra}\n\
capabilities = {{ clock = true, random = true, key_value_stores = [\"default\"], allowed_outbound_hosts = [\"http://127.0.0.1:*\"]{more_grants} }}\n\
variables = {{ greeting = \"Hello\" }}\n",
        glint_guest_artifacts::HTTP
    )
}
