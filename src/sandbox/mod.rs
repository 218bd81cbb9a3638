//! The sandbox lifecycle: [`SandboxBuilder`] → [`UninitSandbox`] (partition built, image
//! mapped, nothing run) → [`Sandbox`] (initialised, ready for calls).

mod builder;
mod pool;
mod run;
mod snapshot;
mod template;

pub use builder::{Limits, LogRecord, SandboxBuilder, DEFAULT_CALL_TIMEOUT};
pub use pool::{PoolConfig, PoolStats, PooledSandbox, SandboxPool, WhenEmpty};
pub use run::CallStats;
pub use snapshot::Snapshot;
pub use template::Template;

use crate::func::host::HostFunctions;
use crate::func::{GuestParams, GuestValue, Signature, TypedFn};
use crate::image::GuestImage;
use crate::mem::layout::{Layout, GDT_ADDR, IDT_ADDR, STUBS_ADDR, TSS_ADDR};
use crate::mem::{x86, MemoryConfig};
use crate::vmm::interrupt::{CallControl, InterruptHandle};
use crate::vmm::Partition;
use crate::Error;
use builder::LogHook;
use glint_abi::layout::BOOT_INFO_ADDR;
use glint_abi::wire::{self, Full};
use glint_abi::{code, Value, ValueType};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Configuration shared by the sandboxes of one builder.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) host_fns: HostFunctions,
    pub(crate) on_log: Option<LogHook>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) limits: Limits,
}

/// A function the guest exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name.
    pub name: String,
    /// Its signature.
    pub signature: Signature,
}

/// What the guest declared at initialisation.
#[derive(Debug)]
pub(crate) struct Exports {
    list: Vec<Export>,
    by_name: HashMap<String, u32>,
}

/// The state every sandbox carries, initialised or not.
pub(crate) struct Core {
    partition: Partition,
    layout: Layout,
    image: GuestImage,
    shared: Shared,
    control: Arc<CallControl>,
    poisoned: Option<String>,
    /// Pages that may differ from zero: every page ever written, by guest or host.
    written: Vec<u64>,
    /// Id of the snapshot memory equals, apart from the pages written since (0: none).
    base: u64,
    /// The vCPU stopped at a RETURN exit and has not been restored since.
    at_return: bool,
    /// What the current or last call did.
    stats: CallStats,
    /// Testing only: the next restore fails (see `Sandbox::inject_restore_failure`).
    fail_next_restore: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("image", &self.image.id())
            .field("layout", &self.layout)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// A sandbox whose VM exists and holds the image, before the guest has run.
#[derive(Debug)]
pub struct UninitSandbox {
    core: Core,
}

impl UninitSandbox {
    fn new(image: GuestImage, shared: Shared, memory: &MemoryConfig) -> Result<Self, Error> {
        let layout = Layout::new(memory, &image)?;
        let _span = tracing::info_span!("sandbox_create", image = image.id(), memory = layout.memory_size).entered();
        let mut partition = Partition::new(layout.memory_size, None)?;
        let pages = x86::page_map(&layout, &image);
        for (addr, bytes) in x86::page_tables(&layout, &pages) {
            partition.write(addr, &bytes)?;
        }
        partition.write(GDT_ADDR, &x86::gdt())?;
        partition.write(IDT_ADDR, &x86::idt())?;
        partition.write(TSS_ADDR, &x86::tss())?;
        partition.write(STUBS_ADDR, &x86::stubs())?;
        partition.write(BOOT_INFO_ADDR, &layout.boot_info().to_bytes())?;
        for seg in image.segments() {
            partition.write(seg.addr, &seg.data)?;
        }
        partition.set_entry_state(&layout, image.entry())?;
        tracing::trace!(?layout, pages = pages.len(), "partition ready");
        Ok(UninitSandbox {
            core: Core {
                written: vec![0; partition.pages().div_ceil(64) as usize],
                partition,
                layout,
                image,
                shared,
                control: CallControl::new()?,
                poisoned: None,
                base: 0,
                at_return: false,
                stats: CallStats::default(),
                fail_next_restore: false,
            },
        })
    }

    /// Runs the guest's initialisation: it sets itself up and declares its exports.
    ///
    /// # Errors
    /// Whatever the guest does wrong on the way (fault, panic, timeout, malformed export table).
    pub fn init(mut self) -> Result<Sandbox, Error> {
        let _span = tracing::info_span!("sandbox_init", image = self.core.image.id()).entered();
        let body = self.core.run_to_return()?;
        let exports = parse_exports(&body).map_err(|e| self.core.poison(e))?;
        tracing::trace!(exports = exports.list.len(), "guest initialised");
        let initial = self.core.snapshot()?;
        Ok(Sandbox { core: self.core, exports: Arc::new(exports), initial })
    }

