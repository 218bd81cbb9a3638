//! Guest memory of one VM: the memory slot, KVM's dirty log, the pages the host wrote, and the
//! hot pages left writable between calls.
#![allow(unsafe_code, reason = "the memory slot and KVM_CLEAR_DIRTY_LOG; each block argues its safety")]

use super::error::{Doing, VmmError};
use super::GuestMemory;
use glint_abi::layout::PAGE_SIZE;
use kvm_bindings::{kvm_clear_dirty_log, kvm_clear_dirty_log__bindgen_ty_1};
use kvm_ioctls::VmFd;
use std::os::fd::AsRawFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Most pages kept writable per sandbox. Each is copied back by every restore (about 0.2 us)
/// instead of taking a write-protection fault after it (about 3 us on kvm_pvm).
const MAX_HOT_PAGES: u32 = 16;

/// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`; kvm-ioctls has no wrapper for it.
const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xc018_aec0;
const _: () = assert!(std::mem::size_of::<kvm_clear_dirty_log>() == 24);

/// One VM's guest memory (slot 0 at guest address 0) and the VM fd that owns the slot.
#[derive(Debug)]
pub(crate) struct KvmMemory {
    // Field order is drop order: the VM (and its slot) goes before the mapping it points at.
    vm: VmFd,
    mem: GuestMemoryMmap,
    pages: u64,
    /// Pages the host wrote since the last `take_dirty` (KVM's dirty log sees only the guest's).
    host_dirty: Vec<u64>,
    /// Dirty pages are re-protected by us (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), not by
    /// KVM_GET_DIRTY_LOG, so pages every call writes can stay writable (see `take_dirty`).
    manual_protect: bool,
    /// Pages left writable and always reported dirty: written in two syncs in a row.
    hot: Vec<u64>,
    /// The guest-dirty bitmap of the previous sync.
    previous: Vec<u64>,
}

impl KvmMemory {
    /// Takes over `vm` and `mem`, which `vm`'s slot 0 already maps.
    pub(crate) fn new(vm: VmFd, mem: GuestMemoryMmap, size: u64, manual_protect: bool) -> KvmMemory {
        let pages = size / PAGE_SIZE;
        let words = pages.div_ceil(64) as usize;
        KvmMemory {
            vm,
            mem,
            pages,
            host_dirty: vec![0; words],
            manual_protect,
            hot: vec![0; words],
            previous: vec![0; words],
        }
    }

    /// Grows the hot set and re-protects the other dirty pages (manual protection only).
    fn reprotect(&mut self, dirty: &[u64]) -> Result<(), VmmError> {
        let mut hot_pages: u32 = self.hot.iter().map(|w| w.count_ones()).sum();
        for ((h, p), &d) in self.hot.iter_mut().zip(&self.previous).zip(dirty) {
            let mut new = d & p & !*h;
            while new != 0 && hot_pages < MAX_HOT_PAGES {
                let bit = new & new.wrapping_neg();
                *h |= bit;
                new &= !bit;
                hot_pages += 1;
            }
        }
        self.previous.copy_from_slice(dirty);
        let mut clear: Vec<u64> = dirty.iter().zip(&self.hot).map(|(d, h)| d & !h).collect();
        if clear.iter().all(|&w| w == 0) {
            return Ok(());
        }
        let mut arg = kvm_clear_dirty_log {
            slot: 0,
            num_pages: u32::try_from(self.pages).unwrap_or(u32::MAX),
            first_page: 0,
            __bindgen_anon_1: kvm_clear_dirty_log__bindgen_ty_1 { dirty_bitmap: clear.as_mut_ptr().cast() },
        };
        // SAFETY: KVM_CLEAR_DIRTY_LOG reads `num_pages` bits from `dirty_bitmap`, which points at
        // `clear`, a live buffer of ceil(pages / 64) words; `arg` has the kernel's layout
        // (checked size) and outlives the call; the VM fd is open.
        let rc = unsafe { libc::ioctl(self.vm.as_raw_fd(), KVM_CLEAR_DIRTY_LOG, &mut arg) };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            return Err(VmmError::ioctl_errno("KVM_CLEAR_DIRTY_LOG", Doing::TrackingDirtyPages, errno));
        }
        Ok(())
    }

    fn access(&self, addr: u64, len: usize) -> VmmError {
        VmmError::GuestMemory { addr, len }
    }

    /// The host address of `len` bytes of guest memory at `addr`, all inside the slot.
    fn window(&self, addr: u64, len: usize) -> Result<*mut u8, VmmError> {
        let end = addr.checked_add(len as u64).ok_or_else(|| self.access(addr, len))?;
        if end > self.pages * PAGE_SIZE {
            return Err(self.access(addr, len));
        }
        // One region from guest address 0 (see `vmm::create`), so `addr..end` is contiguous.
        let base = self.mem.get_host_address(GuestAddress(0)).map_err(|_| self.access(addr, len))?;
        // SAFETY: `addr < end <= size` of the region that starts at `base`.
        Ok(unsafe { base.add(addr as usize) })
    }

    fn mark_host_written(&mut self, addr: u64, len: usize) {
        if let Some(last) = (addr + len as u64).checked_sub(1).filter(|_| len != 0) {
            for page in addr / PAGE_SIZE..=last / PAGE_SIZE {
                if let Some(word) = self.host_dirty.get_mut((page / 64) as usize) {
                    *word |= 1 << (page % 64);
                }
            }
        }
    }
}

