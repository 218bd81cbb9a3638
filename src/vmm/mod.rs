//! Everything that speaks KVM, behind two small traits the sandbox is written against:
//! [`GuestMemory`] (the memory slot, the dirty log, copy-back) and [`Vcpu`] (run to an [`Exit`],
//! save and restore state). [`create`] makes a KVM partition of both; `fake` (tests only)
//! provides stand-ins, so the run loop and restore can be tested without a VM.
#![allow(unsafe_code, reason = "the memory slot; each block argues its safety")]

mod error;
pub(crate) mod factory;
mod host;
pub(crate) mod interrupt;
mod memory;
mod persist;
mod selectors;
mod vcpu;

#[cfg(test)]
pub(crate) mod fake;

pub use error::{Doing, VmmError};
pub use factory::{prepare_vms, vm_factory_stats, VmFactoryStats};
pub(crate) use memory::KvmMemory;
pub(crate) use persist::StateError;
pub(crate) use vcpu::KvmVcpu;

use crate::mem::shared::SharedMemory;
use kvm_bindings::{
    kvm_debugregs, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_userspace_memory_region, kvm_xcrs, kvm_xsave,
};
use kvm_bindings::{kvm_enable_cap, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE};
use kvm_ioctls::SyncReg;
use selectors::Selectors;
use std::sync::Arc;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

/// Maps each run of a packed file's pages copy-on-write over the (zero) mapping `mem`.
fn map_runs(mem: &GuestMemoryMmap, shared: &SharedMemory, len: usize) -> Result<(), VmmError> {
    use std::os::fd::AsRawFd;
    let base = mem.get_host_address(GuestAddress(0)).map_err(|_| VmmError::GuestMemory { addr: 0, len })?;
    for run in shared.runs().unwrap_or_default() {
        let at = run.page * glint_abi::layout::PAGE_SIZE;
        let bytes = run.pages * glint_abi::layout::PAGE_SIZE;
        let (Ok(start), Ok(n), Ok(offset)) =
            (usize::try_from(at), usize::try_from(bytes), libc::off_t::try_from(run.offset))
        else {
            return Err(VmmError::GuestMemory { addr: at, len: usize::MAX });
        };
        if start.checked_add(n).is_none_or(|end| end > len) {
            return Err(VmmError::GuestMemory { addr: at, len: n });
        }
        // SAFETY: `start..start + n` lies inside the `len`-byte private anonymous mapping that
        // `mem` owns and that nothing uses yet (no VM slot points at it, no slice of it exists);
        // MAP_FIXED replaces exactly those pages with a private (copy-on-write) mapping of the
        // file, which `mem`'s munmap of the whole range removes with the rest. The file offset
        // is page-aligned (the format puts page data on page boundaries).
        let p = unsafe {
            libc::mmap(
                base.add(start).cast(),
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                shared.file().as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(VmmError::last_os("mmap", Doing::MappingMemory));
        }
    }
    // The pinned pages (the host-owned ones, checked at load) come from their private copies,
    // never from the file: a file changed in place cannot change them.
    for (page, bytes) in shared.pinned() {
        let at = page * glint_abi::layout::PAGE_SIZE;
        let Ok(start) = usize::try_from(at) else {
            return Err(VmmError::GuestMemory { addr: at, len: bytes.len() });
        };
        if start.checked_add(bytes.len()).is_none_or(|end| end > len) {
            return Err(VmmError::GuestMemory { addr: at, len: bytes.len() });
        }
        // SAFETY: `start..start + bytes.len()` lies inside the `len`-byte mapping `mem` owns,
        // which nothing uses yet (no VM slot points at it, no slice of it exists); `bytes` is a
        // separate heap allocation, so the ranges do not overlap. The write makes the private
        // mapping copy the page, which then no longer reads through to the file.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(start), bytes.len()) };
    }
    Ok(())
}

/// How the guest left the vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `out` to `port` of `size` bytes; `value` is the first byte.
    Out { port: u16, size: usize, value: u8 },
    /// `in` from `port` (never allowed to complete).
    In { port: u16 },
    /// Access to guest-physical memory that is not RAM.
    Mmio { addr: u64, write: bool },
    /// `hlt` reached the host (only the stubs can execute it).
    Hlt,
    /// Triple fault.
    Shutdown,
    /// KVM could not continue the guest (e.g. emulation failure).
    InternalError,
    /// The vCPU could not be entered.
    FailEntry(u64),
    /// A signal (kill or deadline) interrupted the run.
    Interrupted,
    /// An exit glint does not expect, by name.
    Other(&'static str),
}

/// Whether a sandbox's VM gets a KVM MSR filter that denies every MSR access reaching KVM.
///
/// A guest cannot reach KVM's MSR emulation without the filter either: glint's guests run at
/// CPL3, where `rdmsr` and `wrmsr` raise #GP before any VM exit on VMX, SVM and kvm_pvm, and the
/// only CPL0 code is glint's own exception stubs, which execute no MSR instruction (the argument
/// in full is docs/SECURITY.md, section 2). The filter is a second layer for the case that
/// argument ever fails. Installing it ends in the kernel's `synchronize_srcu`, which can sleep
/// for milliseconds (15 ms measured on a CPU that just tore a VM down), so filtered VMs are made
/// ahead of demand by a process-wide factory (a few threads started on first use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MsrFilter {
    /// No filter (the default): creation never waits on the kernel.
    #[default]
    Off,
    /// A deny-all `KVM_X86_SET_MSR_FILTER`; VMs come from the factory when it has one ready.
    /// Needs `KVM_CAP_X86_MSR_FILTER`.
    DenyAll,
}

