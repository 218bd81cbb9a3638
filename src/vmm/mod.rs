//! Everything that speaks KVM: the partition (VM, vCPU, memory slot), the run loop's exits, and
//! the signal-based interrupt of a running vCPU.
#![allow(unsafe_code, reason = "ioctls and the kvm_run page; each block argues its safety")]

pub(crate) mod interrupt;
mod selectors;

use selectors::Selectors;

use crate::mem::layout::{Layout, GDT_ADDR, IDT_ADDR, PML4_ADDR, TSS_ADDR};
use crate::mem::shared::SharedMemory;
use crate::mem::x86::{GDT_LIMIT, IDT_LIMIT, TSS_LIMIT, TSS_SEL, USER_CS, USER_DS};
use crate::Error;
use glint_abi::layout::BOOT_INFO_ADDR;
use glint_abi::layout::PAGE_SIZE;
use kvm_bindings::{
    kvm_clear_dirty_log, kvm_clear_dirty_log__bindgen_ty_1, kvm_enable_cap, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
};
use kvm_bindings::{
    kvm_debugregs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS,
};
use kvm_ioctls::{
    Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, SyncReg, VcpuExit, VcpuFd, VmFd,
};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::OnceLock;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

/// The process-wide `/dev/kvm` handle and what we need from it, opened once.
struct Host {
    kvm: Kvm,
    cpuid: CpuId,
    /// The MSRs of [`SAVED_MSRS`] this KVM supports.
    msrs: Vec<u32>,
}

/// MSRs saved in snapshots and reset by restore. A CPL3 guest cannot write any MSR (`wrmsr`
/// faults, and the MSR filter denies whatever might reach KVM), so this is defence in depth:
/// SYSENTER_CS/ESP/EIP, PAT, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX.
const SAVED_MSRS: [u32; 10] =
    [0x174, 0x175, 0x176, 0x277, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0102, 0xc000_0103];

/// Everything about a vCPU a guest could change, as KVM reports it.
pub(crate) struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: Box<kvm_xsave>,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    msrs: Vec<kvm_msr_entry>,
    /// The guest's data-segment selectors as it left them (see [`selectors`]).
    selectors: Selectors,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("rip", &self.regs.rip).field("rsp", &self.regs.rsp).finish_non_exhaustive()
    }
}

impl VcpuState {
    /// Instruction pointer.
    pub(crate) fn rip(&self) -> u64 {
        self.regs.rip
    }

    /// `rdx` (the port of an `out dx, al`).
    pub(crate) fn rdx(&self) -> u64 {
        self.regs.rdx
    }

    /// Moves the instruction pointer (see `Core::snapshot` on why).
    pub(crate) fn set_rip(&mut self, rip: u64) {
        self.regs.rip = rip;
    }
}

static HOST: OnceLock<Result<Host, (i32, &'static str)>> = OnceLock::new();

fn host() -> Result<&'static Host, Error> {
    let host = HOST.get_or_init(|| {
        let kvm = Kvm::new().map_err(|e| (e.errno(), "open /dev/kvm"))?;
        for (cap, name) in [
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::X86MsrFilter, "KVM_CAP_X86_MSR_FILTER"),
            (Cap::Xsave, "KVM_CAP_XSAVE"),
            (Cap::Xcrs, "KVM_CAP_XCRS"),
            (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
            (Cap::Debugregs, "KVM_CAP_DEBUGREGS"),
        ] {
            if !kvm.check_extension(cap) {
                return Err((0, name));
            }
        }
        let mut cpuid =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| (e.errno(), "KVM_GET_SUPPORTED_CPUID"))?;
        hide_virtualisation(&mut cpuid);
        // KVM_SET_XSAVE reads KVM_CAP_XSAVE2 bytes when that exceeds the classic 4 KiB struct;
        // we pass the classic struct, so refuse hosts where that would over-read.
        if kvm.check_extension_int(Cap::Xsave2) > std::mem::size_of::<kvm_xsave>() as i32 {
            return Err((0, "an XSAVE area of at most 4 KiB (KVM_CAP_XSAVE2)"));
        }
        let supported = kvm.get_msr_index_list().map_err(|e| (e.errno(), "KVM_GET_MSR_INDEX_LIST"))?;
        let msrs = SAVED_MSRS.iter().copied().filter(|m| supported.as_slice().contains(m)).collect();
        Ok(Host { kvm, cpuid, msrs })
    });
    match host {
        Ok(h) => Ok(h),
        Err((0, cap)) => Err(Error::MissingCapability { capability: cap }),
        Err((errno, _)) => Err(Error::NoHypervisor { source: std::io::Error::from_raw_os_error(*errno) }),
    }
}