impl GuestMemory for KvmMemory {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), VmmError> {
        self.mem.read_slice(buf, GuestAddress(addr)).map_err(|_| self.access(addr, buf.len()))
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError> {
        self.write_untracked(addr, bytes)?;
        self.mark_host_written(addr, bytes.len());
        Ok(())
    }

    fn write_with<R>(&mut self, addr: u64, len: usize, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Result<R, VmmError> {
        let ptr = self.window(addr, len)?;
        // SAFETY: `ptr..ptr + len` lies inside the live mapping `mem` owns (checked by `window`)
        // and holds initialised bytes (anonymous or file pages). Nothing else accesses it while
        // the slice lives: the only other writer is this VM's one vCPU, which runs only inside
        // `Vcpu::run` on the thread that owns the sandbox, and the sandbox is borrowed here
        // (`&mut self`) for the whole of `f`, which cannot keep the slice (its lifetime ends with
        // the call). KVM writes guest memory only on the vCPU's behalf, so not now either.
        let window = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let (written, r) = f(window);
        self.mark_host_written(addr, written.min(len));
        Ok(r)
    }

    fn read_with<R>(&self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, VmmError> {
        let ptr = self.window(addr, len)?;
        // SAFETY: as in `write_with`: inside the mapping, initialised, and unchanging while `f`
        // runs because the vCPU is stopped (the sandbox is borrowed for the call) and the host
        // writes guest memory only through `&mut self`.
        let window = unsafe { std::slice::from_raw_parts(ptr.cast_const(), len) };
        Ok(f(window))
    }

    fn write_untracked(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError> {
        self.mem.write_slice(bytes, GuestAddress(addr)).map_err(|_| self.access(addr, bytes.len()))
    }

    /// With manual protection, pages the guest wrote in two syncs in a row (its stack top, the
    /// output buffer, the heap it always touches) become *hot*: we never re-protect them, so KVM
    /// reports them dirty at every sync and the next call writes them without a fault.
    fn take_dirty(&mut self) -> Result<Vec<u64>, VmmError> {
        let size = usize::try_from(self.pages * PAGE_SIZE).unwrap_or(usize::MAX);
        let mut dirty =
            self.vm.get_dirty_log(0, size).map_err(VmmError::ioctl("KVM_GET_DIRTY_LOG", Doing::TrackingDirtyPages))?;
        dirty.resize(self.host_dirty.len(), 0);
        if self.manual_protect {
            self.reprotect(&dirty)?;
        }
        for (d, h) in dirty.iter_mut().zip(self.host_dirty.iter_mut()) {
            *d |= std::mem::take(h);
        }
        Ok(dirty)
    }
}
