//! `glint serve` with the C example guests: the C HTTP handler (`http_c`) behind a handler route,
//! and `hello_c`'s typed exports in quick mode, through a real server on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use support::{request, Conn, Server};

#[test]
fn a_c_http_handler_serves_its_routes() {
    require_kvm!();
    let manifest = format!(
        "[[function]]\nname = \"web\"\nimage = \"{}\"\nroute = \"/...\"\nkind = \"http\"\n",
        glint_guest_artifacts::HTTP_C
    );
    let s = Server::start(&manifest);
    let mut c = Conn::open(s.addr);
    let r = c.request("PUT", "/echo/a%20b?x=1", &[("x-a", "1")], b"body!");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "PUT /echo/a%20b?x=1\nbody!");
    assert_eq!(r.header("x-echo"), Some("1"));
    let r = c.request("GET", "/hello/ada%20l%C3%A9", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, ada lé!\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(c.request("GET", "/hello/%ff", &[], b"").status, 400);
    assert_eq!(c.request("GET", "/nothing", &[], b"").status, 404);
    // The handler fails the call: the server answers 500 and logs why; the client never sees it.
    let r = request(s.addr, "GET", "/fail", &[], b"");
    assert_eq!(r.status, 500);
    assert!(!r.text().contains("on purpose"), "{}", r.text());
    // The log line may land after the response: wait for it (a hang guard, not a timing check).
    let start = std::time::Instant::now();
    while !s.log().contains("the handler failed on purpose") {
        assert!(start.elapsed() < support::PATIENCE, "the failure is logged: {}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The server still answers after a failed call.
    assert_eq!(request(s.addr, "GET", "/hello/bo", &[], b"").text(), "Hello, bo!\n");
}

#[test]
fn a_c_guests_typed_exports_are_served_in_quick_mode() {
    require_kvm!();
    let s = Server::quick(glint_guest_artifacts::HELLO_C);
    let r = s.post("/call/add", "[2, 3]");
    assert_eq!((r.status, r.json()), (200, serde_json::json!({ "result": 5 })));
    assert_eq!(s.post("/call/hypot", "[3.0, 4.0]").json(), serde_json::json!({ "result": 5.0 }));
    assert_eq!(s.post("/call/echo", "[\"AP8Q\"]").json(), serde_json::json!({ "result": "AP8Q" }));
    // Every request runs in a freshly restored VM: the counter starts over each time.
    for _ in 0..3 {
        assert_eq!(s.post("/call/count", "[]").json(), serde_json::json!({ "result": 1 }));
    }
    assert_eq!(s.post("/call/peek", "[0]").status, 500, "a fault is the guest's failure");
    assert_eq!(s.post("/call/add", "[1, 1]").json(), serde_json::json!({ "result": 2 }));
}
