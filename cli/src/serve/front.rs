//! The HTTP front: accepting connections under the connection bound, hyper's HTTP/1 with the
//! head limits, and the request path from a complete head to a response.

use super::backend::{CallSlot, Invocation, Outcome};
use super::conn::{ConnIo, Framing};
use super::manifest::FunctionKind;
use super::respond::{json_response, text_response, Failure};
use super::{handler, metrics as m, typed, App, Function};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tracing::field::Empty;
use tracing::Instrument;

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished within the grace period.
    Drained,
    /// The grace period ended with requests still running.
    GraceExpired,
}

/// Counts open connections for the gauge; lives as long as the connection (and its linger).
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Serves `listener` until `stop` completes, then stops accepting, lets in-flight requests
/// finish within the grace period and returns.
pub async fn serve(app: Arc<App>, listener: TcpListener, stop: impl Future<Output = ()>) -> Stopped {
    let server = &app.server;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_headers(server.max_headers)
        .max_header_size(server.max_header_bytes)
        .keep_alive(true);
    let limit = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_REJECTED).increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let framing = Framing::new(server.max_header_bytes, server.max_headers);
        let io = TokioIo::new(ConnIo::new(stream, framing, (permit, OpenConnection::new())));
        let conn_app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req| {
            let app = Arc::clone(&conn_app);
            async move { Ok::<_, Infallible>(respond(&app, req).await) }
        });
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    app.start_draining();
    tracing::info!("stopping: no new connections; waiting for in-flight requests");
    match tokio::time::timeout(server.grace_period, graceful.shutdown()).await {
        Ok(()) => Stopped::Drained,
        Err(_) => Stopped::GraceExpired,
    }
}

/// Answers a connection over the bound with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"error\":\"too_many_connections\"}    ";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Per-request facts gathered on the way, for the span and the metrics.
#[derive(Default)]
struct Seen {
    builtin: bool,
    function: Option<usize>,
    exits: u64,
    host_calls: u64,
    usage: glint_caps::RequestUsage,
}

