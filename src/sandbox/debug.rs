//! The run loop's debugging hooks: a core file when the guest faults, and the stops of a gdb
//! session (feature `gdb`). The file format and the protocol live in `crate::debug`; this file
//! turns the vCPU and the memory into what they need, and back.
//!
//! At an exception the vCPU sits in glint's stub at CPL0, so the guest's registers are the
//! vCPU's except what the CPU and the stub changed: `rip`, `rsp`, `rflags`, `cs` and `ss` come
//! from the exception frame on the fault stack, `rax` from where the stub saved it. Resuming the
//! guest after a breakpoint or a step does what an `iretq` would (`Vcpu::resume_guest`).

use super::core::Core;
use crate::debug::core::{write_core_file, CoreDump, CoreDumpError};
use crate::debug::{dump_priority, guest_regions, FpuRegs, GuestRegs, ProgramInfo, FXSAVE_SIZE};
use crate::error::GuestFault;
use crate::mem::x86::{ExceptionFrame, USER_CS, USER_DS};
use crate::vmm::{GuestMemory, Vcpu, VcpuState};
use crate::Error;
use kvm_bindings::{kvm_regs, kvm_xsave};
use std::path::PathBuf;

/// The guest's view of `state`'s registers, for a stop where it runs (not in a stub).
fn live_view(state: &VcpuState) -> (GuestRegs, FpuRegs) {
    let r = &state.regs;
    let [ds, es, fs, gs] = state.selectors.0.map(u64::from);
    let regs = GuestRegs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rbp: r.rbp,
        rsp: r.rsp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        ds,
        es,
        fs,
        gs,
        fs_base: state.sregs.fs.base,
        gs_base: state.sregs.gs.base,
    };
    (regs, FpuRegs::from_fxsave(&fxsave(&state.xsave)))
}

/// The general registers of `g`, for the vCPU.
#[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb hooks use it"))]
fn kvm_regs_of(g: &GuestRegs) -> kvm_regs {
    kvm_regs {
        rax: g.rax,
        rbx: g.rbx,
        rcx: g.rcx,
        rdx: g.rdx,
        rsi: g.rsi,
        rdi: g.rdi,
        rsp: g.rsp,
        rbp: g.rbp,
        r8: g.r8,
        r9: g.r9,
        r10: g.r10,
        r11: g.r11,
        r12: g.r12,
        r13: g.r13,
        r14: g.r14,
        r15: g.r15,
        rip: g.rip,
        rflags: g.rflags,
    }
}

/// The legacy (FXSAVE) region at the start of an XSAVE area.
fn fxsave(x: &kvm_xsave) -> [u8; FXSAVE_SIZE] {
    let mut b = [0u8; FXSAVE_SIZE];
    for (chunk, word) in b.chunks_exact_mut(4).zip(&x.region) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    b
}

#[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb hooks use it"))]
fn set_fxsave(x: &mut kvm_xsave, fpu: &FpuRegs) {
    let mut b = fxsave(x);
    fpu.write_fxsave(&mut b);
    for (word, chunk) in x.region.iter_mut().zip(b.chunks_exact(4)) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

impl<T: 'static, V: Vcpu, M: GuestMemory> Core<T, V, M> {
    /// The vCPU's state and the guest's registers as they were when it raised `vector`.
    fn faulted_guest(&mut self, vector: u8) -> Result<(VcpuState, GuestRegs, FpuRegs), Error> {
        let state = self.vcpu.save()?;
        let frame = self.exception_frame(vector)?;
        let mut rax = [0u8; 8];
        self.memory.read(ExceptionFrame::saved_rax_address(vector), &mut rax)?;
        let (mut regs, fpu) = live_view(&state);
        regs.rax = u64::from_le_bytes(rax);
        (regs.rip, regs.rsp, regs.rflags, regs.cs, regs.ss) = (frame.rip, frame.rsp, frame.rflags, frame.cs, frame.ss);
        Ok((state, regs, fpu))
    }

    /// Writes the core file of `fault` (exception `vector`, raised during `function`) if this
    /// sandbox writes them, and returns its path. A dump that cannot be written is logged, not an
    /// error: the fault is what the caller hears about.
    pub(super) fn dump_core(&mut self, vector: u8, fault: &GuestFault, function: &str) -> Option<PathBuf> {
        let config = self.config.core_dumps.clone()?;
        let (_, regs, fpu) = match self.faulted_guest(vector) {
            Ok(guest) => guest,
            Err(error) => {
                tracing::warn!(target: "glint::core_dump", %error, "no core dump: the guest's state cannot be read");
                return None;
            }
        };
        let mut regions = guest_regions(&self.layout, &self.image);
        regions.sort_by_key(|r| dump_priority(&self.layout, r));
        let dump = CoreDump {
            regs,
            fpu: Some(fpu),
            vector,
            error_code: fault.error_code,
            fault_addr: fault.address,
            program: self.image.file_name().unwrap_or("guest"),
            args: function,
            program_info: ProgramInfo::of(&self.image),
            regions,
        };
        let memory = &self.memory;
        let written = write_core_file(&config.dir, &config.limits, &dump, &mut |addr, buf| Ok(memory.read(addr, buf)?));
        match written {
            Ok((path, summary)) => {
                tracing::warn!(
                    target: "glint::core_dump",
                    path = %path.display(),
                    bytes = summary.bytes,
                    omitted_regions = summary.omitted.len(),
                    "guest fault: core dumped"
                );
                Some(path)
            }
            Err(error @ CoreDumpError::LimitReached { .. }) => {
                tracing::debug!(target: "glint::core_dump", %error, "guest fault: no core dump");
                None
            }
            Err(error) => {
                tracing::warn!(target: "glint::core_dump", %error, "guest fault: no core dump");
                None
            }
        }
    }
}

