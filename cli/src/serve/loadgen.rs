//! `glint bench --http`: the server measured on loopback by an in-process load generator.
//!
//! Two servers, the same code from the socket to the worker thread: `native` answers
//! `POST /call/add` from a Rust function (no VM: the floor of the HTTP stack, routing, JSON and
//! the worker hop), `fresh` runs the guest's `add` in a freshly restored VM per request. The
//! load generator keeps `concurrency` keep-alive connections busy for `duration` after a warm-up
//! and reports throughput and latency percentiles. Client and server share the machine's cores,
//! as a sidecar load generator would.

use super::backend::{NativeFn, Runtime};
use super::limits::Admission;
use super::manifest::{self, FunctionKind, ServerConfig};
use super::route::{RoutePattern, Router};
use super::workers::Lane;
use super::{front, App, Function, ServeError};
use bytes::Bytes;
use glint::{Export, Signature, Value, ValueType};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the HTTP benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A server could not start.
    #[error("cannot start the server under test")]
    Serve(#[from] ServeError),
    /// The loopback connection failed.
    #[error("load generator I/O failed")]
    Io(#[from] std::io::Error),
    /// hyper failed.
    #[error("load generator HTTP failed")]
    Http(#[from] hyper::Error),
    /// A request was not answered 200 with the expected body.
    #[error("the server answered {status}: {body}")]
    Unexpected {
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
}

/// What one server did under load.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LoadResult {
    /// Requests answered per second.
    pub rps: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th-percentile latency.
    pub p99_us: f64,
    /// Requests measured.
    pub requests: u64,
}

/// The figures `glint bench --http` adds, with stable keys.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HttpReport {
    /// The native floor: requests per second.
    pub http_native_rps: f64,
    /// The native floor: median latency.
    pub http_native_p50_us: f64,
    /// The native floor: 99th percentile.
    pub http_native_p99_us: f64,
    /// A fresh VM per request: requests per second.
    pub http_fresh_rps: f64,
    /// A fresh VM per request: median latency.
    pub http_fresh_p50_us: f64,
    /// A fresh VM per request: 99th percentile.
    pub http_fresh_p99_us: f64,
    /// The native floor on one connection (no queueing): median latency.
    pub http_native_serial_p50_us: f64,
    /// A fresh VM per request on one connection: median latency.
    pub http_fresh_serial_p50_us: f64,
    /// Connections kept busy.
    pub http_concurrency: usize,
    /// Seconds each server was measured.
    pub http_seconds: f64,
}

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Connections kept busy.
    pub concurrency: usize,
    /// Measured time per server.
    pub duration: Duration,
    /// Unmeasured time first.
    pub warmup: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { concurrency: 32, duration: Duration::from_secs(3), warmup: Duration::from_millis(500) }
    }
}

fn add_signature() -> Signature {
    Signature { params: vec![ValueType::I32, ValueType::I32], result: ValueType::I32 }
}

/// The native server: `add` in Rust behind the same front, limits and worker threads.
fn native_app(server: ServerConfig, queue: usize) -> Result<App, ServeError> {
    let add: NativeFn = Arc::new(|name: &str, args: &[Value]| match (name, args) {
        ("add", [Value::I32(a), Value::I32(b)]) => Ok(Value::I32(a.wrapping_add(*b))),
        _ => Err(glint::Error::NoSuchFunction { name: name.to_owned() }),
    });
    let exports = vec![Export { name: "add".into(), signature: add_signature() }];
    let n = server.worker_threads;
    let route = RoutePattern::root();
    let function = Function {
        name: "native".into(),
        route: route.to_string(),
        kind: FunctionKind::Typed { exports: None },
        runtime: Arc::new(Runtime::native(exports, add)),
        admission: Admission::new(n, queue),
        lane: Lane::new("native", n).map_err(ServeError::Threads)?,
        max_response_bytes: 1 << 20,
        call_timeout: Duration::from_secs(10),
        caps: None,
        audit: None,
    };
    Ok(App::from_parts(server, Router::new(vec![(route.typed_calls(), 0)]), vec![function]))
}

