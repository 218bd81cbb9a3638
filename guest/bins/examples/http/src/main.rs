//! The example HTTP guest: one handler that answers a few routes with the standard capabilities
//! (a variable, the clock, the key-value store, outbound HTTP), plus a typed `add` export. Used by
//! `glint serve`'s tests and README, and by glint-caps' end-to-end tests.
//!
//! | route | what it does | capabilities |
//! | --- | --- | --- |
//! | any method `/echo/...` | 200, `x-echo: 1`, body `METHOD TARGET\n` + the request body; logs the request line | — |
//! | `GET /hello/:name` | `<greeting>, <name>! visit <n> at <unix seconds>` | variable `greeting`, clock, kv `default` |
//! | `GET /kv?prefix=p` | the keys starting with `p`, one per line | kv `default` |
//! | `GET /kv/:key` | the value, or 404 | kv `default` |
//! | `PUT /kv/:key` | stores the body: 204 | kv `default` |
//! | `DELETE /kv/:key` | 204, or 404 when absent | kv `default` |
//! | `GET /fetch?url=U` | `GET U` and relays status and body (`x-upstream-status` header) | outbound HTTP |
//! | `GET /auth` | 200 when `authorization: Bearer <token>` matches secret variable `token`, else 401 | variable `token` |
//! | `GET /random` | 16 random bytes, hex | random |
//! | `GET /time` | `wall <ns> monotonic <ns>` | clock |
//!
//! A capability error answers by its kind: quota_exceeded 507, timeout 504, denied and other
//! outbound failures 502, anything else 500; the body is the error message (which never holds
//! a secret). Anything else: 404.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use glint_guest::caps::{clock, kv, outbound, random, variables, ErrorKind};

glint_guest::capabilities!(clock, random, variables, kv, http);
use glint_guest::http::{percent_decode, Request, Response};
use glint_guest::HostCallError;

const STORE: &str = "default";

fn handle(req: Request) -> Response {
    let path = String::from(req.path());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = match (req.method.as_str(), segments.as_slice()) {
        (_, ["echo", ..]) => Ok(echo(&req)),
        ("GET", ["hello", name]) => hello(name),
        ("GET", ["kv"]) => list(&req),
        ("GET", ["kv", key]) => get(key),
        ("PUT", ["kv", key]) => put(key, &req.body),
        ("DELETE", ["kv", key]) => delete(key),
        ("GET", ["fetch"]) => fetch(&req),
        ("GET", ["auth"]) => auth(&req),
        ("GET", ["random"]) => random::bytes(16).map(|b| Response::text(200, &hex(&b))),
        ("GET", ["time"]) => time(),
        _ => Ok(Response::text(404, "no such route\n")),
    };
    answer.unwrap_or_else(|e| failure(&e))
}

fn failure(e: &HostCallError) -> Response {
    let status = match ErrorKind::of(e) {
        Some(ErrorKind::QuotaExceeded) => 507,
        Some(ErrorKind::Timeout) => 504,
        Some(ErrorKind::Denied | ErrorKind::TooLarge | ErrorKind::Unavailable) => 502,
        _ => 500,
    };
    Response::text(status, &format!("{}\n", e.message))
}

fn echo(req: &Request) -> Response {
    glint_guest::println!("echo {} {}", req.method, req.target);
    let mut body = format!("{} {}\n", req.method, req.target).into_bytes();
    body.extend_from_slice(&req.body);
    Response::new(200).with_header("x-echo", "1").with_body(body)
}

fn decode(segment: &str) -> Result<String, Response> {
    percent_decode(segment).filter(|s| !s.is_empty()).ok_or_else(|| Response::text(400, "bad path segment\n"))
}

fn hello(name: &str) -> Result<Response, HostCallError> {
    let name = match decode(name) {
        Ok(n) => n,
        Err(r) => return Ok(r),
    };
    let greeting = variables::get("greeting")?;
    let key = format!("visits/{name}");
    let visits = kv::get(STORE, &key)?
        .and_then(|v| core::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0)
        + 1;
    kv::set(STORE, &key, format!("{visits}").as_bytes())?;
    let secs = clock::wall_ns()? / 1_000_000_000;
    Ok(Response::text(200, &format!("{greeting}, {name}! visit {visits} at {secs}\n")))
}

fn list(req: &Request) -> Result<Response, HostCallError> {
    let prefix = req.query_param("prefix").unwrap_or_default();
    let mut body = String::new();
    for key in kv::list(STORE, &prefix)? {
        body.push_str(&key);
        body.push('\n');
    }
    Ok(Response::text(200, &body))
}

fn get(key: &str) -> Result<Response, HostCallError> {
    let key = match decode(key) {
        Ok(k) => k,
        Err(r) => return Ok(r),
    };
    Ok(match kv::get(STORE, &key)? {
        Some(value) => Response::new(200).with_header("content-type", "application/octet-stream").with_body(value),
        None => Response::text(404, "no such key\n"),
    })
}

fn put(key: &str, value: &[u8]) -> Result<Response, HostCallError> {
    let key = match decode(key) {
        Ok(k) => k,
        Err(r) => return Ok(r),
    };
    kv::set(STORE, &key, value)?;
    Ok(Response::new(204))
}

fn delete(key: &str) -> Result<Response, HostCallError> {
    let key = match decode(key) {
        Ok(k) => k,
        Err(r) => return Ok(r),
    };
    Ok(if kv::delete(STORE, &key)? { Response::new(204) } else { Response::text(404, "no such key\n") })
}

fn fetch(req: &Request) -> Result<Response, HostCallError> {
    let Some(url) = req.query_param("url") else {
        return Ok(Response::text(400, "missing ?url=\n"));
    };
    let upstream = outbound::get(&url)?;
    Ok(Response::new(upstream.status)
        .with_header("x-upstream-status", format!("{}", upstream.status))
        .with_body(upstream.body))
}

fn auth(req: &Request) -> Result<Response, HostCallError> {
    let token = variables::get("token")?;
    let expected = format!("Bearer {token}");
    let presented = req.header("authorization").unwrap_or_default();
    // Compare in time independent of where the first difference is.
    let same = presented.len() == expected.len()
        && presented.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    Ok(if same { Response::text(200, "welcome\n") } else { Response::text(401, "bad token\n") })
}

fn time() -> Result<Response, HostCallError> {
    Ok(Response::text(200, &format!("wall {} monotonic {}\n", clock::wall_ns()?, clock::monotonic_ns()?)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

glint_guest::http_handler!(handle; add);