#[cfg(feature = "gdb")]
pub(crate) use gdb::Debugger;

#[cfg(feature = "gdb")]
mod gdb {
    use super::*;
    use crate::debug::gdb::{DebugTarget, GdbSession, Outcome, Resume, Stop};
    use crate::debug::Signal;
    use crate::func::host::BoxError;

    /// RFLAGS.TF: a #DB after the next instruction.
    const TRAP_FLAG: u64 = 1 << 8;

    /// A gdb session attached to a sandbox.
    #[derive(Debug)]
    pub(crate) struct Debugger {
        session: GdbSession,
        /// The guest has not run yet: stop before its first instruction.
        entry_pending: bool,
        /// The guest was resumed for one instruction (RFLAGS.TF set by us).
        stepping: bool,
    }

    impl Debugger {
        pub(crate) fn new(session: GdbSession) -> Debugger {
            Debugger { session, entry_pending: true, stepping: false }
        }
    }

    /// The stopped guest, as the session reads and changes it.
    struct Stopped<'a, M> {
        memory: &'a mut M,
        regs: GuestRegs,
        fpu: FpuRegs,
    }

    impl<M: GuestMemory> DebugTarget for Stopped<'_, M> {
        fn regs(&mut self) -> Result<(GuestRegs, FpuRegs), BoxError> {
            Ok((self.regs, self.fpu))
        }

        fn set_regs(&mut self, regs: &GuestRegs, fpu: &FpuRegs) -> Result<(), BoxError> {
            (self.regs, self.fpu) = (*regs, *fpu);
            Ok(())
        }

        fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            Ok(self.memory.read(addr, buf)?)
        }

        fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), BoxError> {
            Ok(self.memory.write(addr, bytes)?)
        }
    }

    /// What a stop decided.
    struct Decision {
        resume: Resume,
        /// The vCPU state to resume with (gdb's register changes applied, TF for a step).
        state: VcpuState,
        /// The stop was the #DB of a step we asked for.
        stepped: bool,
    }

    impl<T: 'static, V: Vcpu, M: GuestMemory> Core<T, V, M> {
        /// Attaches a connected session: the guest stops before its first instruction.
        pub(in crate::sandbox) fn attach_debugger(&mut self, session: GdbSession) {
            self.debugger = Some(Box::new(Debugger::new(session)));
        }

        /// Whether gdb is attached (and the run loop must report stops to it).
        pub(in crate::sandbox) fn debugging(&self) -> bool {
            self.debugger.as_ref().is_some_and(|d| d.session.is_attached())
        }

        /// Reports `stop` to gdb, serves it until it resumes the guest, and works out the vCPU
        /// state to resume with.
        fn debug_stop(&mut self, stop: Stop) -> Result<Decision, Error> {
            let (mut state, mut regs, fpu) = match stop {
                Stop::Exception { vector } => self.faulted_guest(vector)?,
                Stop::Entry | Stop::Interrupted => {
                    let state = self.vcpu.save()?;
                    let (regs, fpu) = live_view(&state);
                    (state, regs, fpu)
                }
            };
            let Some(debugger) = self.debugger.as_mut() else {
                return Ok(Decision { resume: Resume::Detach, state, stepped: false });
            };
            let stepped = std::mem::take(&mut debugger.stepping);
            if stepped {
                regs.rflags &= !TRAP_FLAG; // ours, not the guest's
            }
            let mut target = Stopped { memory: &mut self.memory, regs, fpu };
            let resume = debugger.session.stopped(&mut target, stop);
            let (regs, fpu) = (target.regs, target.fpu);
            debugger.stepping = resume == Resume::Step;
            state.regs = kvm_regs_of(&regs);
            if debugger.stepping {
                state.regs.rflags |= TRAP_FLAG;
            }
            set_fxsave(&mut state.xsave, &fpu);
            Ok(Decision { resume, state, stepped })
        }

        /// Before the guest's first instruction: let gdb look and set breakpoints.
        pub(in crate::sandbox) fn debug_entry(&mut self) -> Result<(), Error> {
            let Some(debugger) = self.debugger.as_mut() else { return Ok(()) };
            if !std::mem::take(&mut debugger.entry_pending) || !debugger.session.is_attached() {
                return Ok(());
            }
            self.resume_after(Stop::Entry)
        }

        /// gdb interrupted the running guest (Ctrl-C).
        pub(in crate::sandbox) fn debug_pause(&mut self) -> Result<(), Error> {
            if !self.debugging() {
                return Ok(());
            }
            self.resume_after(Stop::Interrupted)
        }

        fn resume_after(&mut self, stop: Stop) -> Result<(), Error> {
            let d = self.debug_stop(stop)?;
            if d.resume == Resume::Kill {
                return Err(Error::Cancelled);
            }
            self.vcpu.resume_guest(&d.state)?;
            Ok(())
        }

        /// The guest raised `vector` while gdb is attached. `Ok(true)`: gdb handled it and the
        /// guest goes on; `Ok(false)`: it is a fault after all (reported to gdb, which heard the
        /// program end).
        pub(in crate::sandbox) fn debug_exception(&mut self, vector: u8) -> Result<bool, Error> {
            if !self.debugging() {
                return Ok(false);
            }
            let d = self.debug_stop(Stop::Exception { vector })?;
            let ours = match (vector, d.resume) {
                (_, Resume::Kill) => return Err(Error::Cancelled),
                (1 | 3, Resume::Continue | Resume::Step) => true,
                // gdb left: a breakpoint or step of its own is over; the guest's own int3 or
                // trap flag is a fault, as it would be undebugged.
                (3, Resume::Detach) => self.debugger.as_ref().is_some_and(|g| g.session.stopped_at_breakpoint()),
                (1, Resume::Detach) => d.stepped,
                _ => false,
            };
            if ours {
                self.vcpu.resume_guest(&d.state)?;
                return Ok(true);
            }
            self.debug_end(Signal::for_vector(vector));
            Ok(false)
        }

        /// The debugged program ended (a fault, or the call failed otherwise): tell gdb.
        pub(in crate::sandbox) fn debug_end(&mut self, signal: Signal) {
            let Some(debugger) = self.debugger.as_mut() else { return };
            let mut target = Stopped { memory: &mut self.memory, regs: GuestRegs::default(), fpu: FpuRegs::default() };
            debugger.session.finished(Some(&mut target), Outcome::Terminated(signal));
        }
    }

    impl<T, V: Vcpu, M: GuestMemory> Core<T, V, M> {
        /// The original bytes where breakpoints are, for a snapshot of `buf` at `addr`.
        pub(in crate::sandbox) fn debug_mask(&self, addr: u64, buf: &mut [u8]) {
            if let Some(d) = &self.debugger {
                d.session.original_bytes(addr, buf);
            }
        }

        /// Memory was restored from a snapshot: put the breakpoints back.
        pub(in crate::sandbox) fn debug_after_restore(&mut self) {
            let Some(debugger) = self.debugger.as_mut() else { return };
            if debugger.session.is_attached() {
                let mut target =
                    Stopped { memory: &mut self.memory, regs: GuestRegs::default(), fpu: FpuRegs::default() };
                debugger.session.reinsert_breakpoints(&mut target);
            }
        }
    }
}

/// Without the `gdb` feature there is never a debugger: the hooks do nothing.
#[cfg(not(feature = "gdb"))]
impl<T: 'static, V: Vcpu, M: GuestMemory> Core<T, V, M> {
    pub(super) fn debugging(&self) -> bool {
        false
    }

    pub(super) fn debug_entry(&mut self) -> Result<(), Error> {
        Ok(())
    }

    pub(super) fn debug_pause(&mut self) -> Result<(), Error> {
        Ok(())
    }

    pub(super) fn debug_exception(&mut self, _vector: u8) -> Result<bool, Error> {
        Ok(false)
    }

    pub(super) fn debug_end(&mut self, _signal: crate::debug::Signal) {}
}

#[cfg(not(feature = "gdb"))]
impl<T, V: Vcpu, M: GuestMemory> Core<T, V, M> {
    pub(super) fn debug_mask(&self, _addr: u64, _buf: &mut [u8]) {}

    pub(super) fn debug_after_restore(&mut self) {}
}
