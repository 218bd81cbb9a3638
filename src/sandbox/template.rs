//! Templates: an initialised guest captured once, from which sandboxes are made without running
//! the guest again. The memory lives in a memfd that every such sandbox maps copy-on-write, so a
//! thousand ready sandboxes cost little more than the pages each one writes.

use super::{CallStats, Core, Exports, Sandbox, SandboxBuilder, Shared, Snapshot};
use crate::image::GuestImage;
use crate::mem::shared::SharedMemory;
use crate::vmm::interrupt::CallControl;
use crate::vmm::Partition;
use crate::Error;
use std::sync::Arc;

/// An initialised guest captured once: sandboxes made from it start in its state without running
/// the guest again, and share its memory copy-on-write (see the module docs). Cheap to share
/// between threads; [`SandboxPool`](crate::SandboxPool) keeps one.
pub struct Template {
    image: GuestImage,
    shared: Shared,
    snapshot: Snapshot,
    memory: Arc<SharedMemory>,
    exports: Arc<Exports>,
    /// Pages that are not zero in the template (each new sandbox's `written`).
    nonzero: Vec<u64>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").field("image", &self.image.id()).field("snapshot", &self.snapshot).finish()
    }
}

impl Template {
    /// Builds and initialises one sandbox of `image` with `builder`'s configuration, then
    /// captures it.
    ///
    /// # Errors
    /// Whatever building or initialising the sandbox fails with.
    pub fn new(builder: &SandboxBuilder, image: &GuestImage) -> Result<Template, Error> {
        let _span = tracing::info_span!("template_create", image = image.id()).entered();
        let sandbox = builder.build(image)?.init()?;
        let (snapshot, memory) = sandbox.initial.to_shared()?;
        let nonzero = snapshot.nonzero().to_vec();
        Ok(Template {
            image: image.clone(),
            shared: sandbox.core.shared.clone(),
            snapshot,
            memory,
            exports: Arc::clone(&sandbox.exports),
            nonzero,
        })
    }

    /// A new sandbox in the template's state: a new VM mapping the template's memory
    /// copy-on-write, its vCPU set to the captured state. No guest code runs.
    ///
    /// # Errors
    /// KVM failing to create the VM.
    pub fn instantiate(&self) -> Result<Sandbox, Error> {
        let _span = tracing::info_span!("sandbox_from_template", image = self.image.id()).entered();
        let layout = *self.snapshot.layout();
        let mut partition = Partition::new(layout.memory_size, Some(&self.memory))?;
        partition.restore_vcpu(self.snapshot.vcpu())?;
        partition.warm_up()?;
        let core = Core {
            partition,
            layout,
            image: self.image.clone(),
            shared: self.shared.clone(),
            control: CallControl::new()?,
            poisoned: None,
            written: self.nonzero.clone(),
            base: self.snapshot.id(),
            at_return: false,
            stats: CallStats::default(),
            fail_next_restore: false,
        };
        Ok(Sandbox { core, exports: Arc::clone(&self.exports), initial: self.snapshot.clone() })
    }

    /// The image.
    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// The call deadline instances start with.
    pub(crate) fn call_timeout(&self) -> Option<std::time::Duration> {
        self.shared.call_timeout
    }

    /// The exports every instance has.
    pub(crate) fn exports(&self) -> &Arc<Exports> {
        &self.exports
    }
}