/// Clears VMX and SVM from the CPUID the guest sees, so it cannot try nested virtualisation.
fn hide_virtualisation(cpuid: &mut CpuId) {
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ecx &= !(1 << 5); // VMX
        }
        if e.function == 0x8000_0001 {
            e.ecx &= !(1 << 2); // SVM
        }
    }
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { op, source: std::io::Error::from_raw_os_error(source.errno()) }
}

/// How the guest left KVM_RUN.
#[derive(Debug)]
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
    /// A signal (kill or deadline) interrupted KVM_RUN.
    Interrupted,
    /// Anything else.
    Other(String),
}

/// One sandbox's VM: a memory slot, one vCPU. Drop releases all three file descriptors and the
/// mapping (the fields own them).
#[derive(Debug)]
pub(crate) struct Partition {
    // Field order is drop order: the vCPU goes before the VM it belongs to.
    vcpu: VcpuFd,
    vm: VmFd,
    mem: GuestMemoryMmap,
    /// Pages the host wrote since the last `take_dirty` (KVM's dirty log sees only the guest's).
    host_dirty: Vec<u64>,
    pages: u64,
    /// Dirty pages are re-protected by us (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), not by
    /// KVM_GET_DIRTY_LOG, so pages every call writes can stay writable (see `take_dirty`).
    manual_protect: bool,
    /// Pages left writable and always reported dirty: written in two syncs in a row.
    hot: Vec<u64>,
    /// The guest-dirty bitmap of the previous sync.
    previous: Vec<u64>,
    /// The last exit was an `in` or MMIO access that KVM completes at the next KVM_RUN (writing
    /// registers), which must happen before registers are restored.
    pending_io: bool,
    /// The guest's DS, ES, FS and GS, put on the thread for each entry (see [`selectors`]).
    guest_selectors: Selectors,
}

/// Most pages kept writable per sandbox. Each is copied back by every restore (about 0.2 us)
/// instead of taking a write-protection fault after it (about 3 us on kvm_pvm).
const MAX_HOT_PAGES: u32 = 16;

/// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`; kvm-ioctls has no wrapper for it.
const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xc018_aec0;
const _: () = assert!(std::mem::size_of::<kvm_bindings::kvm_clear_dirty_log>() == 24);

