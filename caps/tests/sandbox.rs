//! End to end through real glint sandboxes: the example HTTP guest (`guest/bins/examples/http`)
//! calls every capability through `glint_guest::caps`, with the host functions `glint_caps`
//! registers, the key-value store in a temporary directory and a real upstream on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{request, Response, Upstream};
use glint::{ErrorKind, GuestImage, PoolConfig, Sandbox, SandboxBuilder, SandboxPool, Value};
use glint_caps::{
    enter_request, CapsConfig, CapsContext, CapsError, Denial, FunctionCaps, Grants, RequestContext, StoreConfig,
    Variable, Variables,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "tok-3f9a1c77e2";

fn image() -> GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| GuestImage::from_file(glint_guest_artifacts::HTTP).expect("load the http guest")).clone()
}

fn vars() -> Variables {
    Variables::new().with("greeting", Variable::plain("Hi")).with("token", Variable::secret(TOKEN))
}

fn grants(upstream: &Upstream) -> Grants {
    Grants {
        clock: true,
        random: true,
        key_value_stores: vec!["default".into()],
        allowed_outbound_hosts: vec![format!("http://127.0.0.1:{}", upstream.port)],
        outbound_timeout_ms: Some(5_000),
        ..Grants::default()
    }
}

fn context(dir: &Path, quota: u64) -> CapsContext {
    let mut config = CapsConfig::default();
    config.kv_stores.insert("default".into(), StoreConfig { quota_bytes: quota });
    CapsContext::new(&config, Some(dir)).unwrap()
}

fn sandbox(caps: &FunctionCaps) -> Sandbox {
    caps.register(SandboxBuilder::new().unknown_imports_as_traps(true)).build(&image()).unwrap().init().unwrap()
}

fn call(sb: &mut Sandbox, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let out = sb.call(glint_abi::http::HANDLER_EXPORT, &[Value::Bytes(request(method, target, headers, body))]);
    match out.unwrap() {
        Value::Bytes(b) => Response::decode(&b),
        other => panic!("the handler returned {other:?}"),
    }
}

#[test]
fn the_example_guest_uses_every_capability() {
    require_kvm!();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), 1 << 20);
    let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
    let mut sb = sandbox(&caps);

    // A variable, the clock and the store.
    let first = call(&mut sb, "GET", "/hello/ada", &[], b"");
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().starts_with("Hi, ada! visit 1 at "), "{}", first.text());
    let secs: u64 = first.text().trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 1_577_836_800, "a wall clock after 2020: {secs}");
    assert!(call(&mut sb, "GET", "/hello/ada", &[], b"").text().starts_with("Hi, ada! visit 2 at "));
    assert_eq!(caps.store("default").unwrap().get("visits/ada").unwrap().as_deref(), Some(&b"2"[..]));

    // Key-value routes, keys percent-decoded by the guest.
    assert_eq!(call(&mut sb, "PUT", "/kv/a%2Fb", &[], b"value one").status, 204);
    assert_eq!(call(&mut sb, "PUT", "/kv/a%2Fc", &[], b"two").status, 204);
    let got = call(&mut sb, "GET", "/kv/a%2Fb", &[], b"");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"value one"[..]));
    assert_eq!(call(&mut sb, "GET", "/kv?prefix=a%2F", &[], b"").text(), "a/b\na/c\n");
    assert_eq!(call(&mut sb, "DELETE", "/kv/a%2Fb", &[], b"").status, 204);
    assert_eq!(call(&mut sb, "DELETE", "/kv/a%2Fb", &[], b"").status, 404);
    assert_eq!(call(&mut sb, "GET", "/kv/a%2Fb", &[], b"").status, 404);

    // Outbound HTTP: allowed, and outside the allow-list (the error names the rule).
    let fetched = call(&mut sb, "GET", &format!("/fetch?url={}", upstream.url("/ok")), &[], b"");
    assert_eq!((fetched.status, fetched.text().as_str()), (200, "ok GET /ok x-test=\n"));
    let other = Upstream::start();
    let denied = call(&mut sb, "GET", &format!("/fetch?url={}", other.url("/ok")), &[], b"");
    assert_eq!(denied.status, 502);
    assert!(
        denied.text().starts_with("denied: ") && denied.text().contains("allowed_outbound_hosts"),
        "{}",
        denied.text()
    );
    assert_eq!(other.hits(), 0);

    // The secret variable is used, never shown.
    assert_eq!(call(&mut sb, "GET", "/auth", &[("authorization", &format!("Bearer {TOKEN}"))], b"").status, 200);
    assert_eq!(call(&mut sb, "GET", "/auth", &[("authorization", "Bearer wrong")], b"").status, 401);

    // Random bytes and the clock.
    let r1 = call(&mut sb, "GET", "/random", &[], b"").text();
    let r2 = call(&mut sb, "GET", "/random", &[], b"").text();
    assert!(r1.len() == 32 && r1.bytes().all(|b| b.is_ascii_hexdigit()) && r1 != r2, "{r1} {r2}");
    let time = call(&mut sb, "GET", "/time", &[], b"").text();
    assert!(time.starts_with("wall ") && time.contains(" monotonic "), "{time}");

    // The echo route and the typed export, for the server's tests.
    let echo = call(&mut sb, "POST", "/echo/x?y=1", &[], b"body");
    assert_eq!(
        (echo.status, echo.header("x-echo").as_deref(), echo.text().as_str()),
        (200, Some("1"), "POST /echo/x?y=1\nbody")
    );
    assert_eq!(sb.typed_fn::<(i32, i32), i32>("add").unwrap().call(&mut sb, (2, 3)).unwrap(), 5);
    assert_eq!(call(&mut sb, "GET", "/nowhere", &[], b"").status, 404);
}

