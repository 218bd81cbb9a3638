//! `glint serve`: glint as a function host over HTTP, a fresh VM per request.
//!
//! ```text
//! socket -> conn (framing check, lingering close) -> hyper http1 (header timeout, 431)
//!        -> front: request id, span, builtins, path check, route (longest match)
//!        -> body (413 by Content-Length or while streaming, 408) -> typed args / handler request
//!        -> limits: admission (N running + Q waiting, else 503 Retry-After)
//!        -> workers: the function's own OS threads -> backend: pool.take, call, answer, restore
//!        -> respond: status from Error::kind, JSON error body; metrics; span fields
//! ```
//!
//! One module per stage: [`manifest`], [`route`], [`conn`], [`front`], [`typed`], [`handler`],
//! [`limits`], [`workers`], [`backend`] (the only one that touches the glint core), [`respond`],
//! [`metrics`].

pub mod backend;
pub mod conn;
pub mod front;
pub mod handler;
pub mod limits;
pub mod loadgen;
pub mod manifest;
pub mod metrics;
pub mod quota;
pub mod respond;
pub mod route;
pub mod typed;
pub mod workers;

use backend::{Runtime, StartError};
use limits::Admission;
use manifest::{FunctionKind, Manifest, ServerConfig};
use metrics_exporter_prometheus::PrometheusHandle;
use route::Router;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use workers::Lane;

/// A function ready to serve.
#[derive(Debug)]
pub struct Function {
    /// Its name (metric label, log field).
    pub name: Arc<str>,
    /// Its route pattern as written in the manifest.
    pub route: String,
    /// Handler or typed calls.
    pub kind: FunctionKind,
    /// What it runs on.
    pub runtime: Arc<Runtime>,
    /// N running + Q waiting.
    pub admission: Arc<Admission>,
    /// Its worker threads.
    pub lane: Lane,
    /// Largest response body or typed result.
    pub max_response_bytes: usize,
    /// Deadline of each guest call.
    pub call_timeout: std::time::Duration,
    /// Guest memory (`memory_mib`), named by the memory quota's error.
    pub memory_mib: u64,
    /// Log bytes per request (`max_log_bytes`), named by the log quota's error.
    pub max_log_bytes: u64,
    /// Its capabilities (and the redactor of its secrets, for logging what its guest wrote).
    pub caps: Option<glint_caps::FunctionCaps>,
    /// Where this function's run-time audit events go (trust), and its image digest.
    pub audit: Option<FunctionAudit>,
}

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    /// Server limits.
    pub server: ServerConfig,
    /// Pattern -> index into `functions`.
    pub router: Router<usize>,
    /// The functions.
    pub functions: Vec<Function>,
    /// Renders `/metrics` (`None` if another recorder owns the process).
    pub metrics: Option<PrometheusHandle>,
    draining: AtomicBool,
    seq: AtomicU64,
    id_prefix: String,
}

