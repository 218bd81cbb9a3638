//! Configuring a sandbox: memory sizes, limits, host functions.

use super::{Shared, UninitSandbox};
use crate::func::host::HostFunctions;
use crate::func::HostFunction;
use crate::image::GuestImage;
use crate::mem::MemoryConfig;
use crate::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A line the guest logged.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Level, as the guest chose it.
    pub level: tracing::Level,
    /// The text, sanitised (control characters escaped) and capped.
    pub message: String,
}

pub(crate) type LogHook = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Per-call bounds on what a guest can make the host do, beyond the buffer sizes (which bound
/// every message a guest writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Host calls one guest call may make; more ends the call with `Error::LimitExceeded`.
    pub max_host_calls: u64,
    /// Bytes of log text one guest call may write; lines past it are dropped (with one warning).
    pub max_log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_host_calls: 1 << 20, max_log_bytes: 1 << 20 }
    }
}

/// Default per-call deadline: generous for real work, finite so nothing hangs forever.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds sandboxes: memory sizes, limits and the host functions a guest may call.
///
/// Nothing is exposed to the guest by default; every host function is registered here by name.
/// A builder can be cloned to make many sandboxes with the same configuration.
#[derive(Clone)]
pub struct SandboxBuilder {
    pub(crate) memory: MemoryConfig,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) host_fns: HostFunctions,
    pub(crate) on_log: Option<LogHook>,
    pub(crate) limits: Limits,
}

impl fmt::Debug for SandboxBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxBuilder")
            .field("memory", &self.memory)
            .field("call_timeout", &self.call_timeout)
            .field("host_fns", &self.host_fns)
            .finish_non_exhaustive()
    }
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxBuilder {
    /// 16 MiB of memory, 2 MiB input and output buffers, a 256 KiB stack, a 10 s call deadline.
    pub fn new() -> Self {
        SandboxBuilder {
            memory: MemoryConfig::default(),
            call_timeout: Some(DEFAULT_CALL_TIMEOUT),
            host_fns: HostFunctions::default(),
            on_log: None,
            limits: Limits::default(),
        }
    }

    /// Total guest memory in MiB (image, buffers, heap, stack; at most 256).
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory.memory_size = mib.saturating_mul(1 << 20);
        self
    }

    /// Total guest memory in bytes (a multiple of 4096).
    pub fn memory_size(mut self, bytes: u64) -> Self {
        self.memory.memory_size = bytes;
        self
    }

    /// Size of the input buffer, which bounds call arguments and host-function results.
    pub fn input_buffer_size(mut self, bytes: u64) -> Self {
        self.memory.input_size = bytes;
        self
    }

    /// Size of the output buffer, which bounds results, host-call requests and guest messages.
    pub fn output_buffer_size(mut self, bytes: u64) -> Self {
        self.memory.output_size = bytes;
        self
    }

    /// Size of the guest stack (a guard page lies below it).
    pub fn stack_size(mut self, bytes: u64) -> Self {
        self.memory.stack_size = bytes;
        self
    }

    /// Deadline of each call, initialisation included; `None` disables it (not recommended for
    /// untrusted guests).
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Per-call limits on host calls and log output.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Registers a host function the guest may call by `name`.
    ///
    /// Any `Fn(A, B, ..) -> R` with up to 8 parameters of [`GuestValue`](crate::GuestValue)
    /// types, returning a `GuestValue` or `Result<GuestValue, E>`. A name registered twice keeps
    /// the last function.
    pub fn host_fn<P, R, F: HostFunction<P, R>>(mut self, name: &str, f: F) -> Self {
        self.host_fns.insert(name, f);
        self
    }

    /// Receives every line the guest logs (they also go to `tracing` at target `glint::guest`).
    pub fn on_log(mut self, hook: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        self.on_log = Some(Arc::new(hook));
        self
    }

    /// Creates the partition for `image` and maps it; nothing runs yet.
    ///
    /// # Errors
    /// Invalid sizes, an image that does not fit, or KVM failing to create the VM.
    pub fn build(&self, image: &GuestImage) -> Result<UninitSandbox, Error> {
        UninitSandbox::new(
            image.clone(),
            Shared {
                host_fns: self.host_fns.clone(),
                on_log: self.on_log.clone(),
                call_timeout: self.call_timeout,
                limits: self.limits,
            },
            &self.memory,
        )
    }

    /// Loads the image at `path` and builds a sandbox for it.
    ///
    /// # Errors
    /// As [`GuestImage::from_file`] and [`SandboxBuilder::build`].
    pub fn load_file(&self, path: impl AsRef<std::path::Path>) -> Result<UninitSandbox, Error> {
        self.build(&GuestImage::from_file(path)?)
    }
}
