//! Guest memory contents in a file, mapped copy-on-write by every sandbox made from them.
//!
//! A pool's sandboxes all start from the same initialised memory. Writing it once into a memfd
//! and mapping that `MAP_PRIVATE` into each VM shares every page a sandbox only reads; a page is
//! copied for a sandbox when that sandbox first writes it. The host keeps one read-only view to
//! restore dirtied pages from.
//!
//! A snapshot file holds the same contents packed: only the non-zero pages, page-aligned, in
//! guest order ([`SharedMemory::packed`]). Each run of consecutive pages is mapped `MAP_PRIVATE`
//! from the file over a zero mapping, so every process that loads the file shares its page
//! cache.
#![allow(unsafe_code, reason = "memfd and mmap; each block argues its safety")]

use crate::vmm::{Doing, VmmError};
use glint_abi::layout::PAGE_SIZE;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Immutable guest memory contents in a file, plus a read-only host view of them.
pub(crate) struct SharedMemory {
    file: Arc<File>,
    /// A read-only shared mapping: of the whole memfd, or of a packed file's page data.
    view: *const u8,
    view_len: usize,
    /// Bytes of guest memory.
    size: usize,
    packing: Packing,
    /// Private copies of pages that must not read through to the file, by page number, sorted:
    /// a packed file's host-owned pages, copied when they were checked, so a file changed in
    /// place later cannot change them ([`pin`](Self::pin)).
    pinned: Vec<(u64, Box<[u8]>)>,
}

/// How guest pages sit in the file.
enum Packing {
    /// At their guest address (a sparse memfd).
    Whole,
    /// Only the non-zero pages, in guest order, from `data_offset`.
    Packed {
        /// For every guest page, its index among the stored pages, or `u32::MAX` for a zero page.
        index: Vec<u32>,
        runs: Vec<Run>,
    },
}

/// Consecutive guest pages stored consecutively in a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// First guest page number.
    pub(crate) page: u64,
    /// Pages in the run.
    pub(crate) pages: u64,
    /// Byte offset of the first page in the file (page-aligned).
    pub(crate) offset: u64,
}

// SAFETY: `view` points at a read-only shared mapping of a file nobody writes after `create`
// returns (the memfd is private to this process and only ever mapped read-only or MAP_PRIVATE;
// a snapshot file is written once under a temporary name and renamed, never written in place),
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
        Ok(SharedMemory {
            file: Arc::new(file),
            view: view.cast::<u8>().cast_const(),
            view_len: len,
            size: len,
            packing: Packing::Whole,
            pinned: Vec::new(),
        })
    }

    /// Guest memory of `size` bytes whose non-zero pages (set in `nonzero`, in ascending order)
    /// are stored consecutively in `file` from `data_offset` (page-aligned). The caller has
    /// checked that the file holds them all; the file must not change while mapped (see
    /// `Sync`): snapshot files are written once, to a new name.
    pub(crate) fn packed(file: File, size: u64, nonzero: &[u64], data_offset: u64) -> Result<Self, VmmError> {
        let len = usize::try_from(size).map_err(|_| VmmError::GuestMemory { addr: 0, len: usize::MAX })?;
        let pages = size / PAGE_SIZE;
        let mut index = vec![u32::MAX; usize::try_from(pages).unwrap_or(0)];
        let mut runs: Vec<Run> = Vec::new();
        let mut stored = 0u64;
        for page in 0..pages {
            let set = nonzero.get((page / 64) as usize).is_some_and(|w| w & (1 << (page % 64)) != 0);
            if !set {
                continue;
            }
            if let Some(slot) = index.get_mut(page as usize) {
                *slot = u32::try_from(stored).unwrap_or(u32::MAX);
            }
            let offset = data_offset + stored * PAGE_SIZE;
            match runs.last_mut() {
                Some(r) if r.page + r.pages == page => r.pages += 1,
                _ => runs.push(Run { page, pages: 1, offset }),
            }
            stored += 1;
        }
        let view_len = usize::try_from(stored * PAGE_SIZE).unwrap_or(usize::MAX);
        let view = if view_len == 0 {
            std::ptr::NonNull::<u8>::dangling().as_ptr().cast_const()
        } else {
            let offset = libc::off_t::try_from(data_offset).map_err(|_| VmmError::GuestMemory { addr: 0, len })?;
            // SAFETY: a fresh read-only shared mapping of `view_len` bytes of the file, no address
            // hint; the result is checked against MAP_FAILED and unmapped only in `drop`.
            let v = unsafe {
                libc::mmap(std::ptr::null_mut(), view_len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), offset)
            };
            if v == libc::MAP_FAILED {
                return Err(VmmError::last_os("mmap", Doing::MappingMemory));
            }
            v.cast::<u8>().cast_const()
        };
        Ok(SharedMemory {
            file: Arc::new(file),
            view,
            view_len,
            size: len,
            packing: Packing::Packed { index, runs },
            pinned: Vec::new(),
        })
    }

    /// The runs to map from the file for a packed file; `None` for a memfd mapped whole.
    pub(crate) fn runs(&self) -> Option<&[Run]> {
        match &self.packing {
            Packing::Whole => None,
            Packing::Packed { runs, .. } => Some(runs),
        }
    }

    /// The memfd, for mapping into a VM.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Copies the stored pages among `pages` (page numbers) out of the file into private memory:
    /// from now on [`page`](Self::page) returns the copies and every VM made from this memory gets
    /// them ([`pinned`](Self::pinned)), whatever happens to the file. Zero (unstored) pages need
    /// no copy: they are never read from the file.
    pub(crate) fn pin(&mut self, pages: impl IntoIterator<Item = u64>) {
        for page in pages {
            if self.pinned.binary_search_by_key(&page, |(p, _)| *p).is_ok() {
                continue;
            }
            let Some(bytes) = self.page(page).map(Box::<[u8]>::from) else { continue };
            let at = self.pinned.partition_point(|(p, _)| *p < page);
            self.pinned.insert(at, (page, bytes));
        }
    }

    /// The pinned pages (see [`pin`](Self::pin)), sorted by page number.
    pub(crate) fn pinned(&self) -> &[(u64, Box<[u8]>)] {
        &self.pinned
    }

    /// The 4 KiB page at `page` (page number), or `None` past the end (and, in a packed file,
    /// for a zero page).
    pub(crate) fn page(&self, page: u64) -> Option<&[u8]> {
        if let Ok(i) = self.pinned.binary_search_by_key(&page, |(p, _)| *p) {
            return self.pinned.get(i).map(|(_, b)| &b[..]);
        }
        let stored = match &self.packing {
            Packing::Whole => page,
            Packing::Packed { index, .. } => match *index.get(usize::try_from(page).ok()?)? {
                u32::MAX => return None,
                i => u64::from(i),
            },
        };
        let start = usize::try_from(stored.checked_mul(PAGE_SIZE)?).ok()?;
        let end = start.checked_add(PAGE_SIZE as usize)?;
        if end > self.view_len {
            return None;
        }
        // SAFETY: `start..end` lies inside the live `view_len`-byte mapping, whose contents never
        // change (see the `Sync` impl), so a shared slice of it is sound for `&self`'s lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.view.add(start), PAGE_SIZE as usize) })
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.view_len == 0 {
            return;
        }
        // SAFETY: `view` and `view_len` are exactly what mmap returned in `create` or `packed`;
        // slices handed out by `page` borrow `self`, so none outlives this.
        unsafe { libc::munmap(self.view.cast_mut().cast(), self.view_len) };
    }
}
