//! An initialised sandbox: call its guest functions.

use super::core::Core;
use super::functions::{Export, Functions, Import};
use super::stats::CallStats;
use super::Snapshot;
use crate::func::{Signature, TypedFn};
use crate::image::GuestImage;
use crate::vmm::interrupt::InterruptHandle;
use crate::{Error, Value};
use glint_abi::convert::{EncodeParams, FromWire};
use glint_abi::wire::{self, Full};
use std::sync::Arc;
use std::time::Duration;

/// An initialised sandbox: call its guest functions by name.
///
/// State persists across calls. A call that fails mid-way (fault, panic, timeout, cancellation)
/// poisons the sandbox: every later call returns [`Error::Poisoned`]. `Sandbox` is `Send` when
/// its data `T` is: move it to any thread; run many sandboxes on many threads at once.
pub struct Sandbox<T = ()> {
    pub(super) core: Core<T>,
    pub(super) functions: Arc<Functions>,
    pub(super) initial: Snapshot,
}

impl<T> std::fmt::Debug for Sandbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T: 'static> Sandbox<T> {
    /// The functions the guest exports, in declaration order.
    pub fn exports(&self) -> &[Export] {
        &self.functions.exports
    }

    /// The host functions the guest declares it imports.
    pub fn imports(&self) -> &[Import] {
        &self.functions.imports
    }

    /// The signature of the export `name`.
    pub fn signature(&self, name: &str) -> Option<&Signature> {
        self.functions.lookup(name).ok().map(|(_, e)| &e.signature)
    }

    /// A typed handle to the export `name`, its signature checked here, once.
    ///
    /// # Errors
    /// [`Error::NoSuchFunction`] or [`Error::SignatureMismatch`].
    pub fn typed_fn<P: EncodeParams, R: FromWire>(&self, name: &str) -> Result<TypedFn<P, R>, Error> {
        self.functions.typed_fn(name, self.core.image.id())
    }

    /// Calls `name` with dynamically typed arguments, checked against its signature.
    ///
    /// # Errors
    /// Unknown function or mismatched arguments (the sandbox stays usable), or anything the
    /// guest does wrong during the call.
    pub fn call(&mut self, name: &str, args: &[Value]) -> Result<Value, Error> {
        let (index, export) = self.functions.lookup(name)?;
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
        let encode = |sink: &mut super::run::ArgSink<'_>| -> Result<(), Full> {
            for a in args {
                wire::put_value(sink, a.as_value_ref())?;
            }
            Ok(())
        };
        self.core.call(index, &name, args.len(), encode, result, |v| Some(v.to_owned_value()))
    }

    pub(crate) fn call_typed<P: EncodeParams, R: FromWire>(&mut self, f: &TypedFn<P, R>, args: &P) -> Result<R, Error> {
        if f.image_id() != self.core.image.id() {
            return Err(Error::NoSuchFunction { name: format!("{} (handle from another image)", f.name()) });
        }
        self.core.call(f.index(), f.name(), P::COUNT, |s| args.encode(s), R::TYPE, R::from_wire)
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
        self.core.config.call_timeout = timeout;
    }

    /// What the last call did: exits, host calls, log output.
    pub fn last_call_stats(&self) -> CallStats {
        self.core.stats
    }

    /// The image this sandbox runs.
    pub fn image(&self) -> &GuestImage {
        &self.core.image
    }

    /// The sandbox's host-side data, which host functions reach through [`Caller`](crate::Caller).
    pub fn data(&self) -> &T {
        &self.core.data
    }

    /// The sandbox's host-side data, mutably (between calls).
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.core.data
    }

    /// Testing only: makes the next restore fail as a KVM failure mid-way would (`EIO`), leaving
    /// the sandbox poisoned. No restore failure can otherwise be provoked through the public API,
    /// and the pool's promise never to lend a sandbox whose restore failed needs a test.
    #[doc(hidden)]
    pub fn inject_restore_failure(&mut self) {
        self.core.fail_next_restore = true;
    }
}

impl<T> Sandbox<T> {
    pub(super) fn from_parts(core: Core<T>, functions: Arc<Functions>, initial: Snapshot) -> Sandbox<T> {
        Sandbox { core, functions, initial }
    }

    /// Captures memory and vCPU state so [`Sandbox::restore`] can return here.
    ///
    /// # Errors
    /// [`Error::Poisoned`] (a poisoned sandbox has nothing worth keeping), or a KVM failure.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        self.core.snapshot()
    }

    /// Returns the sandbox to `snapshot`: memory, registers, FPU/SSE/AVX state, debug registers
    /// and MSRs. Clears poisoning.
    ///
    /// # Errors
    /// [`Error::SnapshotMismatch`] for a snapshot of another image or layout (the sandbox is
    /// untouched); a KVM failure mid-way leaves the sandbox poisoned.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        self.core.restore(snapshot)
    }

    /// The snapshot taken right after initialisation.
    pub fn initial_snapshot(&self) -> &Snapshot {
        &self.initial
    }

    /// Restores the state right after initialisation (see [`Sandbox::restore`]).
    ///
    /// # Errors
    /// As [`Sandbox::restore`].
    pub fn reset(&mut self) -> Result<(), Error> {
        let initial = self.initial.clone();
        self.core.restore(&initial)
    }
}
