//! A real `glint serve` (the binary, as a child process on 127.0.0.1 with an ephemeral port) and
//! a small HTTP/1.1 client over `TcpStream`, able to send what well-behaved clients never do.
#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any single test step may wait: a hang guard, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("glint-serve-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the server's stderr is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Into a file in the temporary directory (read with [`Server::log`]).
    File,
    /// Into a pipe nobody reads: once it is full, every write to it would block.
    StuckPipe,
}

/// A running `glint serve`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    log: PathBuf,
}

/// `[[function]]` of the test guest with extra lines.
pub fn testguest_fn(name: &str, route: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\nimage = \"{}\"\nroute = \"{route}\"\nkind = \"typed\"\n{extra}\n",
        glint_guest_artifacts::TESTGUEST
    )
}

impl Server {
    /// Writes `manifest` to a temporary directory and serves it.
    pub fn start(manifest: &str) -> Server {
        Server::start_with(manifest, Stderr::File, &[])
    }

    pub fn start_with(manifest: &str, stderr: Stderr, env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("srv");
        let path = dir.0.join("glint.toml");
        std::fs::write(&path, manifest).unwrap();
        Server::spawn(&["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"], dir, stderr, env)
    }

    /// `glint serve --guest GUEST`.
    pub fn quick(guest: &str) -> Server {
        Server::spawn(&["serve", "--guest", guest, "--listen", "127.0.0.1:0"], TempDir::new("quick"), Stderr::File, &[])
    }

    /// `glint serve --guest GUEST` with more options.
    pub fn quick_with(guest: &str, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--guest", guest, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Server::spawn(&args, TempDir::new("quick"), Stderr::File, &[])
    }

    fn spawn(args: &[&str], dir: TempDir, stderr: Stderr, env: &[(&str, &str)]) -> Server {
        let log = dir.0.join("stderr.log");
        let err = match stderr {
            Stderr::File => Stdio::from(std::fs::File::create(&log).unwrap()),
            Stderr::StuckPipe => Stdio::piped(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_glint"));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(l) if !l.is_empty() => l,
            _ => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!("glint serve did not start ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line:?}"));
        let addr = addr.parse().unwrap();
        // The stuck pipe's read end lives in `child.stderr` (kept open, never read).
        Server { child, addr, dir, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        request(self.addr, "POST", path, &[], body.as_bytes())
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.text()
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Waits until `series` reaches `value` (a hang guard: panics after PATIENCE).
    pub fn wait_metric(&self, series: &str, value: f64) {
        let end = Instant::now() + PATIENCE;
        loop {
            let text = self.metrics();
            if metric_value(&text, series) == value {
                return;
            }
            assert!(Instant::now() < end, "{series} never became {value}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit (hang guard) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < end, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (e.g. `glint_requests_total{function="f",status="200"}`) in a
/// Prometheus text page; label order as the exporter prints it. 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The `error` kind of an error body.
    pub fn error_kind(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// A connection to the server.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send(&encode(method, path, headers, body)).unwrap();
        self.read_response().unwrap()
    }

    /// Reads one response (Content-Length framing: the server always sends it).
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut head = Vec::new();
        loop {
            let n = self.reader.read_until(b'\n', &mut head)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        assert!(parsed.parse(&head).unwrap().is_complete());
        let status = parsed.code.unwrap();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Response { status, headers, body })
    }

    /// Whether the server closed the connection (EOF or reset) within the patience.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// An HTTP/1.1 request as bytes, with Host and (for a body) Content-Length.
pub fn encode(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a new connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Conn::open(addr).request(method, path, headers, body)
}

/// Path of a file next to the test binary's temporary directory.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// How many iterations of the test guest's `busy` take about `target` on this machine now
/// (measured once through the server): for tests that need a call in flight for a while and
/// check that it was, rather than assuming it.
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
pub fn busy_iterations(server: &Server, path: &str, target: Duration) -> u64 {
    let n = 20_000_000u64;
    let start = Instant::now();
    let r = server.post(path, &format!("[{n}]"));
    assert_eq!(r.status, 200, "{}", r.text());
    let per = start.elapsed().as_secs_f64() / n as f64;
    ((target.as_secs_f64() / per.max(1e-10)) as u64).clamp(n, 50_000_000_000)
}

/// An upstream HTTP server on 127.0.0.1 that holds every request until [`Gate::open`]: guest
/// calls that fetch from it (the example HTTP guest's `/fetch?url=`) stay in flight exactly as
/// long as a test wants, whatever the machine's speed.
pub struct Gate {
    pub addr: SocketAddr,
    state: std::sync::Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>,
}

impl Gate {
    pub fn start() -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new((std::sync::Mutex::new((false, 0usize)), std::sync::Condvar::new()));
        let shared = std::sync::Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let shared = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    let (lock, cv) = &*shared;
                    let mut s = lock.lock().unwrap();
                    s.1 += 1;
                    cv.notify_all();
                    let end = Instant::now() + PATIENCE;
                    while !s.0 && Instant::now() < end {
                        s = cv.wait_timeout(s, Duration::from_millis(50)).unwrap().0;
                    }
                    drop(s);
                    let _ =
                        write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nreleased\n");
                });
            }
        });
        Gate { addr, state }
    }

    /// Waits until `n` requests are held.
    pub fn wait_held(&self, n: usize) {
        let (lock, cv) = &*self.state;
        let end = Instant::now() + PATIENCE;
        let mut s = lock.lock().unwrap();
        while s.1 < n {
            assert!(Instant::now() < end, "only {} requests reached the gate", s.1);
            s = cv.wait_timeout(s, Duration::from_millis(50)).unwrap().0;
        }
    }

    /// Lets every held (and later) request through.
    pub fn open(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().0 = true;
        cv.notify_all();
    }

    /// The path that makes the example HTTP guest fetch from the gate.
    pub fn fetch_path(&self) -> String {
        format!("/fetch?url=http://{}/held", self.addr)
    }
}

/// A `[[function]]` of the example HTTP guest with every capability it imports granted (outbound
/// to any 127.0.0.1 port, with a timeout beyond the patience) and extra lines.
pub fn http_fn(name: &str, route: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\nimage = \"{}\"\nroute = \"{route}\"\nkind = \"http\"\n{extra}\n\
capabilities = {{ clock = true, random = true, key_value_stores = [\"default\"], allowed_outbound_hosts = [\"http://127.0.0.1:*\"], outbound_timeout_ms = 120000 }}\n\
variables = {{ greeting = \"Hello\" }}\n",
        glint_guest_artifacts::HTTP
    )
}
