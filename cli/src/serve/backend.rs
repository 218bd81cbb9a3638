//! The glue between the server and the glint core, kept in one place: building a function's
//! pool from its manifest entry, running one call in a fresh sandbox on a worker thread, and
//! killing it when its client goes away.
//!
//! Every sandbox carries a [`RequestState`] as its data: the capability host functions count the
//! request's quotas in it (through `glint::Caller`), the pool gives each checkout a fresh one, and
//! [`Runtime::run`] says which request it serves before the call and reads what it used after.

use super::manifest::{FunctionKind, FunctionSpec, ServerConfig};
use glint::{
    CallStats, Export, InterruptHandle, Limits, PoolConfig, PoolStats, PooledSandbox, SandboxBuilder, SandboxPool,
    Signature, Template, Value, ValueType, WhenEmpty,
};
use glint_caps::{FunctionCaps, Redactor, RequestContext, RequestState, RequestUsage};
use std::sync::{Arc, Mutex, PoisonError};

/// Why a function could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The image or the pool failed.
    #[error("function `{function}` (line {line}): {source}")]
    Glint {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// What glint said.
        #[source]
        source: glint::Error,
    },
    /// The image was refused by its trust policy, or could not be loaded or pulled.
    #[error(transparent)]
    Image(#[from] crate::trust::ImageLoadError),
    /// The image imports capabilities its manifest entry does not grant: one line each.
    #[error("{}", ungranted.iter().map(|(import, hint)| format!(
        "function `{function}` (line {line}) imports `{import}` but its manifest entry does not grant it: add {hint}"
    )).collect::<Vec<_>>().join("\n"))]
    Ungranted {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// Each import not granted, with the manifest entry that would grant it.
        ungranted: Vec<(&'static str, &'static str)>,
    },
    /// Something the manifest asks for that this build cannot do yet, or an export mismatch.
    #[error("function `{function}` (line {line}): {detail}")]
    Refused {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// Why.
        detail: String,
    },
}

impl StartError {
    /// The glint error behind it, if any (decides the exit status).
    pub fn glint(&self) -> Option<&glint::Error> {
        match self {
            StartError::Glint { source, .. } => Some(source),
            StartError::Refused { .. } | StartError::Ungranted { .. } => None,
            StartError::Image(crate::trust::ImageLoadError::Image { source, .. }) => Some(&**source),
            StartError::Image(_) => None,
        }
    }
}

/// A Rust function standing in for a guest (the benchmark's no-VM floor).
pub type NativeFn = Arc<dyn Fn(&str, &[Value]) -> Result<Value, glint::Error> + Send + Sync>;

enum Engine {
    Guest(SandboxPool<RequestState>),
    Native(NativeFn),
}

/// What a function runs on.
pub struct Runtime {
    engine: Engine,
    exports: Vec<Export>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("exports", &self.exports.len()).finish_non_exhaustive()
    }
}

/// One call to make.
#[derive(Debug)]
pub enum Invocation {
    /// A typed export with decoded arguments.
    Typed {
        /// The export.
        export: String,
        /// Its arguments, already checked against its signature.
        args: Vec<Value>,
    },
    /// The HTTP handler export with the encoded request.
    Http {
        /// The export.
        handler: String,
        /// The request, encoded for the guest.
        request: Vec<u8>,
    },
}

/// What a call produced.
#[derive(Debug)]
pub struct Outcome {
    /// The guest's result or error.
    pub result: Result<Value, glint::Error>,
    /// Exits, host calls, log lines of the call.
    pub stats: CallStats,
    /// What the call did with its capabilities.
    pub usage: glint_caps::RequestUsage,
}

/// Page-rounded buffer size for `payload` bytes plus framing slack.
fn buffer_for(payload: u64, floor: u64) -> u64 {
    let slack = 64 << 10;
    payload.saturating_add(slack).div_ceil(4096).saturating_mul(4096).max(floor)
}

/// The sandbox configuration of a function: its sandboxes carry a [`RequestState`].
pub fn builder_for(spec: &FunctionSpec, server: &ServerConfig) -> SandboxBuilder<RequestState> {
    let default_buffer = 2 << 20;
    let input = buffer_for(server.max_body_bytes.saturating_add(server.max_header_bytes as u64), default_buffer);
    let output = buffer_for(spec.max_response_bytes as u64, default_buffer);
    let builder = SandboxBuilder::<RequestState>::with_data()
        .memory_mib(spec.memory_mib)
        .call_timeout(Some(spec.timeout))
        .input_buffer_size(input)
        .output_buffer_size(output)
        .limits(Limits {
            max_host_calls: spec.max_host_calls,
            max_log_bytes: spec.max_log_bytes,
            log_overflow: spec.log_overflow,
        });
    match &server.core_dumps {
        Some((dir, limits)) => builder.core_dumps(dir, *limits),
        None => builder,
    }
}

