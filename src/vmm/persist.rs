//! The vCPU state of a snapshot as bytes, for snapshot files, and the checks a state read back
//! from a file must pass before a vCPU is given it.
//!
//! Each KVM structure is stored as its own bytes (the kernel's layout, through zerocopy's views of
//! kvm-bindings' types), preceded by its length so a file from a build whose structures differ is
//! refused instead of misread.

use super::host::host;
use super::selectors::Selectors;
use super::VcpuState;
use crate::mem::layout::{PML4_ADDR, TSS_ADDR};
use crate::mem::x86;
use kvm_bindings::{kvm_debugregs, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcrs, kvm_xsave};
use zerocopy::{FromBytes, IntoBytes};

/// Why bytes are not a vCPU state glint would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateError {
    /// The bytes end early or a length differs from this build's structure.
    Malformed(&'static str),
    /// A value a CPL3 guest glint built could never have, naming it.
    Unsafe(&'static str),
}

fn put<T: IntoBytes + zerocopy::Immutable>(out: &mut Vec<u8>, value: &T) {
    let bytes = value.as_bytes();
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, StateError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn get<T: FromBytes>(&mut self, what: &'static str) -> Result<T, StateError> {
        let len = self.u32(what)? as usize;
        if len != std::mem::size_of::<T>() {
            return Err(StateError::Malformed(what));
        }
        T::read_from_bytes(self.take(len, what)?).map_err(|_| StateError::Malformed(what))
    }
}

impl VcpuState {
    /// The state as bytes (see the module docs).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 << 10);
        put(&mut out, &self.regs);
        put(&mut out, &self.sregs);
        put(&mut out, &*self.xsave);
        put(&mut out, &self.xcrs);
        put(&mut out, &self.debugregs);
        out.extend_from_slice(&(self.msrs.len() as u32).to_le_bytes());
        for m in &self.msrs {
            put(&mut out, m);
        }
        for s in self.selectors.0 {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// Reads a state written by [`to_bytes`](Self::to_bytes) and checks it (see [`check`]).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<VcpuState, StateError> {
        let mut r = Reader(bytes);
        let regs: kvm_regs = r.get("registers")?;
        let sregs: kvm_sregs = r.get("special registers")?;
        let xsave: kvm_xsave = r.get("XSAVE area")?;
        let xcrs: kvm_xcrs = r.get("XCRs")?;
        let debugregs: kvm_debugregs = r.get("debug registers")?;
        let n = r.u32("MSR count")? as usize;
        if n > 64 {
            return Err(StateError::Malformed("MSR count"));
        }
        let msrs = (0..n).map(|_| r.get::<kvm_msr_entry>("MSR")).collect::<Result<Vec<_>, _>>()?;
        let mut selectors = [0u16; 4];
        for s in &mut selectors {
            let b = r.take(2, "selectors")?;
            *s = u16::from_le_bytes([b[0], b[1]]);
        }
        if !r.0.is_empty() {
            return Err(StateError::Malformed("trailing bytes after the vCPU state"));
        }
        let state =
            VcpuState { regs, sregs, xsave: Box::new(xsave), xcrs, debugregs, msrs, selectors: Selectors(selectors) };
        check(&state)?;
        Ok(state)
    }
}

const RFLAGS_IOPL: u64 = 3 << 12;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_IF: u64 = 1 << 9;
const CR0_WP: u64 = 1 << 16;
const EFER_SCE: u64 = 1;
const SYSENTER_CS: u32 = 0x174;
const DR7_ENABLES: u64 = 0xff;

/// Whether `state` is one a glint guest can be in between calls: at CPL3 in 64-bit mode, with
/// IOPL 0 and interrupts off, on glint's page tables, GDT, IDT and TSS, with no way into CPL0
/// but the exception stubs (no `syscall`: EFER.SCE clear; no `sysenter`: SYSENTER_CS null), no
/// armed breakpoint, and only the MSRs glint saves. A snapshot file is checked against this
/// before its state reaches a vCPU, so a crafted file can put no more into a VM than a hostile
/// image can (docs/SECURITY.md, "Snapshot files").
pub(crate) fn check(s: &VcpuState) -> Result<(), StateError> {
    let bad = |what| Err(StateError::Unsafe(what));
    let sr = &s.sregs;
    if sr.cs.dpl != 3 || sr.cs.selector & 3 != 3 || sr.cs.l != 1 || sr.cs.s != 1 || sr.cs.type_ & 0x8 == 0 {
        return bad("code segment (not 64-bit CPL3 code)");
    }
    if sr.ss.dpl != 3 && sr.ss.present == 1 {
        return bad("stack segment (not DPL 3)");
    }
    if s.regs.rflags & (RFLAGS_IOPL | RFLAGS_VM | RFLAGS_IF) != 0 {
        return bad("RFLAGS (IOPL, VM or IF set)");
    }
    if sr.cr3 & !0xfff != PML4_ADDR || sr.cr0 & CR0_WP == 0 || sr.cr0 & x86::ENTRY_CR0 != x86::ENTRY_CR0 {
        return bad("CR0 or CR3 (not glint's paging with write protection)");
    }
    if sr.cr4 & x86::ENTRY_CR4 != x86::ENTRY_CR4 {
        return bad("CR4");
    }
    if sr.efer & EFER_SCE != 0 || sr.efer & x86::ENTRY_EFER != x86::ENTRY_EFER {
        return bad("EFER (syscall enabled, or not long mode)");
    }
    if (sr.gdt.base, sr.gdt.limit) != (x86::GDT_BASE, x86::GDT_LIMIT)
        || (sr.idt.base, sr.idt.limit) != (x86::IDT_BASE, x86::IDT_LIMIT)
    {
        return bad("GDTR or IDTR (not glint's tables)");
    }
    if sr.tr.base != TSS_ADDR || sr.tr.selector != x86::TSS_SEL || sr.tr.limit != x86::TSS_LIMIT {
        return bad("task register (not glint's TSS)");
    }
    if sr.ldt.unusable == 0 && sr.ldt.present == 1 {
        return bad("LDT (glint's guests have none)");
    }
    if s.debugregs.dr7 & DR7_ENABLES != 0 {
        return bad("DR7 (breakpoints armed)");
    }
    let allowed = host().map(|h| h.msrs.clone()).unwrap_or_default();
    for m in &s.msrs {
        if !allowed.contains(&m.index) {
            return bad("MSR list (an MSR glint does not save)");
        }
        if m.index == SYSENTER_CS && m.data != 0 {
            return bad("SYSENTER_CS (sysenter would reach CPL0)");
        }
    }
    Ok(())
}
