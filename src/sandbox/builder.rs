//! Configuring sandboxes: memory sizes, limits, host functions, the per-sandbox data type.

use super::config::SandboxConfig;
use super::stats::LogRecord;
use super::{Limits, UninitSandbox};
use crate::debug::core::{CoreDumpConfig, CoreDumpLimits};
use crate::func::HostFunction;
use crate::image::GuestImage;
use crate::mem::MemoryConfig;
use crate::vmm::MsrFilter;
use crate::Error;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Builds sandboxes: memory sizes, limits and the host functions a guest may call.
///
/// Nothing is exposed to the guest by default; every host function is registered here by name.
/// A builder can be cloned to make many sandboxes with the same configuration. `T` is the
/// host-side data each sandbox carries ([`Sandbox::data`](crate::Sandbox::data)), which host
/// functions taking a [`Caller`](crate::Caller) reach; [`SandboxBuilder::new`] builds sandboxes
/// without any (`T = ()`), [`SandboxBuilder::with_data`] with a type of the embedder's.
pub struct SandboxBuilder<T = ()> {
    pub(crate) memory: MemoryConfig,
    pub(crate) config: SandboxConfig<T>,
    _data: PhantomData<fn() -> T>,
}

impl<T> Clone for SandboxBuilder<T> {
    fn clone(&self) -> Self {
        SandboxBuilder { memory: self.memory, config: self.config.clone(), _data: PhantomData }
    }
}

impl<T> fmt::Debug for SandboxBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxBuilder")
            .field("memory", &self.memory)
            .field("call_timeout", &self.config.call_timeout)
            .field("limits", &self.config.limits)
            .field("host_fns", &self.config.host_fns)
            .field("msr_filter", &self.config.msr_filter)
            .finish_non_exhaustive()
    }
}

impl Default for SandboxBuilder<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxBuilder<()> {
    /// 16 MiB of memory, 2 MiB input and output buffers, a 256 KiB stack, a 10 s call deadline,
    /// no host functions, no per-sandbox data.
    pub fn new() -> Self {
        SandboxBuilder { memory: MemoryConfig::default(), config: SandboxConfig::default(), _data: PhantomData }
    }
}

impl<T: Send + 'static> SandboxBuilder<T> {
    /// As [`SandboxBuilder::new`], for sandboxes that carry data of type `T` (given to
    /// [`build_with`](Self::build_with), or `T::default()` by [`build`](Self::build)).
    pub fn with_data() -> Self {
        SandboxBuilder { memory: MemoryConfig::default(), config: SandboxConfig::default(), _data: PhantomData }
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
        self.config.call_timeout = timeout;
        self
    }

    /// Per-call limits on host calls and log output.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Registers a host function the guest may call by `name`.
    ///
    /// Any `Fn(A, B, ..) -> R`, or `Fn(Caller<'_, T>, A, B, ..) -> R` to reach the sandbox's
    /// data, with up to 8 parameters of wire types (`i32`, `u32`, `i64`, `u64`, `f32`, `f64`,
    /// `bool`, `String`, `Vec<u8>`, `()`), returning one or `Result<one, E>`. A name registered
    /// twice keeps the last function.
    pub fn host_fn<P, R, F: HostFunction<T, P, R>>(mut self, name: &str, f: F) -> Self {
        self.config.host_fns.insert(name, f);
        self
    }

    /// Lets a guest import host functions that are not registered: initialisation no longer
    /// refuses it, and each call to one fails as not found (like Wasmtime's
    /// `define_unknown_imports_as_traps`). An import registered with another signature is still
    /// refused.
    pub fn unknown_imports_as_traps(mut self, allow: bool) -> Self {
        self.config.unknown_imports_as_traps = allow;
        self
    }

    /// Whether each VM gets a deny-all KVM MSR filter (default [`MsrFilter::Off`]; see
    /// [`MsrFilter`] for why glint's isolation does not depend on it, and what it costs).
    pub fn msr_filter(mut self, filter: MsrFilter) -> Self {
        self.config.msr_filter = filter;
        self
    }

    /// Writes an ELF core file into `dir` whenever a guest faults, for `gdb <guest> <core>`: the
    /// guest's registers at the fault and its own memory (never the host's structures), as
    /// `glint-<n>.core` with `n < limits.max_files`, each at most `limits.max_bytes`. The
    /// fault's [`GuestFault::core_dump`](crate::GuestFault::core_dump) names the file. File names
    /// are the host's, files are created new (never replacing or following anything) and
    /// counted across every sandbox and process using `dir`; once `max_files` exist, faults
    /// write none. `dir` must exist. See docs/DEBUGGING.md.
    pub fn core_dumps(mut self, dir: impl Into<std::path::PathBuf>, limits: CoreDumpLimits) -> Self {
        self.config.core_dumps = Some(Arc::new(CoreDumpConfig { dir: dir.into(), limits }));
        self
    }

    /// Receives every line the guest logs (they also go to `tracing` at target `glint::guest`).
    pub fn on_log(mut self, hook: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        self.config.on_log = Some(Arc::new(hook));
        self
    }

    /// Creates the partition for `image` and maps it, with `T::default()` as its data; nothing
    /// runs yet.
    ///
    /// # Errors
    /// Invalid sizes, an image that does not fit, or KVM failing to create the VM.
    pub fn build(&self, image: &GuestImage) -> Result<UninitSandbox<T>, Error>
    where
        T: Default,
    {
        self.build_with(image, T::default())
    }

    /// As [`build`](Self::build), with `data` as the sandbox's data.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with(&self, image: &GuestImage, data: T) -> Result<UninitSandbox<T>, Error> {
        UninitSandbox::new(image.clone(), self.config.clone(), &self.memory, data)
    }

    /// Loads the image at `path` and builds a sandbox for it.
    ///
    /// # Errors
    /// As [`GuestImage::from_file`] and [`SandboxBuilder::build`].
    pub fn load_file(&self, path: impl AsRef<std::path::Path>) -> Result<UninitSandbox<T>, Error>
    where
        T: Default,
    {
        self.build(&GuestImage::from_file(path)?)
    }
}