/// One request, start to finish.
pub async fn respond(app: &Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let request_id = app.request_id(req.headers().get("x-request-id"));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        function = Empty,
        route = Empty,
        status = Empty,
        duration_us = Empty,
        exits = Empty,
        host_calls = Empty,
        outbound = Empty,
        kv_writes = Empty,
        denials = Empty,
    );
    let mut seen = Seen::default();
    let result = dispatch(app, req, &request_id, &mut seen).instrument(span.clone()).await;
    let function = seen.function.and_then(|i| app.functions.get(i));
    let label: Arc<str> = function.map_or_else(|| Arc::from("-"), |f| Arc::clone(&f.name));
    let mut response = match result {
        Ok(r) => r,
        Err(failure) => {
            record_failure(&failure, &label, function, &span);
            audit_failure(&failure, function, &request_id);
            failure.into_response(&request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.record("duration_us", elapsed.as_micros() as u64);
    if let Some(f) = function {
        span.record("function", &*f.name);
        span.record("route", f.route.as_str());
        span.record("exits", seen.exits);
        span.record("host_calls", seen.host_calls);
        if seen.host_calls > 0 {
            span.record("outbound", seen.usage.outbound_requests);
            span.record("kv_writes", seen.usage.kv_writes);
            span.record("denials", seen.usage.denials);
        }
        metrics::histogram!(m::DURATION, "function" => Arc::clone(&f.name).to_string()).record(elapsed.as_secs_f64());
    }
    if !seen.builtin {
        metrics::counter!(m::REQUESTS, "function" => label.to_string(), "status" => status.as_u16().to_string())
            .increment(1);
    }
    tracing::debug!(parent: &span, "answered");
    response
}

fn record_failure(failure: &Failure, function: &str, f: Option<&Function>, span: &tracing::Span) {
    let function = function.to_owned();
    match failure {
        Failure::Overloaded => metrics::counter!(m::OVERLOADED, "function" => function).increment(1),
        Failure::Guest(e) => {
            let kind = e.kind();
            if kind != glint::ErrorKind::BadRequest {
                metrics::counter!(m::GUEST_FAULTS, "function" => function.clone(), "kind" => kind.as_str())
                    .increment(1);
            }
            if kind == glint::ErrorKind::Timeout {
                metrics::counter!(m::TIMEOUTS, "function" => function).increment(1);
            }
            let text = crate::failure::one_line(e);
            let text = match f.and_then(|f| f.caps.as_ref()) {
                Some(caps) => caps.redactor().redact(&text).into_owned(),
                None => text,
            };
            tracing::warn!(parent: span, kind = kind.as_str(), "guest call failed: {text}");
        }
        Failure::ResponseTooLarge { size, limit } => {
            tracing::warn!(parent: span, "the function returned {size} bytes, more than max_response_bytes = {limit}");
        }
        Failure::BadResponse(detail) => tracing::warn!(parent: span, "{detail}"),
        other => tracing::debug!(parent: span, kind = other.kind(), "request refused"),
    }
}

/// The audit event a failed request leaves (trust: cli/src/audit.rs), if any: overload, quota
/// exceeded, guest fault, timeout, kill. Capability denials are recorded by the caps hook.
fn audit_failure(failure: &Failure, f: Option<&Function>, request_id: &str) {
    use crate::audit::{AuditEvent, AuditKind};
    let Some((f, audit)) = f.and_then(|f| Some((f, f.audit.as_ref()?))) else { return };
    let redact = |text: String| match f.caps.as_ref() {
        Some(caps) => caps.redactor().redact(&text).into_owned(),
        None => text,
    };
    let event = match failure {
        Failure::Overloaded => Some(
            AuditEvent::new(AuditKind::Overload, "shed with 503: the function's running and waiting requests are full")
                .rule("max_concurrency"),
        ),
        Failure::ResponseTooLarge { size, limit } => Some(
            AuditEvent::new(
                AuditKind::QuotaExceeded,
                format!("response of {size} bytes over max_response_bytes = {limit}"),
            )
            .rule("max_response_bytes"),
        ),
        Failure::Guest(e) => {
            let kind = match e.kind() {
                glint::ErrorKind::GuestFault | glint::ErrorKind::GuestError => Some(AuditKind::GuestFault),
                glint::ErrorKind::Timeout => Some(AuditKind::Timeout),
                glint::ErrorKind::Killed => Some(AuditKind::Kill),
                glint::ErrorKind::ResourceLimit => Some(AuditKind::QuotaExceeded),
                _ => None,
            };
            kind.map(|k| AuditEvent::new(k, redact(crate::failure::one_line(e))).rule(e.kind().as_str()))
        }
        _ => None,
    };
    if let Some(mut event) = event {
        event = event.function(f.name.to_string()).request_id(request_id);
        if let Some(d) = &audit.image_digest {
            event = event.image_digest(d);
        }
        audit.log.record(event);
    }
}

/// Builtins, then routing, body, call.
async fn dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    request_id: &str,
    seen: &mut Seen,
) -> Result<Response<Full<Bytes>>, Failure> {
    if let Some(r) = builtin(app, &req)? {
        seen.builtin = true;
        return Ok(r);
    }
    let segments = super::route::decode_path(req.uri().path()).map_err(Failure::BadPath)?;
    let Some((pattern, &index, matched)) = app.router.route(&segments) else {
        return Err(Failure::NotFound("no function is routed at this path".into()));
    };
    let f = app.functions.get(index).ok_or_else(|| Failure::NotFound("no such function".into()))?;
    seen.function = Some(index);
    let limit = app.server.max_body_bytes;
    let body_timeout = app.server.body_read_timeout;
    let invocation = match &f.kind {
        FunctionKind::Typed { exports } => {
            if req.method() != Method::POST {
                return Err(Failure::MethodNotAllowed { allow: "POST" });
            }
            let export = matched.param("export").unwrap_or_default().to_owned();
            let allowed = exports.as_ref().is_none_or(|list| list.contains(&export));
            let sig = f
                .runtime
                .signature(&export)
                .filter(|_| allowed)
                .cloned()
                .ok_or_else(|| Failure::NotFound(format!("function `{}` has no export `{export}`", f.name)))?;
            let (parts, body) = req.into_parts();
            let body = read_body(&parts.headers, body, limit, body_timeout).await?;
            let args = typed::parse_args(&export, &sig, &body).map_err(Failure::BadArguments)?;
            Invocation::Typed { export, args }
        }
        FunctionKind::Http { handler } => {
            let (parts, body) = req.into_parts();
            let body = read_body(&parts.headers, body, limit, body_timeout).await?;
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let request = handler::encode_request(
                &parts.method,
                target,
                &parts.headers,
                &pattern.to_string(),
                &matched,
                request_id,
                &body,
            )?;
            Invocation::Http { handler: handler.clone(), request }
        }
    };
    let outcome = call(f, invocation, request_id).await?;
    seen.exits = outcome.stats.exits;
    seen.host_calls = outcome.stats.host_calls;
    seen.usage = outcome.usage;
    if outcome.stats.log_lines_dropped > 0 {
        metrics::counter!(m::LOG_DROPPED, "function" => f.name.to_string()).increment(outcome.stats.log_lines_dropped);
        tracing::warn!(
            dropped = outcome.stats.log_lines_dropped,
            "the guest logged more than max_log_bytes; lines dropped"
        );
    }
    let value = outcome.result.map_err(Failure::Guest)?;
    match (&f.kind, value) {
        (FunctionKind::Http { .. }, glint::Value::Bytes(b)) => handler::decode_response(&b, f.max_response_bytes),
        (FunctionKind::Http { .. }, other) => {
            Err(Failure::BadResponse(format!("the handler returned {} instead of bytes", other.ty())))
        }
        (FunctionKind::Typed { .. }, v) => {
            let body = serde_json::json!({ "result": typed::to_json(&v) });
            let text = body.to_string();
            if text.len() > f.max_response_bytes {
                return Err(Failure::ResponseTooLarge { size: text.len(), limit: f.max_response_bytes });
            }
            Ok(text_response(StatusCode::OK, "application/json", text))
        }
    }
}

/// `/healthz`, `/readyz`, `/metrics`.
fn builtin(app: &App, req: &Request<Incoming>) -> Result<Option<Response<Full<Bytes>>>, Failure> {
    let path = req.uri().path();
    if !super::manifest::RESERVED_PATHS.contains(&path) {
        return Ok(None);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Failure::MethodNotAllowed { allow: "GET, HEAD" });
    }
    Ok(Some(match path {
        "/healthz" => text_response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match app.readiness() {
            Ok(()) => text_response(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => json_response(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "not_ready": why })),
        },
        _ => match &app.metrics {
            Some(handle) => {
                for f in &app.functions {
                    metrics::gauge!(m::IN_FLIGHT, "function" => f.name.to_string()).set(f.admission.in_use() as f64);
                    let s = f.runtime.stats();
                    for (state, n) in [("ready", s.ready), ("busy", s.lent), ("creating", s.creating)] {
                        metrics::gauge!(m::SANDBOXES, "function" => f.name.to_string(), "state" => state).set(n as f64);
                    }
                }
                handle.run_upkeep();
                text_response(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
            }
            None => text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "metrics are not available\n"),
        },
    }))
}