    /// A handle that can stop initialisation from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(&self.core.control)
    }
}

impl Exports {
    fn lookup(&self, name: &str) -> Result<(u32, &Export), Error> {
        let no_such = || Error::NoSuchFunction { name: name.to_owned() };
        let index = *self.by_name.get(name).ok_or_else(no_such)?;
        Ok((index, self.list.get(index as usize).ok_or_else(no_such)?))
    }

    fn typed_fn<P: GuestParams, R: GuestValue>(&self, name: &str, image: u64) -> Result<TypedFn<P, R>, Error> {
        let (index, export) = self.lookup(name)?;
        let requested = Signature::of::<P, R>();
        if export.signature != requested {
            return Err(Error::SignatureMismatch { name: name.to_owned(), guest: export.signature.clone(), requested });
        }
        Ok(TypedFn::new(index, name, image))
    }
}

fn parse_exports(body: &[u8]) -> Result<Exports, Error> {
    let protocol = |detail: String| Error::Protocol { detail };
    let mut list = Vec::new();
    let mut by_name = HashMap::new();
    let parsed = wire::read_exports(body, |e| {
        let index = u32::try_from(list.len()).map_err(|_| String::from("too many exports"))?;
        // Names reach terminals and logs: refuse control characters outright.
        if e.name.is_empty() || e.name.chars().any(crate::error::unprintable) {
            return Err(format!(
                "export name {:?} is empty or holds control characters",
                crate::error::sanitize(e.name.as_bytes())
            ));
        }
        if by_name.insert(e.name.to_owned(), index).is_some() {
            return Err(format!("function `{}` exported twice", e.name));
        }
        list.push(Export {
            name: e.name.to_owned(),
            signature: Signature { params: e.params().collect(), result: e.result },
        });
        Ok(())
    });
    match parsed {
        Ok(Ok(())) => Ok(Exports { list, by_name }),
        Ok(Err(detail)) => Err(protocol(detail)),
        Err(e) => Err(protocol(format!("malformed export table: {e}"))),
    }
}

/// An initialised sandbox: call its guest functions by name.
///
/// State persists across calls. A call that fails mid-way (fault, panic, timeout, cancellation)
/// poisons the sandbox: every later call returns [`Error::Poisoned`]. `Sandbox` is `Send`: move
/// it to any thread; run many sandboxes on many threads at once.
#[derive(Debug)]
pub struct Sandbox {
    core: Core,
    exports: Arc<Exports>,
    initial: Snapshot,
}

impl Sandbox {
    /// The functions the guest exports, in declaration order.
    pub fn exports(&self) -> &[Export] {
        &self.exports.list
    }

    /// The signature of the export `name`.
    pub fn signature(&self, name: &str) -> Option<&Signature> {
        self.lookup(name).ok().map(|(_, e)| &e.signature)
    }

    fn lookup(&self, name: &str) -> Result<(u32, &Export), Error> {
        self.exports.lookup(name)
    }

    /// A typed handle to the export `name`, its signature checked here, once.
    ///
    /// # Errors
    /// [`Error::NoSuchFunction`] or [`Error::SignatureMismatch`].
    pub fn typed_fn<P: GuestParams, R: GuestValue>(&self, name: &str) -> Result<TypedFn<P, R>, Error> {
        self.exports.typed_fn(name, self.core.image.id())
    }

    /// Calls `name` with dynamically typed arguments, checked against its signature.
    ///
    /// # Errors
    /// Unknown function or mismatched arguments (the sandbox stays usable), or anything the
    /// guest does wrong during the call.
    pub fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, Error> {
        let (index, export) = self.lookup(name)?;
        let sig = &export.signature;
        if sig.params.len() != args.len() || sig.params.iter().zip(args).any(|(t, a)| *t != a.ty()) {
            return Err(Error::SignatureMismatch {
                name: name.to_owned(),
                guest: sig.clone(),
                requested: Signature { params: args.iter().map(Value::ty).collect(), result: sig.result },
            });
        }
        let result = sig.result;
        let name = export.name.clone();
        let encode = |sink: &mut Vec<u8>| -> Result<(), Full> {
            for a in args {
                wire::put_value(sink, a.as_value_ref())?;
            }
            Ok(())
        };
        self.core.call(index, &name, args.len(), encode, result, |v| Some(v.to_owned_value()))
    }

