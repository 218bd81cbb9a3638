//! `glint serve`: typed calls, every status of the table, isolation between requests, exact
//! metrics, start-time refusals. Each test runs the real binary on 127.0.0.1, port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;
use support::{request, testguest_fn, Conn, Server};

#[test]
fn quick_mode_serves_every_export_at_call() {
    require_kvm!();
    let s = Server::quick(glint_guest_artifacts::HELLO);
    let r = s.post("/call/add", "[2, 3]");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({ "result": 5 })));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
    let r = s.post("/call/echo", "[\"AP8Q\"]");
    assert_eq!(r.json(), serde_json::json!({ "result": "AP8Q" }), "Vec<u8> is base64 both ways");
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
}

#[test]
fn a_guest_faulting_in_a_loop_under_serve_leaves_at_most_max_files_bounded_cores() {
    require_kvm!();
    let cores = support::TempDir::new("serve-cores");
    let dir = cores.0.join("cores");
    let max_bytes = 1 << 20;
    let s = Server::quick_with(
        glint_guest_artifacts::TESTGUEST,
        &[
            "--core-dump",
            dir.to_str().unwrap(),
            "--core-dump-max-files",
            "3",
            "--core-dump-max-bytes",
            &max_bytes.to_string(),
        ],
    );
    for _ in 0..8 {
        let r = s.post("/call/divide_error", "[]");
        assert_eq!((r.status, r.error_kind()), (500, "guest_fault".to_owned()), "{}", r.text());
    }
    // The server is fine after the faults.
    assert_eq!(s.post("/call/rt_i32", "[7]").json(), serde_json::json!({ "result": 7 }));
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["glint-0.core", "glint-1.core", "glint-2.core"], "{}", s.log());
    for n in &names {
        let len = std::fs::metadata(dir.join(n)).unwrap().len();
        assert!(len > 0 && len <= max_bytes, "{n}: {len} bytes");
    }
    if common::gdb() {
        let core = dir.join("glint-0.core");
        let gdb = Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "bt", glint_guest_artifacts::TESTGUEST, core.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&gdb.stdout);
        assert!(text.contains("divide_error () at test/testguest/src/main.rs"), "{text}");
    }
}

/// 200, 400, 404, 405, 413, 500, 503, 504 on typed calls; 408 and 431 are in serve_hostile.rs.
#[test]
fn every_status_of_the_table_on_typed_calls() {
    require_kvm!();
    let manifest = [
        testguest_fn("t", "/t", "timeout_ms = 300\nmax_response_bytes = 1024"),
        support::http_fn("full", "/fetch", "max_concurrency = 1\nqueue = 0\ntimeout_ms = 120000"),
        "[server]\nmax_body_bytes = 4096\n".to_owned(),
    ]
    .concat();
    let s = Server::start(&manifest);
    let check = |r: &support::Response, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        if status != 200 {
            let body = r.json();
            assert_eq!(body["error"], kind, "{body}");
            assert_eq!(body["request_id"].as_str(), r.header("x-request-id"), "{body}");
        }
    };
    check(&s.post("/t/call/rt_i32", "[7]"), 200, "");
    assert_eq!(s.post("/t/call/rt_i32", "[7]").json()["result"], 7);
    check(&s.post("/t/call/rt_i32", "[1, 2]"), 400, "bad_request");
    check(&s.post("/nowhere", "[]"), 404, "not_found");
    check(&s.post("/t/call/no_such_export", "[]"), 404, "not_found");
    check(&s.get("/t/call/rt_i32"), 405, "method_not_allowed");
    assert_eq!(s.get("/t/call/rt_i32").header("allow"), Some("POST"));
    check(&s.post("/t/call/rt_bytes", &format!("[\"{}\"]", "A".repeat(8000))), 413, "body_too_large");
    check(&s.post("/t/call/ud2", "[]"), 500, "guest_fault");
    check(&s.post("/t/call/panics", "[\"the secret is 42\"]"), 500, "guest_error");
    let r = s.post("/t/call/panics", "[\"the secret is 42\"]");
    assert!(!r.text().contains("secret"), "guest text reaches the log, never the client: {}", r.text());
    check(&s.post("/t/call/returns_err", "[\"no\"]"), 500, "guest_error");
    check(&s.post("/t/call/make_bytes", "[2000, 7]"), 500, "response_too_large");
    check(&s.post("/t/call/spin", "[]"), 504, "timeout");
    // 503: the function `full` runs one request and queues none; a gated upstream holds it.
    let gate = support::Gate::start();
    let addr = s.addr;
    let held_path = gate.fetch_path();
    let held = std::thread::spawn(move || request(addr, "GET", &held_path, &[], b""));
    gate.wait_held(1);
    let r = request(s.addr, "GET", &gate.fetch_path(), &[], b"");
    check(&r, 503, "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    gate.open();
    assert_eq!(held.join().unwrap().text(), "released\n");
    // The log has the details the client did not get.
    let log = s.log();
    assert!(log.contains("invalid opcode") && log.contains("the secret is 42"), "{log}");
}