#[test]
fn ungranted_capabilities_are_absent_or_refused_naming_the_grant() {
    require_kvm!();
    let ctx = CapsContext::new(&CapsConfig::default(), None).unwrap();
    let caps = FunctionCaps::new("bare", &Grants::default(), &Variables::new(), &ctx).unwrap();
    assert!(caps.imports().is_empty());
    // Nothing registered: the guest's host call finds no such function.
    let mut sb = sandbox(&caps);
    let r = call(&mut sb, "GET", "/time", &[], b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("glint:clock/wall@1"), "{}", r.text());
    // With the denial stubs, the refusal says which manifest entry would grant it.
    let denials = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&denials);
    let ctx = ctx.on_denial(move |d: &Denial| sink.lock().unwrap().push(d.clone()));
    let caps = FunctionCaps::new("bare", &Grants::default(), &Variables::new(), &ctx).unwrap();
    let mut sb = caps
        .register_denials(SandboxBuilder::new().unknown_imports_as_traps(true))
        .build(&image())
        .unwrap()
        .init()
        .unwrap();
    let r = call(&mut sb, "GET", "/kv/x", &[], b"");
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("glint:kv/get@1 is not granted") && r.text().contains("key_value_stores"),
        "{}",
        r.text()
    );
    let d = denials.lock().unwrap();
    assert_eq!((d.len(), d[0].rule, d[0].capability), (1, "not_granted", "glint:kv/get@1"));
}

#[test]
fn a_store_over_its_quota_refuses_through_the_guest() {
    require_kvm!();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let denials = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&denials);
    let ctx = context(dir.path(), 64).on_denial(move |d: &Denial| sink.lock().unwrap().push(d.clone()));
    let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
    let mut sb = sandbox(&caps);
    assert_eq!(call(&mut sb, "PUT", "/kv/k", &[], &[7; 40]).status, 204);
    let full = call(&mut sb, "PUT", "/kv/k2", &[], &[7; 40]);
    assert_eq!(full.status, 507);
    assert_eq!(
        full.text(),
        "quota_exceeded: key-value bytes of store \"default\" is limited to 64 (this call needs 83)\n"
    );
    assert_eq!(call(&mut sb, "GET", "/kv/k2", &[], b"").status, 404);
    let d = denials.lock().unwrap();
    assert_eq!((d.len(), d[0].rule), (1, "quota.kv_bytes"));
}

#[test]
fn data_survives_a_restart_on_the_same_directory() {
    require_kvm!();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    {
        let ctx = context(dir.path(), 1 << 20);
        let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
        let mut sb = sandbox(&caps);
        assert_eq!(call(&mut sb, "PUT", "/kv/kept", &[], b"across restarts").status, 204);
        assert!(call(&mut sb, "GET", "/hello/bob", &[], b"").text().contains("visit 1"));
    }
    // Everything of the first "server" is dropped: the database is closed. A new one opens it.
    let ctx = context(dir.path(), 1 << 20);
    let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
    let mut sb = sandbox(&caps);
    assert_eq!(call(&mut sb, "GET", "/kv/kept", &[], b"").body, b"across restarts");
    assert!(call(&mut sb, "GET", "/hello/bob", &[], b"").text().contains("visit 2"));
}

