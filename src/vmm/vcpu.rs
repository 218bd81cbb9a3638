//! One KVM vCPU: entering the guest until it exits, and saving and restoring every piece of its
//! state a guest could change.
#![allow(unsafe_code, reason = "KVM_SET_XSAVE and the kvm_run page; each block argues its safety")]

use super::error::{Doing, VmmError};
use super::host::host;
use super::selectors::Selectors;
use super::{Exit, Restore, Vcpu, VcpuState};
use crate::mem::x86::{self, SegmentDesc};
use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};

/// A vCPU of a glint partition.
#[derive(Debug)]
pub(crate) struct KvmVcpu {
    fd: VcpuFd,
    /// The last exit was an `in` or MMIO access that KVM completes at the next KVM_RUN (writing
    /// registers), which must happen before registers are restored.
    pending_io: bool,
    /// The guest's DS, ES, FS and GS, put on the thread for each entry (see `selectors`).
    guest_selectors: Selectors,
}

fn segment(d: &SegmentDesc) -> kvm_segment {
    kvm_segment {
        base: d.base,
        limit: d.limit,
        selector: d.selector,
        type_: d.ty,
        present: u8::from(d.present),
        dpl: d.dpl,
        db: u8::from(d.big),
        s: u8::from(d.code_or_data),
        l: u8::from(d.long),
        g: u8::from(d.granular),
        ..Default::default()
    }
}

impl KvmVcpu {
    /// Takes over a vCPU fd whose CPUID and sync registers are set up.
    pub(crate) fn new(fd: VcpuFd) -> KvmVcpu {
        KvmVcpu { fd, pending_io: false, guest_selectors: Selectors::NULL }
    }

    /// Lets KVM finish an `in` or MMIO read left pending by the last exit, without entering the
    /// guest (KVM completes pending I/O before it honours `immediate_exit`). Otherwise that
    /// completion would run at the next KVM_RUN and overwrite registers we restore.
    fn settle(&mut self) -> Result<(), VmmError> {
        if std::mem::take(&mut self.pending_io) {
            self.warm_up()?;
        }
        Ok(())
    }

    fn run_once(&mut self) -> Result<Exit, VmmError> {
        // The thread's own selectors go back after the exit, the guest's are kept for the next
        // entry: under kvm_pvm the guest runs on them (see `selectors`).
        let host = Selectors::current();
        if host != self.guest_selectors {
            self.guest_selectors.load(host);
        }
        let run = self.fd.run();
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
            Ok(other) => Ok(Exit::Other(exit_name(&other))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(Exit::Interrupted),
            Err(e) => Err(VmmError::ioctl("KVM_RUN", Doing::Running)(e)),
        }
    }
}

