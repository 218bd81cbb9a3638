//! Everything that speaks KVM: the partition (VM, vCPU, memory slot), the run loop's exits, and
//! the signal-based interrupt of a running vCPU.
#![allow(unsafe_code, reason = "ioctls and the kvm_run page; each block argues its safety")]

pub(crate) mod interrupt;

use crate::mem::layout::{Layout, GDT_ADDR, IDT_ADDR, PML4_ADDR, TSS_ADDR};
use crate::mem::x86::{GDT_LIMIT, IDT_LIMIT, TSS_LIMIT, TSS_SEL, USER_CS, USER_DS};
use crate::Error;
use glint_abi::layout::BOOT_INFO_ADDR;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use std::sync::OnceLock;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The process-wide `/dev/kvm` handle and what we need from it, opened once.
struct Host {
    kvm: Kvm,
    cpuid: CpuId,
}

static HOST: OnceLock<Result<Host, (i32, &'static str)>> = OnceLock::new();

fn host() -> Result<&'static Host, Error> {
    let host = HOST.get_or_init(|| {
        let kvm = Kvm::new().map_err(|e| (e.errno(), "open /dev/kvm"))?;
        for (cap, name) in [
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err((0, name));
            }
        }
        let mut cpuid =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| (e.errno(), "KVM_GET_SUPPORTED_CPUID"))?;
        hide_virtualisation(&mut cpuid);
        Ok(Host { kvm, cpuid })
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
    _vm: VmFd,
    mem: GuestMemoryMmap,
}

impl Partition {
    /// Creates the VM with `size` bytes of zeroed guest memory at address 0.
    pub(crate) fn new(size: u64) -> Result<Partition, Error> {
        let host = host()?;
        let vm = host.kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let len = usize::try_from(size)
            .map_err(|_| Error::InvalidConfig { what: "memory size", detail: format!("{size} bytes") })?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)])
            .map_err(|e| Error::OutOfMemory { detail: e.to_string() })?;
        let host_addr =
            mem.get_host_address(GuestAddress(0)).map_err(|e| Error::OutOfMemory { detail: e.to_string() })?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size,
            userspace_addr: host_addr as u64,
        };
        // SAFETY: `host_addr` is the start of a live `size`-byte mapping owned by `mem`, which
        // this `Partition` owns and drops only after `vm` (field order), so the guest never
        // sees freed memory; slot 0 is not used by anything else in this VM.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(&host.cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        Ok(Partition { vcpu, _vm: vm, mem })
    }

    /// Copies `bytes` into guest memory at `addr`.
    pub(crate) fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), Error> {
        self.mem.write_slice(bytes, GuestAddress(addr)).map_err(|e| Error::GuestMemory { addr, detail: e.to_string() })
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
        match self.vcpu.run() {
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

    /// Special registers (fault path only: one ioctl).
    pub(crate) fn sregs(&self) -> Result<kvm_sregs, Error> {
        self.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))
    }

    /// The `immediate_exit` byte of this vCPU's `kvm_run` page, for the interrupt machinery.
    pub(crate) fn immediate_exit_ptr(&mut self) -> *mut u8 {
        std::ptr::addr_of_mut!(self.vcpu.get_kvm_run().immediate_exit)
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