impl Partition {
    /// Creates the VM with `size` bytes of guest memory at address 0: zeroed, or a private
    /// copy-on-write mapping of `shared`.
    pub(crate) fn new(size: u64, shared: Option<&SharedMemory>) -> Result<Partition, Error> {
        let host = host()?;
        let vm = host.kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let len = usize::try_from(size)
            .map_err(|_| Error::InvalidConfig { what: "memory size", detail: format!("{size} bytes") })?;
        let oom = |e: &dyn std::fmt::Display| Error::OutOfMemory { detail: e.to_string() };
        let mem = match shared {
            None => GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)]).map_err(|e| oom(&e))?,
            Some(shared) => {
                if shared.size() != size {
                    return Err(Error::InvalidConfig {
                        what: "memory size",
                        detail: "differs from the template".into(),
                    });
                }
                let region = MmapRegionBuilder::new(len)
                    .with_file_offset(FileOffset::from_arc(Arc::clone(shared.file()), 0))
                    .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                    .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                    .build()
                    .map_err(|e| oom(&e))?;
                let region = GuestRegionMmap::new(region, GuestAddress(0))
                    .ok_or_else(|| oom(&"guest memory region does not fit the address space"))?;
                GuestMemoryMmap::from_regions(vec![region]).map_err(|e| oom(&e))?
            }
        };
        let host_addr =
            mem.get_host_address(GuestAddress(0)).map_err(|e| Error::OutOfMemory { detail: e.to_string() })?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr: 0,
            memory_size: size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: `host_addr` is the start of a live `size`-byte mapping owned by `mem`, which
        // this `Partition` owns and drops only after `vm` (field order), so the guest never
        // sees freed memory; slot 0 is not used by anything else in this VM.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        // Deny every MSR access that reaches KVM. The one explicit range is required (KVM refuses
        // a deny-all filter without ranges) and denies MSR 0 too.
        let deny = [0u8; 1];
        let range = MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: 0,
            msr_count: 1,
            bitmap: &deny,
        };
        vm.set_msr_filter(MsrFilterDefaultAction::DENY, &[range]).map_err(kvm_err("KVM_X86_SET_MSR_FILTER"))?;
        let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(&host.cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        // Every exit reports regs and sregs in the kvm_run page: faults and restores read them
        // there instead of paying an ioctl each.
        vcpu.set_sync_valid_reg(SyncReg::Register);
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        let pages = size / PAGE_SIZE;
        let manual_protect = vm.check_extension_raw(libc::c_ulong::from(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)) & 1 != 0
            && vm
                .enable_cap(&kvm_enable_cap {
                    cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                    args: [u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0, 0, 0],
                    ..Default::default()
                })
                .is_ok();
        let words = pages.div_ceil(64) as usize;
        Ok(Partition {
            vcpu,
            vm,
            mem,
            host_dirty: vec![0; words],
            pages,
            manual_protect,
            hot: vec![0; words],
            previous: vec![0; words],
            pending_io: false,
            guest_selectors: Selectors::NULL,
        })
    }

    /// Copies `bytes` into guest memory at `addr` and remembers the pages as dirty.
    pub(crate) fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        self.write_untracked(addr, bytes)?;
        if let Some(last) = (addr + bytes.len() as u64).checked_sub(1).filter(|_| !bytes.is_empty()) {
            for page in addr / PAGE_SIZE..=last / PAGE_SIZE {
                if let Some(word) = self.host_dirty.get_mut((page / 64) as usize) {
                    *word |= 1 << (page % 64);
                }
            }
        }
        Ok(())
    }

    /// Copies `bytes` into guest memory without marking pages dirty (restore writes back what a
    /// snapshot holds, so the pages end up clean with respect to it).
    pub(crate) fn write_untracked(&self, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        self.mem.write_slice(bytes, GuestAddress(addr)).map_err(|e| Error::GuestMemory { addr, detail: e.to_string() })
    }

    /// Number of 4 KiB pages of guest memory.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    /// The pages written since the last call, by the guest (KVM's dirty log) or by the host,
    /// as a bitmap of 64-page words; the guest's pages are write-protected again so the next
    /// writes are seen.
    ///
    /// With manual protection, pages the guest wrote in two syncs in a row (its stack top, the
    /// output buffer, the heap it always touches) become *hot*: we never re-protect them, so
    /// KVM reports them dirty at every sync and the next call writes them without a fault.
    pub(crate) fn take_dirty(&mut self) -> Result<Vec<u64>, Error> {
        let size = usize::try_from(self.pages * PAGE_SIZE).unwrap_or(usize::MAX);
        let mut dirty = self.vm.get_dirty_log(0, size).map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
        dirty.resize(self.host_dirty.len(), 0);
        if self.manual_protect {
            self.reprotect(&dirty)?;
        }
        for (d, h) in dirty.iter_mut().zip(self.host_dirty.iter_mut()) {
            *d |= std::mem::take(h);
        }
        Ok(dirty)
    }

    /// Grows the hot set and re-protects the other dirty pages (manual protection only).
    fn reprotect(&mut self, dirty: &[u64]) -> Result<(), Error> {
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
            return Err(Error::Kvm { op: "KVM_CLEAR_DIRTY_LOG", source: std::io::Error::last_os_error() });
        }
        Ok(())
    }

    /// Lets KVM finish an `in` or MMIO read left pending by the last exit, without entering the
    /// guest (KVM completes pending I/O before it honours `immediate_exit`). Otherwise that
    /// completion would run at the next KVM_RUN and overwrite registers we restore.
    fn settle(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.pending_io) {
            self.warm_up()?;
        }
        Ok(())
    }

    /// Captures every piece of guest-changeable vCPU state.
    pub(crate) fn save_vcpu(&mut self) -> Result<VcpuState, Error> {
        let host = host()?;
        let mut msrs = Msrs::from_entries(
            &host.msrs.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect::<Vec<_>>(),
        )
        .map_err(|_| Error::Kvm { op: "KVM_GET_MSRS", source: std::io::Error::from_raw_os_error(libc::E2BIG) })?;
        let n = self.vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        // Registers a fast restore left in the kvm_run page are not applied until the next
        // KVM_RUN, so KVM_GET_REGS would miss them: take those from the page.
        let pending = self.vcpu.get_kvm_run().kvm_dirty_regs;
        let sync = self.vcpu.sync_regs();
        let regs = if pending & u64::from(KVM_SYNC_X86_REGS) != 0 {
            sync.regs
        } else {
            self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?
        };
        let sregs = if pending & u64::from(KVM_SYNC_X86_SREGS) != 0 {
            sync.sregs
        } else {
            self.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?
        };
        Ok(VcpuState {
            regs,
            sregs,
            xsave: Box::new(self.vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?),
            xcrs: self.vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?,
            debugregs: self.vcpu.get_debug_regs().map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
            msrs: msrs.as_slice().get(..n).unwrap_or_default().to_vec(),
            selectors: self.guest_selectors,
        })
    }

    /// Puts the vCPU back into `state` after a call that ended cleanly at CPL3.
    ///
    /// Such a call executed no instruction that can change debug registers, XCR0 or MSRs (at
    /// CPL3 each of them raises #GP, which would have ended the call as a fault), so only
    /// registers, special registers and XSAVE state can differ. Registers travel in the kvm_run
    /// page and are applied by the next KVM_RUN (no ioctl); special registers only when they
    /// differ (setting them resets KVM's MMU context, costly under shadow paging); XSAVE costs
    /// one ioctl.
    pub(crate) fn restore_vcpu_fast(&mut self, state: &VcpuState) -> Result<(), Error> {
        self.settle()?;
        self.guest_selectors = state.selectors;
        self.vcpu.sync_regs_mut().regs = state.regs;
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
        if self.vcpu.sync_regs().sregs != state.sregs {
            self.vcpu.sync_regs_mut().sregs = state.sregs;
            self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
        // SAFETY: as in `restore_vcpu`.
        unsafe { self.vcpu.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))
    }

    /// Puts the vCPU back into `state`, every piece of it, with one ioctl each.
    pub(crate) fn restore_vcpu(&mut self, state: &VcpuState) -> Result<(), Error> {
        self.settle()?;
        self.guest_selectors = state.selectors;
        // Values pending in the kvm_run page would override the ioctls at the next entry.
        self.vcpu.clear_sync_dirty_reg(SyncReg::Register);
        self.vcpu.clear_sync_dirty_reg(SyncReg::SystemRegister);
        self.vcpu.set_sregs(&state.sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        self.vcpu.set_regs(&state.regs).map_err(kvm_err("KVM_SET_REGS"))?;
        // SAFETY: `host()` refused to run on hosts whose KVM_CAP_XSAVE2 size exceeds the 4 KiB
        // `kvm_xsave` we pass, and glint enables no dynamic XSTATE features, so KVM reads only
        // the struct we own.
        unsafe { self.vcpu.set_xsave(&state.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        self.vcpu.set_xcrs(&state.xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
        self.vcpu.set_debug_regs(&state.debugregs).map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        let msrs = Msrs::from_entries(&state.msrs)
            .map_err(|_| Error::Kvm { op: "KVM_SET_MSRS", source: std::io::Error::from_raw_os_error(libc::E2BIG) })?;
        let n = self.vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if n != state.msrs.len() {
            return Err(Error::Kvm { op: "KVM_SET_MSRS", source: std::io::Error::from_raw_os_error(libc::EINVAL) });
        }
        // Keep the kvm_run copy truthful for `restore_vcpu_fast`'s comparison.
        let sync = self.vcpu.sync_regs_mut();
        sync.regs = state.regs;
        sync.sregs = state.sregs;
        Ok(())
    }

    /// Copies guest memory at `addr` into `buf`.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.mem.read_slice(buf, GuestAddress(addr)).map_err(|e| Error::GuestMemory { addr, detail: e.to_string() })
    }

    /// Reads a little-endian u64 from guest memory.
    pub(crate) fn read_u64(&self, addr: u64) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Puts the vCPU in 64-bit mode at CPL3, about to run `entry` with the initial stack and the
    /// boot-info address in `rdi`.
    pub(crate) fn set_entry_state(&self, layout: &Layout, entry: u64) -> Result<(), Error> {
        let mut sregs: kvm_sregs = self.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let data = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: USER_DS,
            type_: 3,
            present: 1,
            dpl: 3,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            ..Default::default()
        };
        sregs.cs = kvm_segment { selector: USER_CS, type_: 11, db: 0, l: 1, ..data };
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: TSS_ADDR,
            limit: TSS_LIMIT,
            selector: TSS_SEL,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            ..Default::default()
        };
        sregs.ldt = kvm_segment { selector: 0, type_: 2, present: 1, unusable: 1, ..Default::default() };
        sregs.gdt.base = GDT_ADDR;
        sregs.gdt.limit = GDT_LIMIT;
        sregs.idt.base = IDT_ADDR;
        sregs.idt.limit = IDT_LIMIT;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
        self.vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        let regs =
            kvm_regs { rip: entry, rsp: layout.stack_top(), rdi: BOOT_INFO_ADDR, rflags: 0x2, ..Default::default() };
        self.vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        Ok(())
    }

    /// Enters the guest until it exits.
    pub(crate) fn run(&mut self) -> Result<Exit, Error> {
        let exit = self.run_once();
        self.pending_io = matches!(exit, Ok(Exit::In { .. } | Exit::Mmio { .. }));
        exit
    }

    fn run_once(&mut self) -> Result<Exit, Error> {
        // The thread's own selectors go back after the exit, the guest's are kept for the next
        // entry: under kvm_pvm the guest runs on them (see `selectors`).
        let host = Selectors::current();
        if host != self.guest_selectors {
            self.guest_selectors.load(host);
        }
        let run = self.vcpu.run();
        let after = Selectors::current();
        self.guest_selectors = after;
        if after != host {
            host.load(after);
        }
        match run {
            Ok(VcpuExit::IoOut(port, data)) => {
                Ok(Exit::Out { port, size: data.len(), value: data.first().copied().unwrap_or(0) })
            }
            Ok(VcpuExit::IoIn(port, _)) => Ok(Exit::In { port }),
            Ok(VcpuExit::MmioRead(addr, _)) => Ok(Exit::Mmio { addr, write: false }),
            Ok(VcpuExit::MmioWrite(addr, _)) => Ok(Exit::Mmio { addr, write: true }),
            Ok(VcpuExit::Hlt) => Ok(Exit::Hlt),
            Ok(VcpuExit::Shutdown) => Ok(Exit::Shutdown),
            Ok(VcpuExit::InternalError) => Ok(Exit::InternalError),
            Ok(VcpuExit::FailEntry(reason, _)) => Ok(Exit::FailEntry(reason)),
            Ok(VcpuExit::Intr) => Ok(Exit::Interrupted),
            Ok(other) => Ok(Exit::Other(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(Exit::Interrupted),
            Err(e) => Err(kvm_err("KVM_RUN")(e)),
        }
    }

    /// Special registers as of the last exit (from the kvm_run page, no ioctl).
    pub(crate) fn sregs(&self) -> kvm_sregs {
        self.vcpu.sync_regs().sregs
    }

    /// The `immediate_exit` byte of this vCPU's `kvm_run` page, for the interrupt machinery.
    pub(crate) fn immediate_exit_ptr(&mut self) -> *mut u8 {
        std::ptr::addr_of_mut!(self.vcpu.get_kvm_run().immediate_exit)
    }

    /// Runs KVM_RUN once without entering the guest, so KVM's one-time setup of the vCPU
    /// (a kernel thread on kvm_pvm) happens now, off the request path.
    pub(crate) fn warm_up(&mut self) -> Result<(), Error> {
        self.vcpu.set_kvm_immediate_exit(1);
        let r = self.vcpu.run().map(|_| ());
        self.vcpu.set_kvm_immediate_exit(0);
        match r {
            Err(e) if e.errno() != libc::EINTR => Err(kvm_err("KVM_RUN")(e)),
            _ => Ok(()),
        }
    }

    /// Clears `immediate_exit` after an interrupted run.
    pub(crate) fn clear_immediate_exit(&mut self) {
        self.vcpu.set_kvm_immediate_exit(0);
    }
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