/// A function's audit context: the server's audit log and the function's image digest.
#[derive(Debug, Clone)]
pub struct FunctionAudit {
    /// The audit log (shared by every function).
    pub log: crate::audit::AuditLog,
    /// `sha256:<hex>` of the function's image.
    pub image_digest: Option<String>,
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The manifest is unreadable or wrong.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// A function could not be prepared.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The capabilities could not be prepared (a grant, a variable, the key-value database).
    #[error("{}capabilities", function.as_ref().map(|(f, l)| format!("function `{f}` (line {l}): ")).unwrap_or_default())]
    Capabilities {
        /// The function and its line, when one function's grants are at fault.
        function: Option<(String, usize)>,
        /// What the capability code said.
        #[source]
        source: glint_caps::CapsError,
    },
    /// The OS refused a thread or the runtime.
    #[error("cannot start the server's threads")]
    Threads(#[source] std::io::Error),
}

impl App {
    /// Prepares every function of `manifest`: capabilities resolved (the key-value database
    /// opened if a store is granted), images checked, loaded and initialised, pools filling,
    /// worker threads started.
    ///
    /// # Errors
    /// The first function that cannot be prepared.
    pub fn new(manifest: &Manifest) -> Result<App, ServeError> {
        // Trust: every image verified at load (local) or pulled and verified (oci://), audited.
        let trust = crate::trust::ManifestTrust::new(manifest).map_err(StartError::Image)?;
        let audit = trust.audit().clone();
        let caps = glint_caps::CapsContext::new(&manifest.capabilities, Some(&manifest.server.data_dir))
            .map_err(|e| ServeError::Capabilities { function: None, source: e })?
            .on_denial(move |d| {
                ::metrics::counter!(metrics::DENIALS, "function" => d.function.to_string(), "capability" => d.capability)
                    .increment(1);
                tracing::warn!(
                    function = %d.function,
                    request_id = d.request_id.as_deref(),
                    capability = d.capability,
                    rule = d.rule,
                    "capability denied: {}",
                    d.detail
                );
                // A quota of the capabilities (key-value bytes, outbound requests) is a quota
                // like the others: its event and counter name the manifest key.
                let mut event = match &d.quota {
                    Some(hit) => {
                        ::metrics::counter!(metrics::QUOTA_EXCEEDED, "function" => d.function.to_string(), "quota" => hit.key.clone())
                            .increment(1);
                        quota::QuotaExceeded::of_capability(hit, &d.detail).audit_event()
                    }
                    None => crate::audit::AuditEvent::new(crate::audit::AuditKind::CapabilityDenied, d.detail.clone())
                        .rule(d.rule.to_string()),
                }
                .function(d.function.to_string());
                if let Some(id) = d.request_id.as_deref() {
                    event = event.request_id(id);
                }
                audit.record(event);
            });
        let mut functions = Vec::new();
        for spec in &manifest.functions {
            let loaded = trust.load(manifest, spec).map_err(StartError::Image)?;
            let fcaps = glint_caps::FunctionCaps::new(&spec.name, &spec.grants, &spec.variables, &caps)
                .map_err(|e| ServeError::Capabilities { function: Some((spec.name.clone(), spec.line)), source: e })?;
            let runtime = Runtime::guest(spec, &manifest.server, &loaded, &fcaps, &trust)?;
            functions.push(Function {
                name: spec.name.as_str().into(),
                route: spec.route.to_string(),
                kind: spec.kind.clone(),
                runtime: Arc::new(runtime),
                admission: Admission::new(spec.max_concurrency, spec.queue),
                lane: Lane::new(&spec.name, spec.max_concurrency).map_err(ServeError::Threads)?,
                max_response_bytes: spec.max_response_bytes,
                call_timeout: spec.timeout,
                memory_mib: spec.memory_mib,
                max_log_bytes: spec.max_log_bytes,
                caps: Some(fcaps),
                audit: Some(FunctionAudit {
                    log: trust.audit().clone(),
                    image_digest: loaded.image.verification().map(|v| v.digest().to_string()),
                }),
            });
            tracing::info!(function = %spec.name, route = %spec.route, "function ready");
        }
        let patterns = manifest.functions.iter().enumerate().map(|(i, f)| (f.pattern(), i)).collect();
        Ok(App::from_parts(manifest.server.clone(), Router::new(patterns), functions))
    }

    /// An app from prepared functions (the benchmark builds native ones).
    pub fn from_parts(server: ServerConfig, router: Router<usize>, functions: Vec<Function>) -> App {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        App {
            server,
            router,
            functions,
            metrics: metrics::install(),
            draining: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            id_prefix: format!("{:08x}", prefix & 0xffff_ffff),
        }
    }

    /// A request id: the client's `x-request-id` when it is short and plain, else a new one.
    pub fn request_id(&self, client: Option<&hyper::header::HeaderValue>) -> String {
        if let Some(v) = client.and_then(|v| v.to_str().ok()) {
            if (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return v.to_owned();
            }
        }
        format!("{}-{}", self.id_prefix, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Marks the server as stopping (`/readyz` answers 503 from then on).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether every function has a sandbox ready or serving, and the server is not stopping.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        if self.draining.load(Ordering::Acquire) {
            return Err(vec!["the server is shutting down".into()]);
        }
        let waiting: Vec<String> = self
            .functions
            .iter()
            .filter(|f| {
                let s = f.runtime.stats();
                s.ready == 0 && s.lent == 0
            })
            .map(|f| format!("function `{}` has no sandbox ready", f.name))
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    }

    /// Stops every function's worker threads after their queued calls.
    pub fn close(&self) {
        for f in &self.functions {
            f.lane.close();
        }
    }
}
