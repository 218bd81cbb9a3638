//! Helpers shared by glint-caps' integration tests: a real HTTP upstream on 127.0.0.1, KVM gating,
//! request encoding.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A real HTTP/1.1 server on 127.0.0.1 with an ephemeral port, one thread per request, stopped on
/// drop. Routes:
/// - `/ok`: 200, body `ok METHOD URL x-test=<x-test header>\n` + the request body;
/// - `/slow`: waits up to 30 s before answering (the wait ends early when the server stops);
/// - `/slow-body`: headers at once, then one body byte every 500 ms for 30 s;
/// - `/huge`: 200 with a 2 MiB body and a content-length;
/// - `/huge-chunked`: 200 with a 2 MiB chunked body (no content-length);
/// - `/redirect`: 302 to `/ok`;
/// - anything else: 404.
pub struct Upstream {
    pub port: u16,
    /// Requests the server received.
    pub hits: Arc<AtomicUsize>,
    /// `/slow` requests that ran to their end (answered after the full wait).
    pub slow_finished: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub const HUGE: usize = 2 << 20;

impl Upstream {
    pub fn start() -> Upstream {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("start the upstream server"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let slow_finished = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, hits, slow_finished, stop) =
                (Arc::clone(&server), Arc::clone(&hits), Arc::clone(&slow_finished), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else { continue };
                    hits.fetch_add(1, Ordering::AcqRel);
                    let (stop, slow_finished) = (Arc::clone(&stop), Arc::clone(&slow_finished));
                    std::thread::spawn(move || answer(request, &stop, &slow_finished));
                }
            })
        };
        Upstream { port, hits, slow_finished, server, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Acquire)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits in small steps, for `total` or until `stop`; whether it waited the whole time.
fn wait(total: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < total {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(step);
        waited += step;
    }
    true
}

struct Trickle {
    left: usize,
    stop: Arc<AtomicBool>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() || !wait(Duration::from_millis(500), &self.stop) {
            return Ok(0);
        }
        self.left -= 1;
        buf[0] = b'.';
        Ok(1)
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn answer(mut request: tiny_http::Request, stop: &Arc<AtomicBool>, slow_finished: &AtomicUsize) {
    let url = request.url().to_owned();
    let path = url.split('?').next().unwrap_or_default().to_owned();
    let _ = match path.as_str() {
        "/ok" => {
            let x_test = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("x-test"))
                .map(|h| h.value.as_str().to_owned())
                .unwrap_or_default();
            let mut body = Vec::new();
            let _ = request.as_reader().read_to_end(&mut body);
            let mut out = format!("ok {} {url} x-test={x_test}\n", request.method()).into_bytes();
            out.extend_from_slice(&body);
            request.respond(tiny_http::Response::from_data(out).with_header(header("x-upstream", "yes")))
        }
        "/slow" => {
            if wait(Duration::from_secs(30), stop) {
                slow_finished.fetch_add(1, Ordering::AcqRel);
            }
            request.respond(tiny_http::Response::from_string("finally\n"))
        }
        "/slow-body" => {
            let trickle = Trickle { left: 60, stop: Arc::clone(stop) };
            request.respond(tiny_http::Response::new(200.into(), vec![], trickle, Some(60), None))
        }
        "/huge" => request.respond(tiny_http::Response::from_data(vec![b'x'; HUGE])),
        "/huge-chunked" => {
            let body = std::io::Cursor::new(vec![b'x'; HUGE]);
            request.respond(tiny_http::Response::new(200.into(), vec![], body, None, None))
        }
        "/redirect" => request.respond(tiny_http::Response::empty(302).with_header(header("location", "/ok"))),
        _ => request.respond(tiny_http::Response::empty(404)),
    };
}

/// Whether this test may use KVM: skips (false, with a note) when /dev/kvm cannot be opened,
/// unless GLINT_REQUIRE_KVM=1 (set by CI), where a missing KVM fails the test.
pub fn kvm() -> bool {
    let ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if !ok {
        assert!(
            std::env::var("GLINT_REQUIRE_KVM").as_deref() != Ok("1"),
            "/dev/kvm cannot be opened but GLINT_REQUIRE_KVM=1"
        );
        eprintln!("note: /dev/kvm cannot be opened; skipping this KVM test");
    }
    ok
}

/// Skips the calling test when KVM is unavailable (see [`kvm`]).
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::common::kvm() {
            return;
        }
    };
}

/// An encoded HTTP request (`glint_abi::http`).
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    glint_abi::http::put_request(&mut out, method, target, headers.iter().map(|(n, v)| (*n, v.as_bytes())), body)
        .expect("encode request");
    out
}

/// A decoded HTTP response: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn decode(bytes: &[u8]) -> Response {
        let r = glint_abi::http::read_response(bytes).expect("decode response");
        Response {
            status: r.status,
            headers: r.headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
            body: r.body.to_vec(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}
