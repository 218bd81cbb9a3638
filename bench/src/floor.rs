//! The bare-KVM floor that glint's figures are measured against.
//!
//! [`BareVm`] drives KVM directly through kvm-ioctls, sharing no code with glint's partition:
//! one 2 MiB user page, a GDT, a TSS whose I/O bitmap admits one port, and CPL3 code that is
//! only `out 0x10, al; jmp back` (optionally preceded by one write to each of four pages). Its
//! creation, round trip and dirty-log restore are the cheapest versions KVM allows of glint's
//! cold start, call and restore, so glint's numbers read as ratios to them, measured in the
//! same run on the same noisy machine.
#![allow(unsafe_code, reason = "a raw mapping and a memory slot; each block argues its safety")]

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::io;

const MEM: usize = 2 << 20;
const PAGE: usize = 4096;
const PORT: u16 = 0x10;
/// Pages the dirtying variant writes per round trip.
pub const DIRTIED_PAGES: usize = 4;

/// What can go wrong driving the bare VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FloorError {
    /// A KVM ioctl or a mapping failed.
    #[error("{op} failed")]
    Os {
        /// The ioctl or system call.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bare VM left KVM_RUN some other way than its one `out`.
    #[error("bare VM exited with {0}")]
    UnexpectedExit(String),
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> FloorError {
    move |e| FloorError::Os { op, source: io::Error::from_raw_os_error(e.errno()) }
}

/// The process's `/dev/kvm` handle and supported CPUID, opened once for all floor VMs.
#[derive(Debug)]
pub struct FloorHost {
    kvm: Kvm,
    cpuid: CpuId,
}

impl FloorHost {
    /// Opens `/dev/kvm`.
    ///
    /// # Errors
    /// `/dev/kvm` cannot be opened, or a failing ioctl.
    pub fn new() -> Result<FloorHost, FloorError> {
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let cpuid =
            kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(FloorHost { kvm, cpuid })
    }
}

/// A bare VM stopped at its `out` exit. See the module docs.
#[derive(Debug)]
pub struct BareVm {
    // Field order is drop order: vCPU, then VM, then (in `drop`) the memory.
    vcpu: VcpuFd,
    vm: VmFd,
    mem: *mut u8,
    /// Memory right after the first exit, for the restore floor.
    snapshot: Vec<u8>,
}

// SAFETY: `mem` is a private mapping owned by this value alone; moving the value to another
// thread moves that ownership with it (VcpuFd and VmFd are Send).
unsafe impl Send for BareVm {}

impl Drop for BareVm {
    fn drop(&mut self) {
        // SAFETY: `mem` is the MEM-byte mapping made in `BareVm::new` and owned by `self`; KVM
        // holds its own reference to the pages until the VM fd (dropped right after) closes.
        unsafe { libc::munmap(self.mem.cast(), MEM) };
    }
}

impl BareVm {
    fn put(&self, at: usize, bytes: &[u8]) {
        if at.checked_add(bytes.len()).is_some_and(|end| end <= MEM) {
            // SAFETY: bounds checked; `mem` is a live MEM-byte mapping; the vCPU is stopped.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(at), bytes.len()) };
        }
    }

    /// Creates the VM and runs it to its first exit. With `dirty`, every round trip first writes
    /// one byte to each of [`DIRTIED_PAGES`] pages and the slot logs dirty pages.
    ///
    /// # Errors
    /// A failing ioctl or mapping.
    pub fn new(host: &FloorHost, dirty: bool) -> Result<BareVm, FloorError> {
        let vm = host.kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // SAFETY: a fresh anonymous private mapping with no address hint; checked below.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(FloorError::Os { op: "mmap", source: io::Error::last_os_error() });
        }
        let mem = mem.cast::<u8>();
        let vcpu = match vm.create_vcpu(0) {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: the mapping just made, not yet owned by anything.
                unsafe { libc::munmap(mem.cast(), MEM) };
                return Err(kvm_err("KVM_CREATE_VCPU")(e));
            }
        };
        let mut bare = BareVm { vcpu, vm, mem, snapshot: Vec::new() };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: if dirty { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: `mem` is a live MEM-byte mapping owned by `bare`, unmapped only after the VM fd
        // closes (see `Drop`).
        unsafe { bare.vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        // Page tables: one 2 MiB user page at 0.
        bare.put(0x1000, &(0x2000u64 | 7).to_le_bytes());
        bare.put(0x2000, &(0x3000u64 | 7).to_le_bytes());
        bare.put(0x3000, &0x87u64.to_le_bytes());
        // GDT: null, user data (0x18), user code (0x20), TSS (0x28).
        bare.put(0x4018, &0x00cf_f300_0000_ffffu64.to_le_bytes());
        bare.put(0x4020, &0x00af_fb00_0000_ffffu64.to_le_bytes());
        // TSS at 0x5000: I/O bitmap at 104 admitting only PORT, limit 104 + 32.
        bare.put(0x5000 + 102, &104u16.to_le_bytes());
        let mut bitmap = [0xffu8; 33];
        if let Some(b) = bitmap.get_mut(usize::from(PORT) / 8) {
            *b &= !(1 << (PORT % 8));
        }
        bare.put(0x5000 + 104, &bitmap);
        // 0x6000: out 0x10, al; jmp -4.
        bare.put(0x6000, &[0xe6, PORT as u8, 0xeb, 0xfc]);
        // 0x7000: mov [page], al (88 04 25 disp32) for four pages; out 0x10, al; jmp back.
        let mut code = Vec::new();
        for page in 0..DIRTIED_PAGES as u32 {
            code.extend_from_slice(&[0x88, 0x04, 0x25]);
            code.extend_from_slice(&(0x10_0000 + page * 0x1000).to_le_bytes());
        }
        code.extend_from_slice(&[0xe6, PORT as u8, 0xeb]);
        code.push(0u8.wrapping_sub(code.len() as u8 + 1));
        bare.put(0x7000, &code);

        bare.vcpu.set_cpuid2(&host.cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let mut sregs = bare.vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let data = kvm_segment {
            limit: 0xffff_ffff,
            selector: 0x1b,
            type_: 3,
            present: 1,
            dpl: 3,
            db: 1,
            s: 1,
            g: 1,
            ..Default::default()
        };
        sregs.cs = kvm_segment { selector: 0x23, type_: 11, db: 0, l: 1, ..data };
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr =
            kvm_segment { base: 0x5000, limit: 104 + 32, selector: 0x28, type_: 11, present: 1, ..Default::default() };
        sregs.gdt.base = 0x4000;
        sregs.gdt.limit = 0x37;
        sregs.cr0 = 0x8001_0033;
        sregs.cr3 = 0x1000;
        sregs.cr4 = 0x20;
        sregs.efer = 0x500;
        bare.vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        let rip = if dirty { 0x7000 } else { 0x6000 };
        bare.vcpu
            .set_regs(&kvm_regs { rip, rsp: 0x10_0000, rflags: 2, ..Default::default() })
            .map_err(kvm_err("KVM_SET_REGS"))?;
        bare.round_trip()?;
        if dirty {
            // SAFETY: `mem` is a live MEM-byte mapping; the vCPU is stopped, so nothing writes it.
            bare.snapshot = unsafe { std::slice::from_raw_parts(mem, MEM) }.to_vec();
            bare.vm.get_dirty_log(0, MEM).map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
        }
        Ok(bare)
    }

    /// One entry and exit: the cheapest crossing a CPL3 guest can make.
    ///
    /// # Errors
    /// KVM_RUN failing or the VM exiting any other way.
    pub fn round_trip(&mut self) -> Result<(), FloorError> {
        match self.vcpu.run().map_err(kvm_err("KVM_RUN"))? {
            VcpuExit::IoOut(PORT, _) => Ok(()),
            other => Err(FloorError::UnexpectedExit(format!("{other:?}"))),
        }
    }

    /// The cheapest restore KVM allows: read the dirty log, copy the dirtied pages back.
    /// Returns how many pages it copied.
    ///
    /// # Errors
    /// KVM_GET_DIRTY_LOG failing.
    pub fn restore(&mut self) -> Result<usize, FloorError> {
        let bitmap = self.vm.get_dirty_log(0, MEM).map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
        let mut pages = 0;
        for (w, &bits) in bitmap.iter().enumerate() {
            let mut rest = bits;
            while rest != 0 {
                let at = (w * 64 + rest.trailing_zeros() as usize) * PAGE;
                rest &= rest - 1;
                if let Some(src) = self.snapshot.get(at..at + PAGE) {
                    // SAFETY: `at + PAGE <= MEM` (the snapshot is MEM bytes); `src` is our own
                    // buffer, disjoint from the mapping.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.mem.add(at), PAGE) };
                    pages += 1;
                }
            }
        }
        Ok(pages)
    }
}