/// Which vCPU state a restore must put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restore {
    /// Everything: the guest may have run the exception stubs at CPL0.
    Full,
    /// After a call that ended cleanly at CPL3: registers, special registers and XSAVE state.
    AfterCleanCall,
}

/// Guest memory, as the sandbox uses it.
pub(crate) trait GuestMemory {
    /// Number of 4 KiB pages.
    fn pages(&self) -> u64;
    /// Copies guest memory at `addr` into `buf`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), VmmError>;
    /// Copies `bytes` into guest memory at `addr` and remembers the pages as written.
    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError>;
    /// Copies `bytes` into guest memory without marking the pages written (restore writes back
    /// what a snapshot holds).
    fn write_untracked(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError>;
    /// Lends `len` bytes of guest memory at `addr` to `f` as a host slice, to encode into in
    /// place; `f` returns how many bytes from the start it wrote, and those pages are remembered
    /// as written. For the host's own writes between runs only: the vCPU is stopped while the
    /// sandbox holds `&mut self`, and the slice cannot outlive `f`.
    fn write_with<R>(&mut self, addr: u64, len: usize, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Result<R, VmmError>;
    /// Lends `len` bytes of guest memory at `addr` to `f` as a host slice, to decode from in
    /// place (the vCPU is stopped, so the bytes cannot change while `f` reads them).
    fn read_with<R>(&self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, VmmError>;
    /// The pages written since the last call, by the guest or by the host, as a bitmap of 64-page
    /// words; the guest's pages are write-protected again so the next writes are seen.
    fn take_dirty(&mut self) -> Result<Vec<u64>, VmmError>;
}

/// A vCPU, as the sandbox uses it.
pub(crate) trait Vcpu {
    /// Enters the guest until it exits.
    fn run(&mut self) -> Result<Exit, VmmError>;
    /// Puts the vCPU in 64-bit mode at CPL3, about to run `rip` with stack `rsp` and `rdi`.
    fn enter_long_mode(&mut self, rip: u64, rsp: u64, rdi: u64) -> Result<(), VmmError>;
    /// Captures every piece of guest-changeable state.
    fn save(&mut self) -> Result<VcpuState, VmmError>;
    /// Puts the vCPU back into `state`.
    fn restore(&mut self, state: &VcpuState, how: Restore) -> Result<(), VmmError>;
    /// Continues the guest at CPL3 with `state`'s registers and x87/SSE state, as an `iretq` from
    /// an exception stub would (CS and SS become the guest's user segments again); the other
    /// special registers, MSRs and debug registers stay as they are. For a debugger that resumes
    /// the guest after a breakpoint or a single step (the vCPU is then in the stub, at CPL0).
    #[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb stub's hooks use it"))]
    fn resume_guest(&mut self, state: &VcpuState) -> Result<(), VmmError>;
    /// CR2 as of the last exit.
    fn fault_address(&self) -> u64;
    /// The byte that makes the next (or current) run return at once, for the interrupt machinery.
    fn immediate_exit(&mut self) -> *mut u8;
    /// Clears it after an interrupted run.
    fn clear_immediate_exit(&mut self);
    /// Runs once without entering the guest: KVM's one-time setup of the vCPU, off the request
    /// path, and the completion of pending I/O.
    fn warm_up(&mut self) -> Result<(), VmmError>;
}

/// Everything about a vCPU a guest could change.
pub(crate) struct VcpuState {
    pub(crate) regs: kvm_regs,
    pub(crate) sregs: kvm_sregs,
    pub(crate) xsave: Box<kvm_xsave>,
    pub(crate) xcrs: kvm_xcrs,
    pub(crate) debugregs: kvm_debugregs,
    pub(crate) msrs: Vec<kvm_msr_entry>,
    /// The guest's data-segment selectors as it left them (see `selectors`).
    pub(crate) selectors: Selectors,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("rip", &self.regs.rip).field("rsp", &self.regs.rsp).finish_non_exhaustive()
    }
}

/// Creates a VM with `size` bytes of guest memory at address 0 (zeroed, or a private
/// copy-on-write mapping of `shared`), the MSR filter `filter` asks for, and its one vCPU.
pub(crate) fn create(
    size: u64,
    shared: Option<&SharedMemory>,
    filter: MsrFilter,
) -> Result<(KvmVcpu, KvmMemory), VmmError> {
    let host = host::host()?;
    let factory::Prepared { vm, .. } = factory::take(filter)?;
    let len = usize::try_from(size).map_err(|_| VmmError::GuestMemory { addr: 0, len: usize::MAX })?;
    let no_memory = || VmmError::System {
        call: "mmap",
        doing: Doing::MappingMemory,
        source: Arc::new(std::io::Error::from_raw_os_error(libc::ENOMEM)),
    };
    let mem = match shared {
        None => GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)]).map_err(|_| no_memory())?,
        Some(shared) if shared.runs().is_some() => {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)]).map_err(|_| no_memory())?;
            map_runs(&mem, shared, len)?;
            mem
        }
        Some(shared) => {
            let region = MmapRegionBuilder::new(len)
                .with_file_offset(FileOffset::from_arc(Arc::clone(shared.file()), 0))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
                .map_err(|_| no_memory())?;
            let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(no_memory)?;
            GuestMemoryMmap::from_regions(vec![region]).map_err(|_| no_memory())?
        }
    };
    let host_addr = mem.get_host_address(GuestAddress(0)).map_err(|_| no_memory())?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: host_addr as u64,
    };
    // SAFETY: `host_addr` is the start of a live `size`-byte mapping owned by `mem`, which the
    // returned `KvmMemory` owns and drops only after `vm` (its field order), so the guest never
    // sees freed memory; slot 0 is not used by anything else in this VM.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(VmmError::ioctl("KVM_SET_USER_MEMORY_REGION", Doing::MappingMemory))?;
    let mut fd = vm.create_vcpu(0).map_err(VmmError::ioctl("KVM_CREATE_VCPU", Doing::CreatingVcpu))?;
    fd.set_cpuid2(&host.cpuid).map_err(VmmError::ioctl("KVM_SET_CPUID2", Doing::CreatingVcpu))?;
    // Every exit reports regs and sregs in the kvm_run page: faults and restores read them there
    // instead of paying an ioctl each.
    fd.set_sync_valid_reg(SyncReg::Register);
    fd.set_sync_valid_reg(SyncReg::SystemRegister);
    let manual_protect = host.manual_dirty_protect
        && vm
            .enable_cap(&kvm_enable_cap {
                cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                args: [u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0, 0, 0],
                ..Default::default()
            })
            .is_ok();
    Ok((KvmVcpu::new(fd), KvmMemory::new(vm, mem, size, manual_protect)))
}