    pub(crate) fn call_typed<P: GuestParams, R: GuestValue>(
        &mut self,
        f: &TypedFn<P, R>,
        args: &P,
    ) -> Result<R, Error> {
        if f.image_id() != self.core.image.id() {
            return Err(Error::NoSuchFunction { name: format!("{} (handle from another image)", f.name()) });
        }
        self.core.call(f.index(), f.name(), P::count(), |s| args.encode(s), R::TYPE, R::from_value_ref)
    }

    /// A handle that can stop this sandbox's running call from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(&self.core.control)
    }

    /// Whether an earlier failure poisoned this sandbox.
    pub fn is_poisoned(&self) -> bool {
        self.core.poisoned.is_some()
    }

    /// Sets the deadline of later calls on this sandbox (`None`: no deadline).
    pub fn set_call_timeout(&mut self, timeout: Option<Duration>) {
        self.core.shared.call_timeout = timeout;
    }

    /// What the last call did: exits, host calls, log output.
    pub fn last_call_stats(&self) -> CallStats {
        self.core.stats
    }

    /// The image this sandbox runs.
    pub fn image(&self) -> &GuestImage {
        &self.core.image
    }

    /// Testing only: makes the next restore fail as a KVM failure mid-way would (`EIO`), leaving
    /// the sandbox poisoned. No restore failure can otherwise be provoked through the public API,
    /// and the pool's promise never to lend a sandbox whose restore failed needs a test.
    #[doc(hidden)]
    pub fn inject_restore_failure(&mut self) {
        self.core.fail_next_restore = true;
    }
}

impl Core {
    /// One guest call: encode, enter, serve host calls, decode.
    fn call<R>(
        &mut self,
        index: u32,
        name: &str,
        argc: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Full>,
        result: ValueType,
        convert: impl FnOnce(glint_abi::ValueRef<'_>) -> Option<R>,
    ) -> Result<R, Error> {
        let _span = tracing::info_span!("guest_call", function = name).entered();
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let frame = wire::frame_vec(|v| {
            wire::put_call_head(v, index, argc)?;
            encode(v)
        });
        let too_large = |size| Error::ArgumentsTooLarge { name: name.to_owned(), size, limit: self.layout.input_size };
        let frame = frame.map_err(|_| too_large(usize::MAX))?;
        if frame.len() as u64 > self.layout.input_size {
            return Err(too_large(frame.len()));
        }
        self.partition.write(self.layout.input_addr, &frame)?;
        let outcome = self.run_call(name)?;
        let body = outcome.body;
        let decoded = wire::read_outcome(&body)
            .map_err(|e| Error::Protocol { detail: format!("malformed result of `{name}`: {e}") });
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => return Err(self.poison(e)),
        };
        match decoded {
            wire::Outcome::Ok(v) if v.ty() == result => match convert(v) {
                Some(r) => Ok(r),
                None => Err(self.poison(Error::Protocol { detail: format!("`{name}` result does not convert") })),
            },
            wire::Outcome::Ok(v) => {
                Err(self
                    .poison(Error::Protocol { detail: format!("`{name}` returned {}, but declares {result}", v.ty()) }))
            }
            wire::Outcome::Err { code, message } => {
                let message = crate::error::sanitize(message);
                // Attribute the failure to the last failed host call only if the guest passed
                // that failure's message on (as `?` on a host call does); otherwise the guest
                // failed for its own reason, after handling the host's error.
                let host_failure = outcome.host_failure.filter(|f| message.contains(f.message()));
                Err(match (code, host_failure) {
                    (code::call::FUNCTION_FAILED, Some(run::HostFailure::Failed { name, source, .. })) => {
                        Error::HostFunction { name, source }
                    }
                    (code::call::FUNCTION_FAILED, Some(run::HostFailure::NotFound { name, .. })) => {
                        Error::NoSuchHostFunction { name }
                    }
                    (code::call::FUNCTION_FAILED, None) => Error::GuestFunction { name: name.to_owned(), message },
                    (code::call::NO_SUCH_FUNCTION, _) => Error::NoSuchFunction { name: name.to_owned() },
                    (code::call::RESULT_TOO_LARGE, _) => Error::GuestFunction { name: name.to_owned(), message },
                    (code, _) => self
                        .poison(Error::Protocol { detail: format!("guest refused `{name}` (code {code}): {message}") }),
                })
            }
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        if e.poisons() && self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        e
    }
}

/// `Sandbox` must stay `Send` (checked at compile time).
const _: () = {
    const fn send<T: Send>() {}
    send::<Sandbox>();
    send::<UninitSandbox>();
};
