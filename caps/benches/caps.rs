//! What the capabilities cost: key-value reads and durable writes on a real redb file, an outbound
//! request to a server on 127.0.0.1, and a guest request through a sandbox that uses a variable,
//! the clock and the store (the example HTTP guest's `/hello`), next to one that uses none
//! (`/echo`). Absolute figures drift on shared machines; read them as ratios.
//!
//! Run: `cargo bench -p glint-caps` (add a filter such as `-- kv`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use criterion::{criterion_group, criterion_main, Criterion};
use glint::{GuestImage, SandboxBuilder, Value};
use glint_caps::{CapsConfig, CapsContext, FunctionCaps, Grants, Variable, Variables};
use std::time::Duration;

fn encode(method: &str, target: &str) -> Vec<u8> {
    let mut out = Vec::new();
    glint_abi::http::put_request(&mut out, method, target, std::iter::empty(), b"").unwrap();
    out
}

/// A keep-alive HTTP server on 127.0.0.1 that answers every request with a short body.
fn upstream() -> (u16, std::sync::Arc<tiny_http::Server>) {
    let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let s = std::sync::Arc::clone(&server);
    std::thread::spawn(move || {
        for mut request in s.incoming_requests() {
            let _ = std::io::Read::read_to_end(request.as_reader(), &mut Vec::new());
            let _ = request.respond(tiny_http::Response::from_string("ok"));
        }
    });
    (port, server)
}

fn caps(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (port, server) = upstream();
    let ctx = CapsContext::new(&CapsConfig::default(), Some(dir.path())).unwrap();
    let grants = Grants {
        clock: true,
        key_value_stores: vec!["default".into()],
        allowed_outbound_hosts: vec![format!("http://127.0.0.1:{port}")],
        max_outbound_requests: Some(u32::MAX),
        ..Grants::default()
    };
    let vars = Variables::new().with("greeting", Variable::plain("Hi"));
    let f = FunctionCaps::new("bench", &grants, &vars, &ctx).unwrap();
    f.kv_set("default", "key", &[7; 100]).unwrap();

    let mut g = c.benchmark_group("caps");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    g.bench_function("kv_get_100b", |b| b.iter(|| f.kv_get("default", "key").unwrap()));
    g.bench_function("kv_set_100b_durable", |b| b.iter(|| f.kv_set("default", "key", &[8; 100]).unwrap()));
    let req = encode("GET", &format!("http://127.0.0.1:{port}/"));
    g.bench_function("http_send_loopback", |b| b.iter(|| f.http_send(&req).unwrap()));
    // The same exchange with a bare ureq agent on this thread: what the capability adds.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://127.0.0.1:{port}/");
    g.bench_function("ureq_direct_loopback", |b| {
        b.iter(|| agent.get(&url).call().unwrap().into_body().read_to_vec().unwrap())
    });

    let image = GuestImage::from_file(glint_guest_artifacts::HTTP).unwrap();
    let mut sb = f.register(SandboxBuilder::new()).build(&image).unwrap().init().unwrap();
    let echo = encode("GET", "/echo/");
    let hello = encode("GET", "/hello/bench");
    g.bench_function("guest_echo_no_capability", |b| {
        b.iter(|| sb.call("handle", &[Value::Bytes(echo.clone())]).unwrap())
    });
    g.bench_function("guest_hello_variable_clock_kv_get_set", |b| {
        b.iter(|| sb.call("handle", &[Value::Bytes(hello.clone())]).unwrap())
    });
    g.finish();
    server.unblock();
}

criterion_group!(benches, caps);
criterion_main!(benches);