#[test]
fn a_request_never_sees_what_the_previous_one_left_in_the_vm() {
    require_kvm!();
    // One sandbox only, so the second request runs on the very VM the first one wrote.
    let s = Server::start(&testguest_fn("iso", "/iso", "max_concurrency = 1\npool = { ready = 1, max = 1 }"));
    let initial = s.post("/iso/call/secrets_get", "[]").json()["result"].clone();
    assert_eq!(initial, "0|none|0|0x1f80");
    for secret in [0xdead_beef_u64, 42] {
        assert_eq!(s.post("/iso/call/secrets_set", &format!("[{secret}]")).status, 200);
        assert_eq!(s.post("/iso/call/secrets_get", "[]").json()["result"], initial, "secret {secret} leaked");
    }
    assert_eq!(s.post("/iso/call/set_state", "[99]").status, 200);
    assert_eq!(s.post("/iso/call/get_state", "[]").json()["result"], 0);
    // A failed call does not leave a poisoned sandbox behind either.
    assert_eq!(s.post("/iso/call/ud2", "[]").status, 500);
    assert_eq!(s.post("/iso/call/rt_i32", "[5]").json()["result"], 5);
    // The sandbox may go back to the pool only after the response was sent: wait until it has.
    s.wait_metric("glint_sandboxes{function=\"iso\",state=\"ready\"}", 1.0);
}

#[test]
fn metrics_count_a_known_sequence_exactly() {
    require_kvm!();
    let s = Server::start(&[testguest_fn("a", "/a", "timeout_ms = 200"), testguest_fn("b", "/b", "")].concat());
    for i in 0..3 {
        assert_eq!(s.post("/a/call/rt_i32", &format!("[{i}]")).status, 200);
    }
    assert_eq!(s.post("/a/call/rt_i32", "[\"x\"]").status, 400);
    assert_eq!(s.post("/a/call/rt_u32", "[-1]").status, 400);
    assert_eq!(s.post("/a/call/ud2", "[]").status, 500);
    assert_eq!(s.post("/a/call/divide_error", "[]").status, 500);
    assert_eq!(s.post("/a/call/spin", "[]").status, 504);
    assert_eq!(s.post("/b/call/rt_bool", "[true]").status, 200);
    assert_eq!(s.post("/zzz", "").status, 404);
    let m = s.metrics();
    let expect = [
        ("glint_requests_total{function=\"a\",status=\"200\"}", 3.0),
        ("glint_requests_total{function=\"a\",status=\"400\"}", 2.0),
        ("glint_requests_total{function=\"a\",status=\"500\"}", 2.0),
        ("glint_requests_total{function=\"a\",status=\"504\"}", 1.0),
        ("glint_requests_total{function=\"b\",status=\"200\"}", 1.0),
        ("glint_requests_total{function=\"-\",status=\"404\"}", 1.0),
        ("glint_guest_faults_total{function=\"a\",kind=\"guest_fault\"}", 2.0),
        ("glint_guest_faults_total{function=\"a\",kind=\"timeout\"}", 1.0),
        ("glint_timeouts_total{function=\"a\"}", 1.0),
        ("glint_request_duration_seconds_count{function=\"a\"}", 8.0),
        ("glint_request_duration_seconds_count{function=\"b\"}", 1.0),
        ("glint_overload_rejections_total{function=\"a\"}", 0.0),
        ("glint_requests_in_flight{function=\"a\"}", 0.0),
        ("glint_sandboxes{function=\"a\",state=\"busy\"}", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(support::metric_value(&m, series), value, "{series} in\n{m}");
    }
    assert!(m.contains("# TYPE glint_request_duration_seconds histogram"), "{m}");
    // Scrapes and probes are not requests.
    assert!(!m.contains("status=\"200\"} 0") && !m.contains("function=\"-\",status=\"200\""), "{m}");
}

#[test]
fn the_request_id_of_a_client_is_kept_when_plain() {
    require_kvm!();
    let s = Server::start(&testguest_fn("a", "/a", ""));
    let mut c = Conn::open(s.addr);
    let r = c.request("POST", "/a/call/rt_i32", &[("x-request-id", "trace-123")], b"[1]");
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
    let r = c.request("POST", "/a/call/ud2", &[("x-request-id", "bad id with spaces")], b"[]");
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(r.json()["request_id"], id);
}

fn glint(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args).output().unwrap()
}