impl Runtime {
    /// Initialises the function's image once into its pool's template, refuses it if it declares
    /// a capability import it is not granted, and checks its exports against the manifest. The sandboxes get the host functions of `caps` (and refusing stubs for the
    /// capabilities not granted); guest log lines go to `tracing` (target `guest`) with the
    /// function's secrets redacted.
    ///
    /// # Errors
    /// A [`StartError`] naming the function.
    pub fn guest(
        spec: &FunctionSpec,
        server: &ServerConfig,
        loaded: &crate::trust::LoadedImage,
        caps: &FunctionCaps,
        trust: &crate::trust::ManifestTrust,
    ) -> Result<Runtime, StartError> {
        let refused = |detail: String| StartError::Refused { function: spec.name.clone(), line: spec.line, detail };
        let glint_err = |source| StartError::Glint { function: spec.name.clone(), line: spec.line, source };
        // The image comes verified (trust policy, pulled if oci://) from crate::trust::ManifestTrust.
        let image = &loaded.image;
        // Imports nothing here provides (an embedder's own host functions) become stubs that
        // fail when called, as in `glint run`; the capabilities the guest declares are checked
        // against its grants below, once initialisation has listed them.
        let builder = caps.register(caps.register_denials(builder_for(spec, server))).unknown_imports_as_traps(true);
        let builder = builder.on_log(log_hook(&spec.name, caps.redactor().clone()));
        let config = PoolConfig {
            max_sandboxes: spec.pool_max,
            ready_target: spec.pool_ready,
            when_empty: WhenEmpty::Wait(spec.timeout),
            restore_in_background: false,
        };
        // Every checkout gets a fresh RequestState: no request sees another's counters. From a
        // snapshot file, the template is the file (held to its trust policy, and to holding this
        // image's code) and the guest's init does not run.
        let pool = match &loaded.snapshot {
            None => SandboxPool::with_data(&builder, image, config, RequestState::default).map_err(glint_err)?,
            Some(snap) => {
                let template =
                    Template::load_trusted(&snap.path, &builder, image, &snap.policy, snap.signature.as_ref());
                trust.record_snapshot(spec, image, template.as_ref().map(|t| t.file_verification()));
                SandboxPool::from_template_with(template.map_err(glint_err)?, config, RequestState::default)
                    .map_err(glint_err)?
            }
        };
        let (exports, imports) = {
            let sandbox = pool.take().map_err(glint_err)?;
            (sandbox.exports().to_vec(), sandbox.imports().to_vec())
        };
        let ungranted = ungranted_capabilities(&imports, |c| caps.grants(c));
        if !ungranted.is_empty() {
            return Err(StartError::Ungranted { function: spec.name.clone(), line: spec.line, ungranted });
        }
        for i in imports.iter().filter(|i| glint_caps::lookup(&i.name).is_none()) {
            tracing::warn!(
                function = %spec.name,
                import = %i.name,
                signature = %i.signature,
                "the guest imports a host function glint serve does not provide; calls to it fail"
            );
        }
        let runtime = Runtime { engine: Engine::Guest(pool), exports };
        runtime.check_exports(spec).map_err(refused)?;
        Ok(runtime)
    }

    /// A Rust function with the given exports, for the benchmark floor.
    pub fn native(exports: Vec<Export>, f: NativeFn) -> Runtime {
        Runtime { engine: Engine::Native(f), exports }
    }

    fn check_exports(&self, spec: &FunctionSpec) -> Result<(), String> {
        let names = || self.exports.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
        match &spec.kind {
            FunctionKind::Http { handler } => {
                let want = Signature { params: vec![ValueType::Bytes], result: ValueType::Bytes };
                match self.signature(handler) {
                    None => Err(format!("the image exports no handler `{handler}` (it exports: {})", names())),
                    Some(sig) if *sig != want => {
                        Err(format!("handler `{handler}` has signature {sig}; an HTTP handler takes {want}"))
                    }
                    Some(_) => Ok(()),
                }
            }
            FunctionKind::Typed { exports: Some(list) } => match list.iter().find(|e| self.signature(e).is_none()) {
                Some(missing) => Err(format!(
                    "`exports` names `{missing}`, which the image does not export (it exports: {})",
                    names()
                )),
                None => Ok(()),
            },
            FunctionKind::Typed { exports: None } => Ok(()),
        }
    }

    /// The signature of export `name`.
    pub fn signature(&self, name: &str) -> Option<&Signature> {
        self.exports.iter().find(|e| e.name == name).map(|e| &e.signature)
    }