#[test]
fn per_request_limits_reset_with_each_request_of_a_pool() {
    require_kvm!();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), 1 << 20);
    let mut g = grants(&upstream);
    g.max_outbound_requests = Some(1);
    let caps = FunctionCaps::new("http", &g, &vars(), &ctx).unwrap();
    let pool = SandboxPool::new(
        &caps.register(SandboxBuilder::new().unknown_imports_as_traps(true)),
        &image(),
        PoolConfig { max_sandboxes: 2, ready_target: 1, ..PoolConfig::default() },
    )
    .unwrap();
    let fetch = request("GET", &format!("/fetch?url={}", upstream.url("/ok")), &[], b"");
    for id in 0..3 {
        let guard = enter_request(RequestContext { request_id: format!("req-{id}").into(), function: "http".into() });
        let mut sb = pool.take().unwrap();
        let Value::Bytes(out) = sb.call("handle", &[Value::Bytes(fetch.clone())]).unwrap() else { panic!() };
        assert_eq!(Response::decode(&out).status, 200, "request {id}");
        let Value::Bytes(out) = sb.call("handle", &[Value::Bytes(fetch.clone())]).unwrap() else { panic!() };
        let second = Response::decode(&out);
        assert_eq!(second.status, 507, "request {id}: the second fetch of one request is over the limit");
        assert!(second.text().contains("outbound requests per request is limited to 1"), "{}", second.text());
        drop(sb);
        let usage = guard.finish();
        assert_eq!((usage.outbound_requests, usage.denials), (1, 1));
    }
    assert_eq!(upstream.hits(), 3);
}

#[test]
fn a_stopped_call_does_not_wait_for_its_outbound_request() {
    require_kvm!();
    let upstream = Upstream::start();
    let ctx = CapsContext::new(&CapsConfig::default(), None).unwrap();
    let g = Grants {
        allowed_outbound_hosts: vec![format!("http://127.0.0.1:{}", upstream.port)],
        outbound_timeout_ms: Some(60_000),
        ..Grants::default()
    };
    let caps = FunctionCaps::new("http", &g, &Variables::new(), &ctx).unwrap();
    let mut sb = caps
        .register(SandboxBuilder::new().unknown_imports_as_traps(true).call_timeout(Some(Duration::from_millis(500))))
        .build(&image())
        .unwrap()
        .init()
        .unwrap();
    let slow = request("GET", &format!("/fetch?url={}", upstream.url("/slow")), &[], b"");
    let e = sb.call("handle", &[Value::Bytes(slow)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    // The upstream still holds the request (it answers after 30 s): the call ended on its
    // deadline, not when the network gave up.
    assert_eq!(upstream.hits(), 1);
    assert_eq!(upstream.slow_finished.load(std::sync::atomic::Ordering::Acquire), 0);
}

#[test]
fn secrets_stay_out_of_logs_errors_and_debug_output() {
    require_kvm!();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), 1 << 20);
    let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
    let redactor = caps.redactor().clone();
    let builder =
        caps.register(SandboxBuilder::new().unknown_imports_as_traps(true)).on_log(move |r: &glint::LogRecord| {
            sink.lock().unwrap().push(redactor.redact(&r.message).into_owned());
        });
    let mut sb = builder.build(&image()).unwrap().init().unwrap();
    // A client sends the secret in a query; the guest logs its request line.
    let echo = call(&mut sb, "GET", &format!("/echo/?token={TOKEN}"), &[], b"");
    assert_eq!(echo.status, 200);
    let logged = lines.lock().unwrap().join("\n");
    assert!(logged.contains("echo GET /echo/?token=<secret>"), "{logged}");
    assert!(!logged.contains(TOKEN), "{logged}");
    // Errors about variables name them, never their values; Debug output hides secrets.
    let e = caps.variable("nope").unwrap_err();
    for text in [e.to_string(), format!("{e:?}"), format!("{caps:?}"), format!("{:?}", vars()), format!("{ctx:?}")] {
        assert!(!text.contains(TOKEN), "{text}");
    }
    // A guest that asks for a variable or store named like the secret gets an error without it.
    for e in [caps.variable(TOKEN).unwrap_err(), caps.kv_get(TOKEN, "k").unwrap_err()] {
        assert!(!e.to_string().contains(TOKEN) && !format!("{e:?}").contains(TOKEN), "{e}");
        let failed = glint::Error::HostFunction { name: "x".into(), source: std::sync::Arc::new(e) };
        assert!(CapsError::find(&failed).is_some());
    }
}

#[test]
fn many_guests_writing_one_key_at_once_leave_one_whole_value() {
    require_kvm!();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), 1 << 20);
    let caps = FunctionCaps::new("http", &grants(&upstream), &vars(), &ctx).unwrap();
    let builder = caps.register(SandboxBuilder::new().unknown_imports_as_traps(true));
    let last_values: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let builder = builder.clone();
                s.spawn(move || {
                    let mut sb = builder.build(&image()).unwrap().init().unwrap();
                    let mut last = Vec::new();
                    for i in 0..10 {
                        last = format!("writer {t} write {i} {}", "y".repeat(t * 13 + i)).into_bytes();
                        assert_eq!(call(&mut sb, "PUT", "/kv/shared", &[], &last).status, 204);
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let store = caps.store("default").unwrap();
    let value = store.get("shared").unwrap().unwrap();
    assert!(last_values.contains(&value), "the winner is some writer's last write, whole");
    let (usage, counted) = (store.usage().unwrap(), store.recount().unwrap());
    assert_eq!((usage.bytes, usage.keys, usage.seq), (counted.bytes, 1, 40));
}
