//! Guest memory contents in a memfd, mapped copy-on-write by every sandbox made from them.
//!
//! A pool's sandboxes all start from the same initialised memory. Writing it once into a memfd
//! and mapping that `MAP_PRIVATE` into each VM shares every page a sandbox only reads; a page is
//! copied for a sandbox when that sandbox first writes it. The host keeps one read-only view to
//! restore dirtied pages from.
#![allow(unsafe_code, reason = "memfd and mmap; each block argues its safety")]

use crate::vmm::{Doing, VmmError};
use glint_abi::layout::PAGE_SIZE;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Immutable guest memory contents in a memfd, plus a read-only host view of them.
pub(crate) struct SharedMemory {
    file: Arc<File>,
    view: *const u8,
    size: usize,
}

// SAFETY: `view` points at a read-only shared mapping of a file nobody writes after `create`
// returns (the memfd is private to this process and only ever mapped read-only or MAP_PRIVATE),
// so any number of threads may read it.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: the contents are immutable.
unsafe impl Sync for SharedMemory {}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory").field("size", &self.size).finish_non_exhaustive()
    }
}

fn os_err(call: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::System { call, doing: Doing::MappingMemory, source: Arc::new(source) }
}

impl SharedMemory {
    /// Creates `size` bytes of memory holding `pages` (address, 4 KiB of bytes); the rest reads
    /// as zero and takes no space (the file is sparse).
    pub(crate) fn create<'a>(size: u64, pages: impl Iterator<Item = (u64, &'a [u8])>) -> Result<Self, VmmError> {
        let len = usize::try_from(size).map_err(|_| VmmError::GuestMemory { addr: 0, len: usize::MAX })?;
        // SAFETY: the name is a NUL-terminated literal; the returned fd is checked and then owned
        // by exactly one `File`.
        let fd = unsafe { libc::memfd_create(c"glint-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(VmmError::last_os("memfd_create", Doing::MappingMemory));
        }
        // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(os_err("ftruncate on the guest memfd"))?;
        for (addr, bytes) in pages {
            file.write_all_at(bytes, addr).map_err(os_err("write to the guest memfd"))?;
        }
        // SAFETY: a fresh read-only shared mapping of the whole file, no address hint; the
        // result is checked against MAP_FAILED and unmapped only in `drop`.
        let view =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if view == libc::MAP_FAILED {
            return Err(VmmError::last_os("mmap", Doing::MappingMemory));
        }
        Ok(SharedMemory { file: Arc::new(file), view: view.cast::<u8>().cast_const(), size: len })
    }

    /// The memfd, for mapping into a VM.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The 4 KiB page at `page` (page number), or `None` past the end.
    pub(crate) fn page(&self, page: u64) -> Option<&[u8]> {
        let start = usize::try_from(page.checked_mul(PAGE_SIZE)?).ok()?;
        let end = start.checked_add(PAGE_SIZE as usize)?;
        if end > self.size {
            return None;
        }
        // SAFETY: `start..end` lies inside the live `size`-byte mapping, whose contents never
        // change (see the `Sync` impl), so a shared slice of it is sound for `&self`'s lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.view.add(start), PAGE_SIZE as usize) })
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `view` and `size` are exactly what mmap returned in `create`; slices handed out
        // by `page` borrow `self`, so none outlives this.
        unsafe { libc::munmap(self.view.cast_mut().cast(), self.size) };
    }
}
