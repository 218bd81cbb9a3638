//! Templates: an initialised guest captured once, from which sandboxes are made without running
//! the guest again. The memory lives in a memfd that every such sandbox maps copy-on-write, so a
//! thousand ready sandboxes cost little more than the pages each one writes.

use super::config::SandboxConfig;
use super::core::Core;
use super::file::{self, Loaded, SnapshotFileError};
use super::functions::Functions;
use super::{Sandbox, SandboxBuilder, Snapshot};
use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::mem::shared::SharedMemory;
use crate::mem::MemoryConfig;
use crate::vmm::{self, Restore, Vcpu};
use crate::Error;
use std::path::Path;
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
    /// Set by [`Template::load_trusted`].
    file_verification: Option<crate::Verification>,
}

impl<T> Clone for Template<T> {
    fn clone(&self) -> Self {
        Template {
            image: self.image.clone(),
            config: self.config.clone(),
            snapshot: self.snapshot.clone(),
            memory: Arc::clone(&self.memory),
            functions: Arc::clone(&self.functions),
            file_verification: self.file_verification.clone(),
        }
    }
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
            file_verification: None,
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

    /// Saves the template to a snapshot file at `path` (replacing it atomically), which
    /// [`Template::load`] turns back into a template in this or another process without running
    /// the guest. The file holds the non-zero pages, the vCPU state, the guest's function table,
    /// the image itself and its SHA-256, the ABI and glint versions and the memory layout, under
    /// a checksum (the format: docs/SNAPSHOT-FORMAT.md).
    ///
    /// # Errors
    /// [`SnapshotFileError::Io`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let _span = tracing::info_span!("template_save", path = %path.as_ref().display()).entered();
        file::save(path.as_ref(), &self.image, &self.snapshot, &self.functions)
    }

    /// Loads a template saved by [`save`](Self::save) for `image`, with `builder`'s configuration
    /// (host functions, limits, deadline, MSR filter). The memory pages are mapped copy-on-write
    /// from the file, so every process that loads it shares its page cache. No guest code runs.
    ///
    /// # Errors
    /// [`SnapshotFileError`] (in [`Error::SnapshotFile`]) for a file that cannot be read, is
    /// truncated, damaged or modified (checksum), of another snapshot format, glint or ABI
    /// version, of another image than `image` or of another memory layout than `builder` makes,
    /// or that holds a state glint would not run; [`Error::Imports`] if the guest imports what
    /// `builder` does not provide.
    pub fn load(path: impl AsRef<Path>, builder: &SandboxBuilder<T>, image: &GuestImage) -> Result<Template<T>, Error> {
        let _span = tracing::info_span!("template_load", path = %path.as_ref().display()).entered();
        let loaded = file::load(path.as_ref(), false)?;
        let expected = Layout::new(&builder.memory, image)?;
        Template::from_loaded(loaded, builder, image.clone(), &expected, false)
    }

    /// As [`load`](Self::load), with the file itself held to `policy` as an image is: the
    /// SHA-256 of the file (as `sha256sum` prints it) must match the policy's digest pin, and
    /// `signature`, over the file as `openssl dgst -sha256 -sign` or `cosign sign-blob` make it,
    /// must be by one of its keys, or may be absent only if the policy does not require one.
    /// The digest comes from the same read that checks the file. What `glint serve` does for a
    /// function with a `snapshot` when its `[trust]` asks for pins or signatures; `image` is then
    /// the image verified under its own pins, and the file must hold that image's code.
    ///
    /// # Errors
    /// As [`load`](Self::load), and [`SnapshotFileError::Untrusted`] when the policy refuses the
    /// file.
    pub fn load_trusted(
        path: impl AsRef<Path>,
        builder: &SandboxBuilder<T>,
        image: &GuestImage,
        policy: &crate::TrustPolicy,
        signature: Option<&crate::ImageSignature>,
    ) -> Result<Template<T>, Error> {
        let path = path.as_ref();
        let _span = tracing::info_span!("template_load", path = %path.display(), trusted = true).entered();
        let loaded = file::load(path, true)?;
        let digest = loaded
            .file_digest
            .ok_or(SnapshotFileError::Malformed { path: path.to_path_buf(), what: "file digest not computed" })?;
        let verification = policy
            .verify_digest(digest, signature)
            .map_err(|e| SnapshotFileError::Untrusted { path: path.to_path_buf(), source: Box::new(e) })?;
        let expected = Layout::new(&builder.memory, image)?;
        let mut template = Template::from_loaded(loaded, builder, image.clone(), &expected, false)?;
        template.file_verification = Some(verification);
        Ok(template)
    }

    /// What [`load_trusted`](Self::load_trusted) established about the file (its digest and
    /// signer); `None` for a template not loaded that way.
    pub fn file_verification(&self) -> Option<&crate::Verification> {
        self.file_verification.as_ref()
    }

    /// As [`load`](Self::load) with the image the file embeds (checked like any image, and
    /// against the digest the file records) and the memory sizes the file was taken with:
    /// `builder`'s memory sizes are not used. What `glint run --snapshot` does.
    ///
    /// # Errors
    /// As [`load`](Self::load), and [`Error::Image`] if the embedded image is refused.
    pub fn load_with_embedded_image(path: impl AsRef<Path>, builder: &SandboxBuilder<T>) -> Result<Template<T>, Error> {
        let _span = tracing::info_span!("template_load", path = %path.as_ref().display()).entered();
        let loaded = file::load(path.as_ref(), false)?;
        let image = GuestImage::from_bytes(&loaded.image)?;
        let l = &loaded.layout;
        let sizes = MemoryConfig {
            memory_size: l.memory_size,
            input_size: l.input_size,
            output_size: l.output_size,
            stack_size: l.stack_size,
        };
        let expected = Layout::new(&sizes, &image)?;
        Template::from_loaded(loaded, builder, image, &expected, true)
    }

    fn from_loaded(
        mut loaded: Loaded,
        builder: &SandboxBuilder<T>,
        image: GuestImage,
        expected: &Layout,
        embedded: bool,
    ) -> Result<Template<T>, Error> {
        loaded.check(&image, expected, embedded)?;
        let functions = Functions::parse(&loaded.table)
            .map_err(|_| SnapshotFileError::Malformed { path: loaded.path.clone(), what: "function table" })?;
        functions
            .check_imports(&builder.config.host_fns, builder.config.unknown_imports_as_traps)
            .map_err(Error::Imports)?;
        let memory = Arc::new(loaded.memory);
        let snapshot = Snapshot::from_file(image.id(), loaded.layout, Arc::clone(&memory), loaded.nonzero, loaded.vcpu);
        Ok(Template {
            image,
            config: builder.config.clone(),
            snapshot,
            memory,
            functions: Arc::new(functions),
            file_verification: None,
        })
    }

    /// The functions the guest exports.
    pub fn exports(&self) -> &[super::Export] {
        &self.functions.exports
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
