//! The state every sandbox carries, initialised or not, and its one constructor.

use super::config::SandboxConfig;
use super::stats::CallStats;
use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::vmm::interrupt::CallControl;
use crate::vmm::{GuestMemory, KvmMemory, KvmVcpu, Vcpu};
use crate::Error;
use std::sync::Arc;

/// One sandbox's VM and what the host knows about it. Generic over the vCPU and the memory so the
/// run loop and restore can be unit-tested with fakes; sandboxes use the KVM types.
pub(crate) struct Core<T, V = KvmVcpu, M = KvmMemory> {
    // Field order is drop order: the vCPU goes before the VM and memory it belongs to.
    pub(super) vcpu: V,
    pub(super) memory: M,
    pub(super) layout: Layout,
    pub(super) image: GuestImage,
    pub(super) config: SandboxConfig<T>,
    /// The embedder's per-sandbox data, which host functions reach through `Caller`.
    pub(super) data: T,
    pub(super) control: Arc<CallControl>,
    /// Why the sandbox refuses calls, if it does.
    pub(super) poisoned: Option<Box<Error>>,
    /// Pages that may differ from zero: every page ever written, by guest or host.
    pub(super) written: Vec<u64>,
    /// Id of the snapshot memory equals, apart from the pages written since (0: none).
    pub(super) base: u64,
    /// The vCPU stopped at a RETURN exit and has not been restored since.
    pub(super) at_return: bool,
    /// What the current or last call did.
    pub(super) stats: CallStats,
    /// Testing only: the next restore fails (see `Sandbox::inject_restore_failure`).
    pub(super) fail_next_restore: bool,
    /// A gdb session debugging this sandbox (`UninitSandbox::attach_gdb`).
    #[cfg(feature = "gdb")]
    pub(super) debugger: Option<Box<super::debug::Debugger>>,
}

impl<T, V, M> std::fmt::Debug for Core<T, V, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("image", &self.image.id())
            .field("layout", &self.layout)
            .field("poisoned", &self.poisoned.is_some())
            .finish_non_exhaustive()
    }
}

impl<T, V: Vcpu, M: GuestMemory> Core<T, V, M> {
    /// A core over a new VM. `written` is the bitmap of pages that may already differ from zero
    /// and `base` the snapshot memory equals (0 for a fresh VM).
    pub(super) fn new(
        (vcpu, memory): (V, M),
        layout: Layout,
        image: GuestImage,
        config: SandboxConfig<T>,
        data: T,
        written: Option<Vec<u64>>,
        base: u64,
    ) -> Result<Self, Error> {
        let written = written.unwrap_or_else(|| vec![0; memory.pages().div_ceil(64) as usize]);
        Ok(Core {
            vcpu,
            memory,
            layout,
            image,
            config,
            data,
            control: CallControl::new()?,
            poisoned: None,
            written,
            base,
            at_return: false,
            stats: CallStats::default(),
            fail_next_restore: false,
            #[cfg(feature = "gdb")]
            debugger: None,
        })
    }

    /// Records `e` as the reason the sandbox refuses calls, if it poisons; returns it.
    pub(super) fn poison(&mut self, e: Error) -> Error {
        if e.poisons() && self.poisoned.is_none() {
            self.poisoned = Some(Box::new(e.clone()));
        }
        e
    }

    /// `Error::Poisoned` if the sandbox refuses calls.
    pub(super) fn check_not_poisoned(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }
}