/// The name of an exit glint does not expect.
fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Debug(_) => "KVM_EXIT_DEBUG",
        VcpuExit::Exception => "KVM_EXIT_EXCEPTION",
        VcpuExit::Hypercall(_) => "KVM_EXIT_HYPERCALL",
        VcpuExit::IrqWindowOpen => "KVM_EXIT_IRQ_WINDOW_OPEN",
        VcpuExit::SystemEvent(..) => "KVM_EXIT_SYSTEM_EVENT",
        VcpuExit::X86Rdmsr(_) => "KVM_EXIT_X86_RDMSR",
        VcpuExit::X86Wrmsr(_) => "KVM_EXIT_X86_WRMSR",
        _ => "an exit glint does not handle",
    }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<Exit, VmmError> {
        let exit = self.run_once();
        self.pending_io = matches!(exit, Ok(Exit::In { .. } | Exit::Mmio { .. }));
        exit
    }

    fn enter_long_mode(&mut self, rip: u64, rsp: u64, rdi: u64) -> Result<(), VmmError> {
        let mut sregs: kvm_sregs =
            self.fd.get_sregs().map_err(VmmError::ioctl("KVM_GET_SREGS", Doing::CreatingVcpu))?;
        let data = segment(&x86::USER_DATA_SEGMENT);
        sregs.cs = segment(&x86::USER_CODE_SEGMENT);
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr = segment(&x86::TASK_SEGMENT);
        sregs.ldt = kvm_segment { selector: 0, type_: 2, present: 1, unusable: 1, ..Default::default() };
        (sregs.gdt.base, sregs.gdt.limit) = (x86::GDT_BASE, x86::GDT_LIMIT);
        (sregs.idt.base, sregs.idt.limit) = (x86::IDT_BASE, x86::IDT_LIMIT);
        sregs.cr0 = x86::ENTRY_CR0;
        sregs.cr3 = x86::ENTRY_CR3;
        sregs.cr4 = x86::ENTRY_CR4;
        sregs.efer = x86::ENTRY_EFER;
        self.fd.set_sregs(&sregs).map_err(VmmError::ioctl("KVM_SET_SREGS", Doing::CreatingVcpu))?;
        let regs = kvm_regs { rip, rsp, rdi, rflags: x86::ENTRY_RFLAGS, ..Default::default() };
        self.fd.set_regs(&regs).map_err(VmmError::ioctl("KVM_SET_REGS", Doing::CreatingVcpu))
    }

    fn save(&mut self) -> Result<VcpuState, VmmError> {
        let doing = Doing::SavingState;
        let host = host()?;
        let mut msrs = Msrs::from_entries(
            &host.msrs.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect::<Vec<_>>(),
        )
        .map_err(|_| VmmError::ioctl_errno("KVM_GET_MSRS", doing, libc::E2BIG))?;
        let n = self.fd.get_msrs(&mut msrs).map_err(VmmError::ioctl("KVM_GET_MSRS", doing))?;
        // Registers a fast restore left in the kvm_run page are not applied until the next
        // KVM_RUN, so KVM_GET_REGS would miss them: take those from the page.
        let pending = self.fd.get_kvm_run().kvm_dirty_regs;
        let sync = self.fd.sync_regs();
        let regs = if pending & u64::from(KVM_SYNC_X86_REGS) != 0 {
            sync.regs
        } else {
            self.fd.get_regs().map_err(VmmError::ioctl("KVM_GET_REGS", doing))?
        };
        let sregs = if pending & u64::from(KVM_SYNC_X86_SREGS) != 0 {
            sync.sregs
        } else {
            self.fd.get_sregs().map_err(VmmError::ioctl("KVM_GET_SREGS", doing))?
        };
        Ok(VcpuState {
            regs,
            sregs,
            xsave: Box::new(self.fd.get_xsave().map_err(VmmError::ioctl("KVM_GET_XSAVE", doing))?),
            xcrs: self.fd.get_xcrs().map_err(VmmError::ioctl("KVM_GET_XCRS", doing))?,
            debugregs: self.fd.get_debug_regs().map_err(VmmError::ioctl("KVM_GET_DEBUGREGS", doing))?,
            msrs: msrs.as_slice().get(..n).unwrap_or_default().to_vec(),
            selectors: self.guest_selectors,
        })
    }

    fn restore(&mut self, state: &VcpuState, how: Restore) -> Result<(), VmmError> {
        let doing = Doing::RestoringState;
        self.settle()?;
        self.guest_selectors = state.selectors;
        if how == Restore::AfterCleanCall {
            // A clean call executed no instruction that can change debug registers, XCR0 or MSRs
            // (at CPL3 each raises #GP, which would have ended the call as a fault), so only
            // registers, special registers and XSAVE state can differ. Registers travel in the
            // kvm_run page and are applied by the next KVM_RUN (no ioctl); special registers only
            // when they differ (setting them resets KVM's MMU context, costly under shadow
            // paging); XSAVE costs one ioctl.
            self.fd.sync_regs_mut().regs = state.regs;
            self.fd.set_sync_dirty_reg(SyncReg::Register);
            if self.fd.sync_regs().sregs != state.sregs {
                self.fd.sync_regs_mut().sregs = state.sregs;
                self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
            }
            // SAFETY: as below.
            return unsafe { self.fd.set_xsave(&state.xsave) }.map_err(VmmError::ioctl("KVM_SET_XSAVE", doing));
        }
        // Values pending in the kvm_run page would override the ioctls at the next entry.
        self.fd.clear_sync_dirty_reg(SyncReg::Register);
        self.fd.clear_sync_dirty_reg(SyncReg::SystemRegister);
        self.fd.set_sregs(&state.sregs).map_err(VmmError::ioctl("KVM_SET_SREGS", doing))?;
        self.fd.set_regs(&state.regs).map_err(VmmError::ioctl("KVM_SET_REGS", doing))?;
        // SAFETY: `host()` refused to run on hosts whose KVM_CAP_XSAVE2 size exceeds the 4 KiB
        // `kvm_xsave` we pass, and glint enables no dynamic XSTATE features, so KVM reads only the
        // struct we own.
        unsafe { self.fd.set_xsave(&state.xsave) }.map_err(VmmError::ioctl("KVM_SET_XSAVE", doing))?;
        self.fd.set_xcrs(&state.xcrs).map_err(VmmError::ioctl("KVM_SET_XCRS", doing))?;
        self.fd.set_debug_regs(&state.debugregs).map_err(VmmError::ioctl("KVM_SET_DEBUGREGS", doing))?;
        let msrs =
            Msrs::from_entries(&state.msrs).map_err(|_| VmmError::ioctl_errno("KVM_SET_MSRS", doing, libc::E2BIG))?;
        let n = self.fd.set_msrs(&msrs).map_err(VmmError::ioctl("KVM_SET_MSRS", doing))?;
        if n != state.msrs.len() {
            return Err(VmmError::ioctl_errno("KVM_SET_MSRS", doing, libc::EINVAL));
        }
        // Keep the kvm_run copy truthful for the fast path's comparison.
        let sync = self.fd.sync_regs_mut();
        sync.regs = state.regs;
        sync.sregs = state.sregs;
        Ok(())
    }

    fn resume_guest(&mut self, state: &VcpuState) -> Result<(), VmmError> {
        let doing = Doing::RestoringState;
        self.settle()?;
        let mut sregs = state.sregs;
        sregs.cs = segment(&x86::USER_CODE_SEGMENT);
        sregs.ss = segment(&x86::USER_DATA_SEGMENT);
        self.fd.clear_sync_dirty_reg(SyncReg::Register);
        self.fd.clear_sync_dirty_reg(SyncReg::SystemRegister);
        self.fd.set_sregs(&sregs).map_err(VmmError::ioctl("KVM_SET_SREGS", doing))?;
        self.fd.set_regs(&state.regs).map_err(VmmError::ioctl("KVM_SET_REGS", doing))?;
        // SAFETY: as in `restore`.
        unsafe { self.fd.set_xsave(&state.xsave) }.map_err(VmmError::ioctl("KVM_SET_XSAVE", doing))?;
        let sync = self.fd.sync_regs_mut();
        sync.regs = state.regs;
        sync.sregs = sregs;
        Ok(())
    }

    fn fault_address(&self) -> u64 {
        self.fd.sync_regs().sregs.cr2
    }

    fn immediate_exit(&mut self) -> *mut u8 {
        std::ptr::addr_of_mut!(self.fd.get_kvm_run().immediate_exit)
    }

    fn clear_immediate_exit(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
    }

    fn warm_up(&mut self) -> Result<(), VmmError> {
        self.fd.set_kvm_immediate_exit(1);
        let r = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match r {
            Err(e) if e.errno() != libc::EINTR => Err(VmmError::ioctl("KVM_RUN", Doing::Running)(e)),
            _ => Ok(()),
        }
    }
}