#[test]
fn a_bad_manifest_is_refused_at_start_naming_key_and_line() {
    let dir = support::TempDir::new("bad");
    let path = support::write(
        &dir.0,
        "glint.toml",
        "[server]\nmax_connections = 0\n\n[[function]]\nname = \"f\"\nimage = \"x\"\nroute = \"/f\"\nkind = \"typed\"\ntimeot_ms = 5\n",
    );
    let out = glint(&["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let line = format!("glint: {}:9: unknown field `timeot_ms`", path.display());
    assert!(err.lines().any(|l| l.starts_with(&line)), "{err}");
    let path = support::write(
        &dir.0,
        "glint2.toml",
        "[server]\nmax_connections = 0\n\n[[function]]\nname = \"f\"\nimage = \"x\"\nroute = \"f\"\nkind = \"typed\"\n",
    );
    let out = glint(&["serve", path.to_str().unwrap()]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 2, "one line per problem: {err}");
    assert!(err.contains(":2: `max_connections` = 0 is out of range") && err.contains(":7: `route` = \"f\""), "{err}");
}

#[test]
fn images_that_cannot_serve_are_refused_at_start() {
    require_kvm!();
    let dir = support::TempDir::new("img");
    let run = |text: &str| {
        let path = support::write(&dir.0, "glint.toml", text);
        let out = glint(&["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, err) = run("[[function]]\nname = \"m\"\nimage = \"missing.elf\"\nroute = \"/m\"\nkind = \"typed\"\n");
    assert_eq!(code, Some(3), "{err}");
    // The deploy-time policy reads every local image first (trust: rule `trusted_image`).
    assert!(
        err.lines().any(|l| l.starts_with("glint: ")
            && l.contains("denies function `m`: cannot read image")
            && l.ends_with("missing.elf: No such file or directory (os error 2)")),
        "{err}"
    );
    let (code, err) = run(&testguest_fn("h", "/h", "").replace("kind = \"typed\"", "kind = \"http\""));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("the image exports no handler `handle`"), "{err}");
    let (code, err) = run(&testguest_fn("e", "/e", "exports = [\"rt_i32\", \"nope\"]"));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("`exports` names `nope`, which the image does not export"), "{err}");
    let digest = format!("digest = \"sha256:{}\"", "0".repeat(64));
    let (code, err) = run(&testguest_fn("d", "/d", &digest));
    assert_eq!(code, Some(3), "{err}");
    // A wrong pin is refused by the deploy-time policy, with both digests.
    assert!(err.contains("policy `trusted_image` denies function `d`: image digest is sha256:"), "{err}");
    assert!(err.contains(&format!("the pin expects sha256:{}", "0".repeat(64))), "{err}");
}

#[test]
fn exports_can_be_limited_per_function() {
    require_kvm!();
    let s = Server::start(&testguest_fn("few", "/few", "exports = [\"rt_i32\"]"));
    assert_eq!(s.post("/few/call/rt_i32", "[1]").status, 200);
    let r = s.post("/few/call/ud2", "[]");
    assert_eq!((r.status, r.error_kind().as_str()), (404, "not_found"));
}