/// Measures both servers for `guest` (which must export `add(i32, i32) -> i32`).
///
/// # Errors
/// A server that does not start, or a request that is not answered `{"result":5}`.
pub fn run(guest: &Path, options: &LoadOptions) -> Result<HttpReport, LoadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(manifest::cpus())
        .thread_name("glint-bench-io")
        .enable_all()
        .build()?;
    // Enough queue that the load generator is never shed: this measures speed, not shedding.
    let queue = options.concurrency * 4;
    let mut quick = manifest::quick(guest);
    for f in &mut quick.functions {
        f.queue = queue;
    }
    let fresh = App::new(&quick)?;
    if let Some(f) = fresh.functions.first() {
        if f.runtime.signature("add") != Some(&add_signature()) {
            return Err(LoadError::Unexpected { status: 0, body: "the guest exports no add(i32, i32) -> i32".into() });
        }
    }
    let native = native_app(quick.server.clone(), queue)?;
    // At 32 connections on a few cores the median is mostly queueing (Little's law); one
    // connection shows what a request costs on its own.
    let serial = LoadOptions { concurrency: 1, duration: options.duration / 3, warmup: options.warmup };
    let (n, f, n1, f1) = runtime.block_on(async {
        let native = Arc::new(native);
        let fresh = Arc::new(fresh);
        let n = measure(&native, options).await?;
        let f = measure(&fresh, options).await?;
        let n1 = measure(&native, &serial).await?;
        let f1 = measure(&fresh, &serial).await?;
        native.close();
        fresh.close();
        Ok::<_, LoadError>((n, f, n1, f1))
    })?;
    Ok(HttpReport {
        http_native_rps: n.rps,
        http_native_p50_us: n.p50_us,
        http_native_p99_us: n.p99_us,
        http_fresh_rps: f.rps,
        http_fresh_p50_us: f.p50_us,
        http_fresh_p99_us: f.p99_us,
        http_native_serial_p50_us: n1.p50_us,
        http_fresh_serial_p50_us: f1.p50_us,
        http_concurrency: options.concurrency,
        http_seconds: options.duration.as_secs_f64(),
    })
}

/// Serves `app` on an ephemeral loopback port, loads it, stops it.
async fn measure(app: &Arc<App>, options: &LoadOptions) -> Result<LoadResult, LoadError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(front::serve(Arc::clone(app), listener, async {
        let _ = stop_rx.await;
    }));
    let result = load(addr, options).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

/// `concurrency` connections, each sending `POST /call/add [2,3]` back to back.
async fn load(addr: SocketAddr, options: &LoadOptions) -> Result<LoadResult, LoadError> {
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let mut tasks = Vec::new();
    for _ in 0..options.concurrency {
        tasks.push(tokio::spawn(client(addr, measure_from, end)));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        let mine = t.await.map_err(|e| std::io::Error::other(e.to_string()))??;
        latencies.extend(mine);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Ok(LoadResult {
        rps: latencies.len() as f64 / options.duration.as_secs_f64(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        requests: latencies.len() as u64,
    })
}

/// One connection's loop; latencies (ns) of the requests completed in the measured window.
async fn client(addr: SocketAddr, measure_from: Instant, end: Instant) -> Result<Vec<u64>, LoadError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(1 << 14);
    let body = Bytes::from_static(b"[2,3]");
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let req = hyper::Request::post("/call/add")
            .header(hyper::header::HOST, "bench")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| LoadError::Unexpected { status: 0, body: e.to_string() })?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let got = resp.into_body().collect().await?.to_bytes();
        if status != 200 || got.as_ref() != b"{\"result\":5}" {
            return Err(LoadError::Unexpected { status, body: String::from_utf8_lossy(&got).into_owned() });
        }
        if sent >= measure_from {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    drop(sender);
    let _ = conn.await;
    Ok(latencies)
}

/// The comparison lines of the table, with the targets.
pub fn table(h: &HttpReport, fresh_call_us: f64, fresh_calls_per_sec_2: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "\nHTTP on loopback, {} connections, {:.0} s each:", h.http_concurrency, h.http_seconds);
    let _ = writeln!(out, "{:<42} {:>12} {:>10} {:>10}", "server", "requests/s", "p50 us", "p99 us");
    let _ = writeln!(
        out,
        "{:<42} {:>12.0} {:>10.1} {:>10.1}",
        "native (Rust handler, no VM)", h.http_native_rps, h.http_native_p50_us, h.http_native_p99_us
    );
    let _ = writeln!(
        out,
        "{:<42} {:>12.0} {:>10.1} {:>10.1}",
        "fresh VM per request (POST /call/add)", h.http_fresh_rps, h.http_fresh_p50_us, h.http_fresh_p99_us
    );
    let floor = h.http_native_rps.min(fresh_calls_per_sec_2);
    let _ = writeln!(
        out,
        "http_fresh_rps / min(http_native_rps, fresh_calls_per_sec_2_threads) = {:.2} (target >= 0.7)",
        h.http_fresh_rps / floor.max(1e-9)
    );
    let _ = writeln!(
        out,
        "http_fresh_p50_us - http_native_p50_us = {:.1} us, 2 x fresh_call_us = {:.1} us (target: at most)",
        h.http_fresh_p50_us - h.http_native_p50_us,
        2.0 * fresh_call_us
    );
    let _ = writeln!(
        out,
        "one connection: p50 native {:.1} us, fresh {:.1} us (difference {:.1} us)",
        h.http_native_serial_p50_us,
        h.http_fresh_serial_p50_us,
        h.http_fresh_serial_p50_us - h.http_native_serial_p50_us
    );
    out
}