    /// The pool's counters (all zero for a native function).
    pub fn stats(&self) -> PoolStats {
        match &self.engine {
            Engine::Guest(pool) => pool.stats(),
            Engine::Native(_) => PoolStats { ready: 1, ..PoolStats::default() },
        }
    }

    /// Runs one call on the current (worker) thread in a fresh sandbox. The sandbox comes back
    /// with the outcome so the caller can answer first and restore after (dropping it restores).
    pub fn run(
        &self,
        invocation: Invocation,
        slot: &CallSlot,
        request: RequestContext,
    ) -> (Outcome, Option<PooledSandbox<RequestState>>) {
        let (name, args) = match invocation {
            Invocation::Typed { export, args } => (export, args),
            Invocation::Http { handler, request } => (handler, vec![Value::Bytes(request)]),
        };
        let name = name.as_str();
        match &self.engine {
            Engine::Native(f) => {
                (Outcome { result: f(name, &args), stats: CallStats::default(), usage: RequestUsage::default() }, None)
            }
            Engine::Guest(pool) => {
                let failed =
                    |e| Outcome { result: Err(e), stats: CallStats::default(), usage: RequestUsage::default() };
                let mut sandbox = match pool.take() {
                    Ok(s) => s,
                    Err(e) => return (failed(e), None),
                };
                if !slot.arm(sandbox.interrupt_handle()) {
                    return (failed(glint::Error::Cancelled), Some(sandbox));
                }
                // The checkout's data is fresh; it now names the request its denials report.
                sandbox.data_mut().begin(request);
                let result = sandbox.call(name, &args);
                let usage = sandbox.data_mut().finish();
                slot.disarm();
                let stats = sandbox.last_call_stats();
                (Outcome { result, stats, usage }, Some(sandbox))
            }
        }
    }
}

/// The capability imports among `imports` (a guest's declared ones) that `granted` does not
/// allow, each with the manifest entry that would grant it.
pub fn ungranted_capabilities(
    imports: &[glint::Import],
    granted: impl Fn(glint_caps::Capability) -> bool,
) -> Vec<(&'static str, &'static str)> {
    imports
        .iter()
        .filter_map(|i| glint_caps::lookup(&i.name))
        .filter(|c| !granted(c.capability))
        .map(|c| (c.name, c.grant_hint))
        .collect()
}

/// The host functions `image` declares it imports, read by initialising it once in a throwaway
/// sandbox that provides nothing (its imports all stubs): what `glint policy check` checks
/// grants against before anything is served.
///
/// # Errors
/// The image does not initialise (or the host cannot run sandboxes).
pub fn declared_imports(image: &glint::GuestImage) -> Result<Vec<glint::Import>, glint::Error> {
    let sandbox = SandboxBuilder::new()
        .unknown_imports_as_traps(true)
        .call_timeout(Some(std::time::Duration::from_secs(10)))
        .build(image)?
        .init()?;
    Ok(sandbox.imports().to_vec())
}

/// Guest log lines to `tracing` at target `guest`, with the function's secrets redacted (the
/// library's own `glint::guest` events are filtered out by the server's subscriber).
fn log_hook(function: &str, redactor: Redactor) -> impl Fn(&glint::LogRecord) + Send + Sync + 'static {
    let function: Arc<str> = function.into();
    move |r: &glint::LogRecord| {
        let text = redactor.redact(&r.message);
        let f = &*function;
        match r.level {
            tracing::Level::ERROR => tracing::error!(target: "guest", function = f, "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "guest", function = f, "{text}"),
            tracing::Level::INFO => tracing::info!(target: "guest", function = f, "{text}"),
            tracing::Level::DEBUG => tracing::debug!(target: "guest", function = f, "{text}"),
            tracing::Level::TRACE => tracing::trace!(target: "guest", function = f, "{text}"),
        }
    }
}

/// Links a request to its running call so that a client going away stops the guest.
#[derive(Debug, Default)]
pub struct CallSlot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    cancelled: bool,
    running: Option<InterruptHandle>,
}

impl CallSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker is about to call; `false` if the request was cancelled already.
    fn arm(&self, handle: InterruptHandle) -> bool {
        let mut s = self.lock();
        if s.cancelled {
            return false;
        }
        s.running = Some(handle);
        true
    }

    fn disarm(&self) {
        self.lock().running = None;
    }

    /// Whether the request was cancelled before its call started.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Cancels the request: a queued call will not start, a running one is killed. Returns
    /// whether a call is still running after the attempt (a kill that landed just before the
    /// call entered the guest is not remembered, so the caller retries while this is true).
    pub fn cancel(&self) -> bool {
        let mut s = self.lock();
        s.cancelled = true;
        match &s.running {
            Some(h) => !h.kill(),
            None => false,
        }
    }

    /// Whether a call is running now.
    pub fn is_running(&self) -> bool {
        self.lock().running.is_some()
    }
}
