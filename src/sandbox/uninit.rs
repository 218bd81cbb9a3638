//! A sandbox whose VM exists and holds the image, before the guest has run.

use super::config::SandboxConfig;
use super::core::Core;
use super::functions::Functions;
use super::Sandbox;
use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::mem::{x86, MemoryConfig};
use crate::vmm::interrupt::InterruptHandle;
use crate::vmm::{self, GuestMemory, Vcpu};
use crate::Error;
use glint_abi::layout::BOOT_INFO_ADDR;
use std::sync::Arc;

/// A sandbox whose VM exists and holds the image, before the guest has run.
pub struct UninitSandbox<T = ()> {
    core: Core<T>,
}

impl<T> std::fmt::Debug for UninitSandbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<T: Send + 'static> UninitSandbox<T> {
    pub(super) fn new(
        image: GuestImage,
        config: SandboxConfig<T>,
        memory: &MemoryConfig,
        data: T,
    ) -> Result<Self, Error> {
        let layout = Layout::new(memory, &image)?;
        let _span = tracing::info_span!("sandbox_create", image = image.id(), memory = layout.memory_size).entered();
        let (mut vcpu, mut mem) = vmm::create(layout.memory_size, None, config.msr_filter)?;
        for (addr, bytes) in x86::system_pieces(&layout, &image) {
            mem.write(addr, &bytes)?;
        }
        mem.write(BOOT_INFO_ADDR, &layout.boot_info().to_bytes())?;
        for seg in image.segments() {
            mem.write(seg.addr, &seg.data)?;
        }
        vcpu.enter_long_mode(image.entry(), layout.stack_top(), BOOT_INFO_ADDR)?;
        tracing::trace!(?layout, "partition ready");
        Ok(UninitSandbox { core: Core::new((vcpu, mem), layout, image, config, data, None, 0)? })
    }

    /// Runs the guest's initialisation: it sets itself up and declares its exports and imports,
    /// and every import is checked against the registered host functions.
    ///
    /// # Errors
    /// Whatever the guest does wrong on the way (fault, panic, timeout, a malformed function
    /// table), and [`Error::Imports`] naming every import that is not provided as declared.
    pub fn init(mut self) -> Result<Sandbox<T>, Error> {
        let _span = tracing::info_span!("sandbox_init", image = self.core.image.id()).entered();
        let body = self.core.run_to_return()?;
        let functions = Functions::parse(&body).map_err(|e| self.core.poison(e.into()))?;
        functions
            .check_imports(&self.core.config.host_fns, self.core.config.unknown_imports_as_traps)
            .map_err(Error::Imports)?;
        tracing::trace!(exports = functions.exports.len(), imports = functions.imports.len(), "guest initialised");
        let initial = self.core.snapshot()?;
        Ok(Sandbox::from_parts(self.core, Arc::new(functions), initial))
    }

    /// Waits for gdb to connect to `server`, then debugs this sandbox: the guest stops before its
    /// first instruction (initialisation), and the session goes on through every call until the
    /// sandbox is dropped (gdb sees the program exit) or a call fails (gdb sees it terminated by
    /// the fault's signal). See docs/DEBUGGING.md for what gdb can do.
    ///
    /// The call deadline keeps running while gdb holds the guest stopped; a sandbox being debugged
    /// by a person usually wants [`SandboxBuilder::call_timeout`](crate::SandboxBuilder::call_timeout)
    /// `(None)`.
    ///
    /// # Errors
    /// [`Error::Debugger`] if accepting the connection or starting the protocol fails.
    #[cfg(feature = "gdb")]
    pub fn attach_gdb(&mut self, server: crate::GdbServer) -> Result<(), Error> {
        let control = Arc::downgrade(&self.core.control);
        let interrupt: crate::debug::gdb::Interrupt = Arc::new(move || {
            if let Some(control) = control.upgrade() {
                control.pause();
            }
        });
        let regions = crate::debug::guest_regions(&self.core.layout, &self.core.image);
        let program = crate::debug::ProgramInfo::of(&self.core.image);
        let session = server.accept(regions, program, interrupt)?;
        self.core.attach_debugger(session);
        Ok(())
    }

    /// A handle that can stop initialisation from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(&self.core.control)
    }

    /// The sandbox's data.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.core.data
    }
}
