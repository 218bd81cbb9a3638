//! The process-wide `/dev/kvm` handle and what glint needs from it.
//!
//! Probed on first use and cached once it succeeds. A failure is not cached: one EMFILE or ENOMEM
//! at the first sandbox must not disable glint for the life of the process.

use super::error::{Doing, VmmError};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};
use std::sync::OnceLock;

/// `/dev/kvm` and the facts about it every VM needs.
pub(crate) struct Host {
    pub(crate) kvm: Kvm,
    /// The CPUID table every vCPU gets (VMX and SVM hidden).
    pub(crate) cpuid: CpuId,
    /// The MSRs of [`SAVED_MSRS`] this KVM supports.
    pub(crate) msrs: Vec<u32>,
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is offered.
    pub(crate) manual_dirty_protect: bool,
    /// KVM_CAP_X86_MSR_FILTER is offered (needed only for `MsrFilter::DenyAll`).
    pub(crate) msr_filter: bool,
}

/// MSRs saved in snapshots and reset by restore. A CPL3 guest cannot write any MSR (`wrmsr`
/// faults before any VM exit, see docs/SECURITY.md), so this is defence in depth:
/// SYSENTER_CS/ESP/EIP, PAT, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX.
const SAVED_MSRS: [u32; 10] =
    [0x174, 0x175, 0x176, 0x277, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0102, 0xc000_0103];

/// Capabilities glint cannot work without.
const REQUIRED: [(Cap, &str); 7] = [
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::Xsave, "KVM_CAP_XSAVE"),
    (Cap::Xcrs, "KVM_CAP_XCRS"),
    (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
    (Cap::Debugregs, "KVM_CAP_DEBUGREGS"),
];

static HOST: OnceLock<Host> = OnceLock::new();

/// The host, probed now if no earlier probe succeeded.
pub(crate) fn host() -> Result<&'static Host, VmmError> {
    if let Some(h) = HOST.get() {
        return Ok(h);
    }
    let probed = probe()?;
    // Two threads may probe at once; the first to finish wins and the other's handle is closed.
    Ok(HOST.get_or_init(|| probed))
}

fn probe() -> Result<Host, VmmError> {
    let kvm = Kvm::new()
        .map_err(|e| VmmError::NoKvm { source: std::sync::Arc::new(std::io::Error::from_raw_os_error(e.errno())) })?;
    if let Some(&(_, capability)) = REQUIRED.iter().find(|(cap, _)| !kvm.check_extension(*cap)) {
        return Err(VmmError::MissingCapability { capability });
    }
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::ioctl("KVM_GET_SUPPORTED_CPUID", Doing::Probing))?;
    hide_virtualisation(&mut cpuid);
    // KVM_SET_XSAVE reads KVM_CAP_XSAVE2 bytes when that exceeds the classic 4 KiB struct; we pass
    // the classic struct, so refuse hosts where that would over-read.
    if kvm.check_extension_int(Cap::Xsave2) > std::mem::size_of::<kvm_bindings::kvm_xsave>() as i32 {
        return Err(VmmError::MissingCapability { capability: "an XSAVE area of at most 4 KiB (KVM_CAP_XSAVE2)" });
    }
    let supported = kvm.get_msr_index_list().map_err(VmmError::ioctl("KVM_GET_MSR_INDEX_LIST", Doing::Probing))?;
    let msrs = SAVED_MSRS.iter().copied().filter(|m| supported.as_slice().contains(m)).collect();
    let manual_dirty_protect =
        kvm.check_extension_raw(libc::c_ulong::from(kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)) & 1 != 0;
    let msr_filter = kvm.check_extension(Cap::X86MsrFilter);
    Ok(Host { kvm, cpuid, msrs, manual_dirty_protect, msr_filter })
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
