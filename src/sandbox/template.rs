//! Templates: an initialised guest captured once, from which sandboxes are made without running
//! the guest again. The memory lives in a memfd that every such sandbox maps copy-on-write, so a
//! thousand ready sandboxes cost little more than the pages each one writes.

use super::config::SandboxConfig;
use super::core::Core;
use super::functions::Functions;
use super::{Sandbox, SandboxBuilder, Snapshot};
use crate::image::GuestImage;
use crate::mem::shared::SharedMemory;
use crate::vmm::{self, Restore, Vcpu};
use crate::Error;
use std::sync::Arc;

/// An initialised guest captured once: sandboxes made from it start in its state without running
/// the guest again, and share its memory copy-on-write (see the module docs). Cheap to share
/// between threads; [`SandboxPool`](crate::SandboxPool) keeps one.
pub struct Template<T = ()> {
    image: GuestImage,
    config: SandboxConfig<T>,
    snapshot: Snapshot,
    memory: Arc<SharedMemory>,
    functions: Arc<Functions>,
}

impl<T> std::fmt::Debug for Template<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("image", &self.image.id()).field("snapshot", &self.snapshot).finish()
    }
}

impl<T: Send + 'static> Template<T> {
    /// Builds and initialises one sandbox of `image` with `builder`'s configuration (its data
    /// `T::default()`, dropped after initialisation), then captures it.
    ///
    /// # Errors
    /// Whatever building or initialising the sandbox fails with.
    pub fn new(builder: &SandboxBuilder<T>, image: &GuestImage) -> Result<Template<T>, Error>
    where
        T: Default,
    {
        Template::new_with(builder, image, T::default())
    }

    /// As [`new`](Self::new), initialising the guest with `data` as the sandbox's data.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn new_with(builder: &SandboxBuilder<T>, image: &GuestImage, data: T) -> Result<Template<T>, Error> {
        let _span = tracing::info_span!("template_create", image = image.id()).entered();
        let sandbox = builder.build_with(image, data)?.init()?;
        let (snapshot, memory) = sandbox.initial.to_shared()?;
        Ok(Template {
            image: image.clone(),
            config: sandbox.core.config.clone(),
            snapshot,
            memory,
            functions: Arc::clone(&sandbox.functions),
        })
    }

    /// A new sandbox in the template's state, with `data` as its data: a new VM mapping the
    /// template's memory copy-on-write, its vCPU set to the captured state. No guest code runs.
    ///
    /// # Errors
    /// KVM failing to create the VM.
    pub fn instantiate_with(&self, data: T) -> Result<Sandbox<T>, Error> {
        let _span = tracing::info_span!("sandbox_from_template", image = self.image.id()).entered();
        let layout = *self.snapshot.layout();
        let (mut vcpu, memory) = vmm::create(layout.memory_size, Some(&self.memory), self.config.msr_filter)?;
        vcpu.restore(self.snapshot.vcpu(), Restore::Full)?;
        vcpu.warm_up()?;
        let core = Core::new(
            (vcpu, memory),
            layout,
            self.image.clone(),
            self.config.clone(),
            data,
            Some(self.snapshot.nonzero().to_vec()),
            self.snapshot.id(),
        )?;
        Ok(Sandbox::from_parts(core, Arc::clone(&self.functions), self.snapshot.clone()))
    }

    /// As [`instantiate_with`](Self::instantiate_with), with `T::default()` as its data.
    ///
    /// # Errors
    /// As [`instantiate_with`](Self::instantiate_with).
    pub fn instantiate(&self) -> Result<Sandbox<T>, Error>
    where
        T: Default,
    {
        self.instantiate_with(T::default())
    }

    /// The image.
    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// The call deadline instances start with.
    pub(crate) fn call_timeout(&self) -> Option<std::time::Duration> {
        self.config.call_timeout
    }

    /// The exports and imports every instance has.
    pub(crate) fn functions(&self) -> &Arc<Functions> {
        &self.functions
    }
}