/// Reads the whole body: 413 at once when Content-Length is over the limit, 413 as soon as a
/// streamed body crosses it, 408 when it is not complete in time, 400 when its framing breaks.
async fn read_body(
    headers: &hyper::HeaderMap,
    mut body: Incoming,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Failure::BodyTooLarge { limit });
    }
    let read = async {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::BadRequest(format!("the request body is malformed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    return Err(Failure::BodyTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| Failure::BodyTimeout)?
}

/// Stops the call of a request whose client went away (its future was dropped).
struct CancelOnDrop {
    slot: Option<Arc<CallSlot>>,
    timeout: Duration,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        if slot.cancel() {
            // The call was between taking its sandbox and entering the guest, where a kill is
            // not remembered: keep killing until it is over.
            let give_up = self.timeout + Duration::from_secs(1);
            tokio::spawn(async move {
                let end = Instant::now() + give_up;
                while slot.is_running() && Instant::now() < end {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    slot.cancel();
                }
            });
        }
    }
}

/// Admits the request, runs its call on the function's worker threads and waits for it.
async fn call(f: &Function, invocation: Invocation, request_id: &str) -> Result<Outcome, Failure> {
    let permit = f.admission.try_admit().ok_or(Failure::Overloaded)?;
    let slot = Arc::new(CallSlot::default());
    let (tx, rx) = oneshot::channel();
    let runtime = Arc::clone(&f.runtime);
    let job_slot = Arc::clone(&slot);
    let span = tracing::Span::current();
    let name = Arc::clone(&f.name);
    let request = glint_caps::RequestContext { request_id: request_id.into(), function: Arc::clone(&f.name) };
    f.lane
        .submit(Box::new(move || {
            let _entered = span.enter();
            if job_slot.is_cancelled() {
                metrics::counter!(m::CANCELLED, "function" => name.to_string()).increment(1);
                return;
            }
            let (outcome, sandbox) = runtime.run(invocation, &job_slot, request);
            if job_slot.is_cancelled() {
                metrics::counter!(m::CANCELLED, "function" => name.to_string()).increment(1);
            }
            // The call is over: free its place before the client can see the answer, so a
            // client's next request never meets a place still held by its previous one.
            drop(permit);
            let _ = tx.send(outcome);
            // Answer first, restore after: dropping the sandbox gives it back to the pool.
            drop(sandbox);
        }))
        .map_err(|_| Failure::ShuttingDown)?;
    let mut guard = CancelOnDrop { slot: Some(slot), timeout: f.call_timeout };
    let outcome = rx.await;
    guard.slot = None;
    outcome.map_err(|_| Failure::ShuttingDown)
}
