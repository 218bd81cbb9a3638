//! B.1 Guest CPU behaviour: rows 1-17.

use crate::common::hostile::*;
use crate::common::testguest;
use glint::{Error, FaultKind, Limit, Limits, LogOverflow, Message, ProtocolError, Sandbox, Value, ValueType};
use glint_abi::layout::{BOOT_INFO_ADDR, IMAGE_BASE, MAX_MEMORY, PAGE_SIZE};
use glint_abi::port;
use glint_abi::wire::DecodeError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self};
use std::time::{Duration, Instant};

#[test]
fn row_01_infinite_loop_times_out_and_is_killable() {
    require_kvm!();
    let mut sb = sandbox();
    let timeout = Duration::from_millis(200);
    sb.set_call_timeout(Some(timeout));
    let (err, elapsed) = hostile(&mut sb, |sb| {
        let start = Instant::now();
        let err = sb.call("spin", &[]).unwrap_err();
        assert!(sb.is_poisoned());
        (err, start.elapsed())
    });
    assert!(matches!(err, Error::Timeout(d) if d == timeout), "{err}");
    assert!(elapsed >= timeout && elapsed < Duration::from_secs(10), "{elapsed:?}");

    // kill() from another thread, with no deadline near.
    sb.set_call_timeout(Some(PATIENCE));
    let (err, latency) = hostile(&mut sb, |sb| {
        let handle = sb.interrupt_handle();
        let killer = thread::spawn(move || {
            assert!(wait_until(PATIENCE, || handle.kill()), "no call to kill");
            Instant::now()
        });
        let err = sb.call("spin", &[]).unwrap_err();
        let returned = Instant::now();
        (err, returned.saturating_duration_since(killer.join().unwrap()))
    });
    assert!(matches!(err, Error::Cancelled), "{err}");
    eprintln!("row 1: kill() to call return: {latency:?}");
    assert!(latency < Duration::from_secs(10), "{latency:?}");

    // The same with a raw `jmp .`, which has no library code at all.
    assert!(matches!(raw_hostile(&[0xeb, 0xfe]), Error::Timeout(d) if d == RAW_TIMEOUT));
}

#[test]
fn row_02_cli_hlt_fault_and_an_interrupt_flag_game_stays_killable() {
    require_kvm!();
    // IOPL is 0, so `cli` and `sti` raise #GP at CPL3; so does `hlt` (CPL0 only). A `hlt` never
    // reaches the host as a HLT exit.
    for (what, code) in [("cli; hlt", &[0xfa, 0xf4][..]), ("hlt", &[0xf4]), ("sti", &[0xfb])] {
        let f = assert_fault_at(raw_hostile(code), FaultKind::GeneralProtection, HOSTILE_AT);
        assert_eq!(f.error_code, Some(0), "{what}");
    }
    // `pushf; and [rsp], ~IF; popf; jmp .`: at IOPL 0 popf leaves IF alone without faulting, and
    // the guest spins. IF does not matter to the host: the deadline and kill() signal the host
    // thread.
    let spin_without_if = [0x9c, 0x48, 0x81, 0x24, 0x24, 0xff, 0xfd, 0xff, 0xff, 0x9d, 0xeb, 0xfe];
    assert!(matches!(raw_hostile(&spin_without_if), Error::Timeout(d) if d == RAW_TIMEOUT));
    let mut sb = raw_sandbox(&spin_without_if);
    sb.set_call_timeout(Some(PATIENCE));
    let err = hostile(&mut sb, |sb| call_and_kill(sb, "hostile", &[]).unwrap_err());
    assert!(matches!(err, Error::Cancelled), "{err}");
}

#[test]
fn row_03_triple_fault_attempts_end_as_ordinary_faults() {
    require_kvm!();
    // The classic triple fault: `lidt` a zero-limit IDT, then `int3`. At CPL3 `lidt` itself
    // raises #GP, so the IDT never changes. A guest cannot reach a triple fault at all: the IDT,
    // GDT, TSS and the fault stack (IST1) are host-owned supervisor pages, so every exception is
    // delivered on a stack the guest cannot break to a stub that reports it. KVM_EXIT_SHUTDOWN
    // still maps to `Error::GuestCrashed` as the fallback should that ever change.
    //     lidt [rip + 1]; int3; idtr: .quad 0, 0
    let lidt = [0x0f, 0x01, 0x1d, 0x01, 0, 0, 0, 0xcc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let f = assert_fault_at(raw_hostile(&lidt), FaultKind::GeneralProtection, HOSTILE_AT);
    assert_eq!(f.error_code, Some(0));
    // Faulting with no usable stack: `xor esp, esp; push rax` pushes at 2^64 - 8 (unmapped).
    let f = assert_fault_at(raw_hostile(&[0x31, 0xe4, 0x50]), FaultKind::PageFault, HOSTILE_AT + 2);
    assert_eq!(f.address, Some(0xffff_ffff_ffff_fff8));
    assert!(!f.stack_overflow);
    // A non-canonical stack pointer: `mov rsp, 1 << 63; push rax` raises #SS.
    let noncanonical = [0x48, 0xbc, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x50];
    assert_fault_at(raw_hostile(&noncanonical), FaultKind::StackSegment, HOSTILE_AT + 10);
}

#[test]
fn row_04_invalid_opcode_is_reported_with_its_address() {
    require_kvm!();
    let mut sb = sandbox();
    let f = hostile(&mut sb, |sb| fault_of(sb.call("ud2", &[])));
    assert_eq!(f.kind, FaultKind::InvalidOpcode);
    assert!((IMAGE_BASE..sb.image().end()).contains(&f.rip), "{f}");
    assert_eq!((f.address, f.error_code), (None, None));
    // Raw: `ud2`, and `into` (0xce), which is invalid in 64-bit mode.
    assert_fault_at(raw_hostile(&[0x0f, 0x0b]), FaultKind::InvalidOpcode, HOSTILE_AT);
    assert_fault_at(raw_hostile(&[0xce]), FaultKind::InvalidOpcode, HOSTILE_AT);
}

#[test]
fn row_05_breakpoints_and_software_interrupts_end_the_call() {
    require_kvm!();
    let mut sb = sandbox();
    let f = hostile(&mut sb, |sb| fault_of(sb.call("breakpoint", &[])));
    assert_eq!(f.kind, FaultKind::Breakpoint);
    // `int3` is a trap: the reported rip is the next instruction.
    assert_fault_at(raw_hostile(&[0xcc]), FaultKind::Breakpoint, HOSTILE_AT + 1);
    // `int 0x80` (past the IDT limit) and `int 0x0e` (a DPL-0 gate) raise #GP with the IDT error
    // code on hardware KVM; kvm_pvm reports them as #UD. Either way the call ends there.
    for vector in [0x80u8, 0x0e] {
        let f = fault_of::<()>(Err(raw_hostile(&[0xcd, vector])));
        let gp = (f.kind, f.error_code) == (FaultKind::GeneralProtection, Some(u64::from(vector) << 3 | 2));
        assert!(f.rip == HOSTILE_AT && (gp || f.kind == FaultKind::InvalidOpcode), "int {vector:#x}: {f}");
    }
    // `int1` (icebp) skips the gate's DPL check: a debug exception, still just reported.
    let f = fault_of::<()>(Err(raw_hostile(&[0xf1])));
    assert_eq!(f.kind, FaultKind::Debug, "{f}");
}

/// MSRs a guest would like to read or change.
const SENSITIVE_MSRS: [(u32, &str); 12] = [
    (0xc000_0102, "KERNEL_GS_BASE"),
    (0xc000_0080, "EFER"),
    (0xc000_0082, "LSTAR"),
    (0xc000_0100, "FS_BASE"),
    (0x1b, "APIC_BASE"),
    (0x10, "TSC"),
    (0x1d9, "DEBUGCTL"),
    (0x3a, "FEATURE_CONTROL"),
    (0x480, "VMX_BASIC"),
    (0x4b56_4d00, "KVM_WALL_CLOCK_NEW"),
    (0x4b56_4d01, "KVM_SYSTEM_TIME_NEW"),
    (0x4b56_4d02, "KVM_ASYNC_PF_EN"),
];

#[test]
fn row_06_msr_access_faults() {
    require_kvm!();
    // `rdmsr`/`wrmsr` are CPL0 instructions: #GP at CPL3 whatever the index, before KVM's MSR
    // filter (which denies everything) is ever consulted.
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (index, name) in SENSITIVE_MSRS {
            let f = fault_of(sb.call("rdmsr", &[Value::U32(index)]));
            assert_eq!((f.kind, f.error_code), (FaultKind::GeneralProtection, Some(0)), "rdmsr {name}");
            sb.reset().unwrap();
            let f = fault_of(sb.call("wrmsr", &[Value::U32(index), Value::U64(0x1234_5678)]));
            assert_eq!((f.kind, f.error_code), (FaultKind::GeneralProtection, Some(0)), "wrmsr {name}");
            sb.reset().unwrap();
        }
        assert!(matches!(sb.call("rdmsr", &[Value::U32(0xc000_0102)]), Err(Error::GuestFault(_))));
    });
    assert_fault_at(raw_hostile(&[0x0f, 0x30]), FaultKind::GeneralProtection, HOSTILE_AT);
}

fn guest_cpuid(sb: &mut Sandbox, leaf: u32, subleaf: u32) -> [u32; 4] {
    let bytes = sb.call("cpuid", &[Value::U32(leaf), Value::U32(subleaf)]).unwrap();
    let Value::Bytes(b) = bytes else { panic!("{bytes:?}") };
    let word = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    [word(0), word(1), word(2), word(3)]
}

fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    #[allow(unused_unsafe, reason = "`__cpuid_count` is unsafe on older toolchains")]
    // SAFETY: every x86-64 CPU has CPUID.
    let r = unsafe { std::arch::x86_64::__cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

#[test]
fn row_07_nested_virtualisation_is_hidden_or_faults() {
    require_kvm!();
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        let (leaf1, ext) = (guest_cpuid(sb, 1, 0), guest_cpuid(sb, 0x8000_0001, 0));
        let (host1, host_ext) = (host_cpuid(1, 0), host_cpuid(0x8000_0001, 0));
        let hv = guest_cpuid(sb, 0x4000_0000, 0);
        let signature: Vec<u8> = hv[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
        let signature = String::from_utf8_lossy(&signature).trim_end_matches('\0').to_string();
        let (vmx, svm) = (leaf1[2] & 1 << 5 != 0, ext[2] & 1 << 2 != 0);
        // When KVM intercepts CPUID, the guest sees glint's table, from which VMX and SVM are
        // cleared. Under kvm_pvm CPUID at CPL3 is not intercepted and the guest sees the host's
        // own CPUID, so the filter cannot apply. The "KVMKVMKVM" signature does not tell the two
        // apart on a nested host (this machine is itself a KVM guest, so the host's own CPUID
        // carries that signature); what does is whether the guest's view equals the host's.
        let raw_host_view =
            leaf1[0] == host1[0] && leaf1[2] == host1[2] && leaf1[3] == host1[3] && ext[2..] == host_ext[2..];
        eprintln!("row 7: guest sees hypervisor signature {signature:?}, VMX {vmx}, SVM {svm}");
        if vmx || svm {
            assert!(raw_host_view, "CPUID went through KVM's table, yet VMX/SVM is visible: {leaf1:x?} {ext:x?}");
            eprintln!("note: CPUID is not intercepted on this host (kvm_pvm); the VMX/SVM filter does not apply");
        } else if raw_host_view {
            eprintln!("note: the guest sees the host's own CPUID (kvm_pvm), which has no VMX or SVM");
        }
    });
    // VMX and SVM instructions fault at CPL3 (#UD outside VMX operation, or #GP). `vmcall` and
    // `vmmcall` may instead exit to KVM, which refuses hypercalls from CPL3 and resumes the guest,
    // or be a no-op (kvm_pvm): then the `ud2` placed after them faults. Or KVM, on the other
    // vendor's CPU (`vmmcall` on Intel, `vmcall` on AMD), patches the instruction into its own
    // vendor's (`emulator_fix_hypercall`), writing through the guest's page tables at CPL3: the
    // code page is read-only, so that write is refused with a #PF at the instruction itself and
    // the guest's code is never changed.
    let cases: [(&str, &[u8]); 11] = [
        ("vmxon [rax]", &[0xf3, 0x0f, 0xc7, 0x30]),
        ("vmptrld [rax]", &[0x0f, 0xc7, 0x30]),
        ("vmlaunch", &[0x0f, 0x01, 0xc2]),
        ("vmresume", &[0x0f, 0x01, 0xc3]),
        ("vmread rax, rbx", &[0x0f, 0x78, 0xd8]),
        ("vmwrite rax, rbx", &[0x0f, 0x79, 0xc3]),
        ("vmxoff", &[0x0f, 0x01, 0xc4]),
        ("vmrun", &[0x0f, 0x01, 0xd8]),
        ("mov cr4, rax (to set VMXE)", &[0x0f, 0x22, 0xe0]),
        ("vmcall; ud2", &[0x0f, 0x01, 0xc1, 0x0f, 0x0b]),
        ("vmmcall; ud2", &[0x0f, 0x01, 0xd9, 0x0f, 0x0b]),
    ];
    for (what, code) in cases {
        let f = fault_of::<()>(Err(raw_hostile(code)));
        let at_instruction =
            f.rip == HOSTILE_AT && matches!(f.kind, FaultKind::InvalidOpcode | FaultKind::GeneralProtection);
        let fell_through = f.rip == HOSTILE_AT + 3 && f.kind == FaultKind::InvalidOpcode && what.ends_with("ud2");
        // Error code: present (bit 0), write (bit 1), user (bit 2).
        let patch_refused = what.ends_with("ud2")
            && f.kind == FaultKind::PageFault
            && f.rip == HOSTILE_AT
            && f.address == Some(HOSTILE_AT)
            && f.error_code.is_some_and(|e| e & 0b111 == 0b111);
        assert!(at_instruction || fell_through || patch_refused, "{what}: {f}");
        eprintln!("row 7: {what}: {f}");
    }
}

#[test]
fn row_08_descriptor_tables_control_registers_and_segments_are_out_of_reach() {
    require_kvm!();
    // (what, code, offset of the faulting instruction, error code)
    let iret_to_ring0 = [
        0x48, 0x89, 0xe0, // mov rax, rsp
        0x6a, 0x10, // push 0x10 (kernel SS)
        0x50, // push rax
        0x9c, // pushf
        0x6a, 0x08, // push 0x08 (kernel CS)
        0x48, 0x8d, 0x0d, 0x02, 0, 0, 0,    // lea rcx, [rip + 2]
        0x51, // push rcx
        0x48, 0xcf, // iretq
    ];
    let cases: [(&str, &[u8], u64, Option<u64>); 19] = [
        ("lgdt [rax]", &[0x0f, 0x01, 0x10], 0, Some(0)),
        ("lidt [rax]", &[0x0f, 0x01, 0x18], 0, Some(0)),
        ("ltr ax", &[0x0f, 0x00, 0xd8], 0, Some(0)),
        ("lldt ax", &[0x0f, 0x00, 0xd0], 0, Some(0)),
        ("mov cr0, rax", &[0x0f, 0x22, 0xc0], 0, Some(0)),
        ("mov rax, cr0", &[0x0f, 0x20, 0xc0], 0, Some(0)),
        ("mov cr3, rax", &[0x0f, 0x22, 0xd8], 0, Some(0)),
        ("mov cr4, rax", &[0x0f, 0x22, 0xe0], 0, Some(0)),
        ("mov dr7, rax", &[0x0f, 0x23, 0xf8], 0, Some(0)),
        ("invlpg [rax]", &[0x0f, 0x01, 0x38], 0, Some(0)),
        ("wbinvd", &[0x0f, 0x09], 0, Some(0)),
        ("clts", &[0x0f, 0x06], 0, Some(0)),
        ("xsetbv", &[0x0f, 0x01, 0xd1], 0, Some(0)),
        ("swapgs", &[0x0f, 0x01, 0xf8], 0, None),
        ("sysretq", &[0x48, 0x0f, 0x07], 0, Some(0)),
        ("rdpmc", &[0x0f, 0x33], 0, Some(0)),
        ("mov ss, kernel data", &[0xb8, 0x10, 0, 0, 0, 0x8e, 0xd0], 5, Some(0x10)),
        ("mov ds, kernel code", &[0xb8, 0x08, 0, 0, 0, 0x8e, 0xd8], 5, Some(0x08)),
        ("iretq to ring 0", &iret_to_ring0, 17, Some(0x08)),
    ];
    for (what, code, at, error_code) in cases {
        let f = fault_of::<()>(Err(raw_hostile(code)));
        assert_eq!((f.kind, f.rip), (FaultKind::GeneralProtection, HOSTILE_AT + at), "{what}: {f}");
        if error_code.is_some() {
            assert_eq!(f.error_code, error_code, "{what}: {f}");
        }
    }
    // The tables themselves: the page tables are not mapped at all (a CPL3 write is error code
    // 6: not present, write, user); GDT, IDT, TSS and stubs are supervisor pages (7: present,
    // write, user).
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (addr, code) in [(0x1000u64, 6), (0x4000, 6), (0x84000, 7), (0x85000, 7), (0x86000, 7), (0x87000, 7)] {
            let f = fault_of(sb.call("write_to", &[Value::U64(addr)]));
            assert_eq!((f.kind, f.address, f.error_code), (FaultKind::PageFault, Some(addr), Some(code)), "{addr:#x}");
            sb.reset().unwrap();
        }
    });
}

#[test]
fn row_09_memory_beyond_the_sandbox_is_unmapped() {
    require_kvm!();
    // The host's page tables map nothing past the sandbox's memory (and the tables themselves
    // are supervisor-only, row 8), so every access beyond it is a not-present page fault in the
    // guest; no access ever reaches a guest-physical address outside the memory slot.
    let mut sb = sandbox();
    let memory = boot_info(&mut sb).memory_size;
    hostile(&mut sb, |sb| {
        for addr in [memory, memory + 0x20_0000, MAX_MEMORY, 1 << 30, 1 << 40, 0x7fff_ffff_f000] {
            let f = fault_of(sb.call("read_unmapped", &[Value::U64(addr)]));
            assert_eq!((f.kind, f.address, f.error_code), (FaultKind::PageFault, Some(addr), Some(4)), "{addr:#x}");
            sb.reset().unwrap();
            let f = fault_of(sb.call("write_to", &[Value::U64(addr)]));
            assert_eq!((f.kind, f.address, f.error_code), (FaultKind::PageFault, Some(addr), Some(6)), "{addr:#x}");
            sb.reset().unwrap();
        }
        // Non-canonical: #GP, no address.
        let f = fault_of(sb.call("read_unmapped", &[Value::U64(0x8000_0000_0000_0000)]));
        assert_eq!((f.kind, f.address), (FaultKind::GeneralProtection, None));
    });
}

#[test]
fn row_10_device_mmio_addresses_are_plain_unmapped_memory() {
    require_kvm!();
    // No device model: LAPIC, IOAPIC and HPET addresses are not mapped, so the access faults in
    // the guest and no data comes back.
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (what, addr) in [("LAPIC", 0xfee0_0000u64), ("IOAPIC", 0xfec0_0000), ("HPET", 0xfed0_0000)] {
            let f = fault_of(sb.call("read_unmapped", &[Value::U64(addr)]));
            assert_eq!((f.kind, f.address), (FaultKind::PageFault, Some(addr)), "{what}");
            sb.reset().unwrap();
            let f = fault_of(sb.call("write_to", &[Value::U64(addr + 0xb0)]));
            assert_eq!((f.kind, f.address), (FaultKind::PageFault, Some(addr + 0xb0)), "{what}");
            sb.reset().unwrap();
        }
    });
}

#[test]
fn row_11_port_io_outside_the_protocol_fails() {
    require_kvm!();
    // A spray over ports 0..0x400 (`out dx, al` in a loop) faults at its first port: only
    // 0xE0-0xE3 are in the I/O bitmap.
    //     xor edx, edx; 1: out dx, al; inc edx; cmp edx, 0x400; jb 1b; ud2
    let spray = [0x31, 0xd2, 0xee, 0xff, 0xc2, 0x81, 0xfa, 0x00, 0x04, 0x00, 0x00, 0x72, 0xf5, 0x0f, 0x0b];
    let f = assert_fault_at(raw_hostile(&spray), FaultKind::GeneralProtection, HOSTILE_AT + 2);
    assert_eq!(f.error_code, Some(0));
    // Individual ports and widths from the test guest.
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (port, width) in
            [(0x00u32, 1u32), (0x20, 1), (0x60, 1), (0x70, 1), (0x80, 1), (0xcf8, 4), (0x3f8, 1), (0xe4, 1)]
                .into_iter()
                .chain([(0xe5, 1), (0xff, 1), (0x100, 1), (0xffff, 1), (0xe3, 2), (0xe2, 4), (0xdf, 2)])
        {
            let f = fault_of(sb.call("port_out", &[Value::U32(port), Value::U32(width)]));
            assert_eq!(f.kind, FaultKind::GeneralProtection, "out {port:#x} ({width} bytes)");
            sb.reset().unwrap();
        }
        // Wide writes that stay inside the glint ports pass the bitmap; the host refuses them.
        for (port, width) in [(0xe0u32, 2u32), (0xe1, 2), (0xe0, 4)] {
            let refused = protocol_of(sb.call("port_out", &[Value::U32(port), Value::U32(width)]));
            assert_eq!(refused, ProtocolError::PortWidth { port: port as u16, size: width as usize });
            sb.reset().unwrap();
        }
        // `in` from any other port is #GP.
        let f = fault_of(sb.call("port_in", &[Value::U32(0x60)]));
        assert_eq!(f.kind, FaultKind::GeneralProtection);
    });
    // `in` from a glint port passes the bitmap and is never served: a protocol error, and no
    // host data reaches the guest. (Not followed by `reset()` here: that case is
    // `row_11_reset_after_an_in_from_a_glint_port_restores_the_snapshot`.)
    for p in port::GUEST_PORTS {
        let mut sb = sandbox();
        let refused = beside_bystander(|| protocol_of(sb.call("port_in", &[Value::U32(u32::from(p))])));
        assert_eq!(refused, ProtocolError::PortRead { port: p });
        assert!(sb.is_poisoned());
    }
    // Raw `in al, dx` from RETURN.
    let mut sb = raw_sandbox(&[0xba, 0xe0, 0, 0, 0, 0xec]);
    let refused = beside_bystander(|| protocol_of(sb.call("hostile", &[])));
    assert_eq!(refused, ProtocolError::PortRead { port: port::RETURN });
    // String I/O: `rep outsb` of 2 bytes to RETURN. KVM may report it as one 2-byte write or as
    // one 1-byte write per iteration (kvm_pvm does), which the host cannot tell from a plain
    // RETURN (docs/ABI.md 5.1): then the call "returns" the stale frame in the output buffer,
    // here `ok`'s i32 result, refused because `hostile` declares (). `rep insb` is a read.
    // (mov edx, 0xe0; mov ecx, 2; mov rsi/rdi, r13; rep outsb/insb)
    let outsb = [0xba, 0xe0, 0, 0, 0, 0xb9, 0x02, 0, 0, 0, 0x4c, 0x89, 0xee, 0xf3, 0x6e];
    let refused = protocol_of::<()>(Err(raw_hostile(&outsb)));
    assert!(
        refused == ProtocolError::PortWidth { port: port::RETURN, size: 2 }
            || refused
                == ProtocolError::WrongResultType {
                    function: "hostile".into(),
                    declared: ValueType::Unit,
                    actual: ValueType::I32
                },
        "{refused:?}"
    );
    let insb = [0xba, 0xe0, 0, 0, 0, 0xb9, 0x02, 0, 0, 0, 0x4c, 0x89, 0xef, 0xf3, 0x6c];
    let mut sb = raw_sandbox(&insb);
    assert_eq!(
        beside_bystander(|| protocol_of(sb.call("hostile", &[]))),
        ProtocolError::PortRead { port: port::RETURN }
    );
}

#[test]
fn row_11_every_port_below_0x400_but_glints_four_faults_on_its_own() {
    require_kvm!();
    // The I/O bitmap must cover every port a guest could try, not only the first one a spray
    // reaches: each port in 0..0x400 is written on its own, at one byte (which passes the bitmap
    // only for 0xE0-0xE3) and at four bytes (which never may).
    let mut sb = sandbox();
    let glint_ports = port::GUEST_PORTS;
    hostile(&mut sb, |sb| {
        for p in 0..0x400u32 {
            for width in [1u32, 4] {
                let r = sb.call("port_out", &[Value::U32(p), Value::U32(width)]);
                // The CPU checks one bitmap bit per byte accessed.
                if (p..p + width).all(|b| glint_ports.contains(&(b as u16))) {
                    // Only glint ports: the bitmap lets it through and the host judges it (a
                    // one-byte write reads whatever frame is there; a wider one is refused).
                    assert!(!matches!(r, Err(Error::GuestFault(_))), "out {p:#x} ({width} bytes) faulted: {r:?}");
                    if width > 1 {
                        let wide = ProtocolError::PortWidth { port: p as u16, size: width as usize };
                        assert!(
                            matches!(&r, Err(Error::Protocol(e)) if *e == wide),
                            "out {p:#x} ({width} bytes): {r:?}"
                        );
                    }
                } else {
                    match r {
                        Err(Error::GuestFault(f)) => {
                            assert_eq!(f.kind, FaultKind::GeneralProtection, "out {p:#x} ({width} bytes): {f}")
                        }
                        other => panic!("out {p:#x} ({width} bytes) did not fault: {other:?}"),
                    }
                }
                if sb.is_poisoned() {
                    sb.reset().unwrap();
                }
            }
        }
    });
}

#[test]
fn row_11_reset_after_an_in_from_a_glint_port_restores_the_snapshot() {
    require_kvm!();
    // The call ends at the `in` exit with a protocol error and the host never re-enters the
    // vCPU, so KVM still holds the half-done instruction. The first KVM_RUN after `reset()`
    // completes it: rip moves to the instruction after the old `in`, with the snapshot's other
    // registers, and the guest runs from a point it chose before the reset (here it page-faults
    // at 0x24 in `port_in`'s epilogue). Fix: complete pending I/O before restoring (KVM_RUN with
    // `immediate_exit` = 1 finishes it and returns EINTR without running the guest).
    let mut sb = sandbox();
    for p in port::GUEST_PORTS {
        assert_eq!(protocol_of(sb.call("port_in", &[Value::U32(u32::from(p))])), ProtocolError::PortRead { port: p });
        sb.reset().unwrap();
        assert_eq!(sb.call("rt_i32", &[Value::I32(1)]).unwrap(), Value::I32(1), "first call after reset ({p:#x})");
        sb.reset().unwrap();
    }
    let mut sb = raw_sandbox(&[0xba, 0xe0, 0, 0, 0, 0xec]);
    assert_eq!(protocol_of(sb.call("hostile", &[])), ProtocolError::PortRead { port: port::RETURN });
    sb.reset().unwrap();
    assert_eq!(sb.call("ok", &[]).unwrap(), Value::I32(42));
}

#[test]
fn row_12_exit_storms_hit_the_deadline_and_the_limits() {
    require_kvm!();
    // LOG exits with a garbage frame: the first one is refused.
    //     mov dword [r13], 0xffffffff; mov edx, 0xe3; 1: out dx, al; jmp 1b
    let garbage = [0x41, 0xc7, 0x45, 0x00, 0xff, 0xff, 0xff, 0xff, 0xba, 0xe3, 0, 0, 0, 0xee, 0xeb, 0xfd];
    let refused = protocol_of::<()>(Err(raw_hostile(&garbage)));
    assert!(
        matches!(
            refused,
            ProtocolError::Malformed {
                message: Message::Log,
                source: DecodeError::FrameTooLarge { len: 0xffff_ffff, .. }
            }
        ),
        "{refused:?}"
    );

    // A valid 16-byte log line, then LOG exits as fast as the CPU allows until the deadline.
    // Every exit is counted; lines past the 4 KiB budget are dropped, not delivered.
    //     mov dword [r13], 21; mov byte [r13 + 4], 3; mov dword [r13 + 5], 16
    //     mov rax, "log floo"; mov [r13 + 9], rax; mov [r13 + 17], rax
    //     mov edx, 0xe3; 1: out dx, al; jmp 1b
    let storm = [
        0x41, 0xc7, 0x45, 0x00, 0x15, 0x00, 0x00, 0x00, 0x41, 0xc6, 0x45, 0x04, 0x03, 0x41, 0xc7, 0x45, 0x05, 0x10,
        0x00, 0x00, 0x00, 0x48, 0xb8, 0x6c, 0x6f, 0x67, 0x20, 0x66, 0x6c, 0x6f, 0x6f, 0x49, 0x89, 0x45, 0x09, 0x49,
        0x89, 0x45, 0x11, 0xba, 0xe3, 0x00, 0x00, 0x00, 0xee, 0xeb, 0xfd,
    ];
    let delivered = Arc::new(AtomicU64::new(0));
    let sink = delivered.clone();
    let limited =
        builder().limits(Limits { max_host_calls: 100, max_log_bytes: 4096, ..Limits::default() }).on_log(move |r| {
            if r.message == "log floolog floo" {
                sink.fetch_add(1, Ordering::Relaxed);
            }
        });
    let mut sb = raw_sandbox_with(&limited, &storm);
    let (err, stats) = hostile(&mut sb, |sb| {
        let err = sb.call("hostile", &[]).unwrap_err();
        (err, sb.last_call_stats())
    });
    assert!(matches!(err, Error::Timeout(d) if d == RAW_TIMEOUT), "{err}");
    eprintln!("row 12: raw log storm: {stats:?}");
    assert!(stats.exits > 100, "{stats:?}");
    assert!(stats.log_lines + 3 >= stats.exits, "all but the interrupted exits were LOG: {stats:?}");
    assert_eq!(stats.log_bytes, 16 * stats.log_lines);
    assert_eq!(stats.log_lines - stats.log_lines_dropped, 4096 / 16, "{stats:?}");
    assert_eq!(delivered.load(Ordering::Relaxed), 4096 / 16);

    // The same from the guest library: println! in a loop until the deadline.
    let mut sb = limited.clone().build(&testguest()).unwrap().init().unwrap();
    sb.set_call_timeout(Some(Duration::from_secs(1)));
    let (err, stats) = hostile(&mut sb, |sb| {
        let err = sb.call("log_forever", &[]).unwrap_err();
        (err, sb.last_call_stats())
    });
    assert!(matches!(err, Error::Timeout(d) if d == Duration::from_secs(1)), "{err}");
    eprintln!("row 12: log_forever: {stats:?}");
    assert!(stats.exits > 100 && stats.log_lines > 100 && stats.log_lines_dropped > 0, "{stats:?}");

    // Host calls past Limits::max_host_calls end the call before the extra one is served.
    let mut sb = limited.build(&testguest()).unwrap().init().unwrap();
    let (err, stats) = hostile(&mut sb, |sb| {
        assert_eq!(sb.call("host_calls", &[Value::U64(100)]).unwrap(), Value::U64(100));
        let err = sb.call("host_calls", &[Value::U64(1_000_000)]).unwrap_err();
        (err, sb.last_call_stats())
    });
    assert!(matches!(err, Error::LimitExceeded { limit: Limit::HostCalls, value: 100 }), "{err}");
    assert_eq!(stats.host_calls, 101);

    // CPUID in a loop: exits (if KVM intercepts it) are handled in the kernel, and under
    // kvm_pvm there are none; either way the deadline ends it.
    assert!(matches!(raw_hostile(&[0x31, 0xc0, 0x0f, 0xa2, 0xeb, 0xfa]), Error::Timeout(_)));
}

/// Row 12, with `LogOverflow::EndCall`: the first line past the log budget ends the call with a
/// typed error naming the limit and its value; no line past the budget reaches the hook, and a
/// call within the budget is untouched.
#[test]
fn row_12_log_budget_can_end_the_call() {
    require_kvm!();
    let delivered = Arc::new(AtomicU64::new(0));
    let sink = delivered.clone();
    let strict = Limits { max_log_bytes: 4096, log_overflow: LogOverflow::EndCall, ..Limits::default() };
    let mut sb = builder()
        .limits(strict)
        .on_log(move |r| {
            sink.fetch_add(r.message.len() as u64, Ordering::Relaxed);
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    // "line 0" .. "line 9": 60 bytes, well within the budget.
    assert_eq!(sb.call("log_lines", &[Value::U32(10)]).unwrap(), Value::U32(10));
    assert_eq!(sb.last_call_stats().log_lines_dropped, 0);
    delivered.store(0, Ordering::Relaxed);
    let (err, stats) = hostile(&mut sb, |sb| {
        let err = sb.call("log_lines", &[Value::U32(100_000)]).unwrap_err();
        assert!(sb.is_poisoned());
        (err, sb.last_call_stats())
    });
    assert!(matches!(err, Error::LimitExceeded { limit: Limit::LogBytes, value: 4096 }), "{err}");
    assert_eq!(err.to_string(), "guest exceeded the limit of 4096 bytes of log text per guest call");
    assert_eq!(err.kind(), glint::ErrorKind::ResourceLimit);
    // The call stopped at the first line over the budget: what was delivered fits in it, and
    // the one more line that did not fit was the last the guest wrote.
    let kept = delivered.load(Ordering::Relaxed);
    assert!(kept <= 4096 && kept > 4096 - 16, "{kept} bytes delivered");
    assert_eq!(stats.log_lines_dropped, 1, "{stats:?}");
    assert!(stats.log_bytes > 4096 && stats.log_lines < 1000, "{stats:?}");
}

#[test]
fn row_13_no_guest_writable_page_is_executable_and_code_is_read_only() {
    require_kvm!();
    let mut sb = sandbox();
    let info = boot_info(&mut sb);
    // Executing data: heap, stack, both buffers, boot info, the last stack page; and the
    // host's CPL0 stubs (executable, but supervisor). Error code 0x15: present, user, fetch.
    let stubs = 0x87000u64;
    let targets = [
        ("heap", info.heap_addr + 0x100),
        ("input buffer", info.input_addr),
        ("output buffer", info.output_addr + 8),
        ("boot info", BOOT_INFO_ADDR),
        ("stack", info.stack_top - 64),
        ("CPL0 stubs", stubs),
    ];
    hostile(&mut sb, |sb| {
        for (what, addr) in targets {
            let f = fault_of(sb.call("jump_to", &[Value::U64(addr)]));
            assert_eq!(
                (f.kind, f.rip, f.address, f.error_code),
                (FaultKind::PageFault, addr, Some(addr), Some(0x15)),
                "{what}"
            );
            sb.reset().unwrap();
        }
        for name in ["exec_heap", "exec_stack"] {
            let f = fault_of(sb.call(name, &[]));
            assert_eq!((f.kind, Some(f.rip), f.error_code), (FaultKind::PageFault, f.address, Some(0x15)), "{name}");
            sb.reset().unwrap();
        }
        // Writing code or the boot info: protection faults (present, write, user).
        let f = fault_of(sb.call("write_code", &[]));
        assert_eq!((f.kind, f.error_code), (FaultKind::PageFault, Some(7)));
        assert!((IMAGE_BASE..sb.image().end()).contains(&f.address.unwrap()));
        sb.reset().unwrap();
        let f = fault_of(sb.call("write_to", &[Value::U64(BOOT_INFO_ADDR + 8)]));
        assert_eq!((f.kind, f.address, f.error_code), (FaultKind::PageFault, Some(BOOT_INFO_ADDR + 8), Some(7)));
    });
}

/// Calls `set` with `arg`; `None` if the instruction is not available here (#UD).
fn set_optional(sb: &mut Sandbox, set: &str, arg: Value) -> Option<()> {
    match sb.call(set, &[arg]) {
        Ok(_) => Some(()),
        Err(Error::GuestFault(f)) if f.kind == FaultKind::InvalidOpcode => {
            eprintln!("note: `{set}` is not available on this host ({f}); skipped");
            sb.reset().unwrap();
            None
        }
        Err(e) => panic!("{set}: {e}"),
    }
}

#[test]
fn row_14_cpu_state_does_not_survive_a_reset() {
    require_kvm!();
    let mut sb = sandbox();
    // The privileged ways to plant state fault at CPL3: debug registers, swapgs (to
    // KERNEL_GS_BASE), MSRs, XCR0.
    hostile(&mut sb, |sb| {
        let attempts: [(&str, Vec<Value>); 5] = [
            ("dr7_write", vec![Value::U64(0x401)]),
            ("swapgs", vec![]),
            ("wrmsr", vec![Value::U32(0xc000_0102), Value::U64(0x5ec2e7)]),
            ("wrmsr", vec![Value::U32(0x10), Value::U64(0)]),
            ("xsetbv", vec![Value::U64(0x7)]),
        ];
        for (name, args) in attempts {
            let f = fault_of(sb.call(name, &args));
            assert_eq!(f.kind, FaultKind::GeneralProtection, "{name}");
            sb.reset().unwrap();
        }
    });
    // What a CPL3 guest can change: memory, SSE registers and MXCSR (secrets_set), the x87
    // control word, AVX and AVX-512 registers, the FS and GS bases (where the CPU allows
    // wrfsbase at CPL3). Each is set, seen by a later call, then gone after reset.
    let cases: [(&str, &str, Value); 6] = [
        ("secrets_set", "secrets_get", Value::U64(0x5ec4e7)),
        ("x87_cw_set", "x87_cw_get", Value::U32(0x0c7f)),
        ("ymm_set", "ymm_get", Value::U64(0x5ec4_e75e_c4e7)),
        ("zmm_set", "zmm_get", Value::U64(0x5ec4_e75e_c4e7)),
        ("fsbase_set", "fsbase_get", Value::U64(0x5ec4_e700_0000)),
        ("gsbase_set", "gsbase_get", Value::U64(0x5ec4_e700_1000)),
    ];
    hostile(&mut sb, |sb| {
        let mut planted = Vec::new();
        for (set, get, secret) in cases {
            // Reading first: on a CPU without the feature the getter itself is #UD.
            let initial = match sb.call(get, &[]) {
                Err(Error::GuestFault(f)) if f.kind == FaultKind::InvalidOpcode => {
                    eprintln!("note: `{get}` is not available on this host ({f}); skipped");
                    sb.reset().unwrap();
                    continue;
                }
                other => other.ok(),
            };
            if set_optional(sb, set, secret).is_none() {
                continue;
            }
            let seen = sb.call(get, &[]).unwrap();
            assert_ne!(Some(&seen), initial.as_ref(), "{set} changed nothing");
            eprintln!("row 14: {set}: {initial:?} -> {seen:?}");
            planted.push((get, initial.unwrap()));
        }
        assert!(planted.len() >= 2, "at least memory, SSE and x87 state can be planted");
        sb.reset().unwrap();
        for (get, initial) in planted {
            assert_eq!(sb.call(get, &[]).unwrap(), initial, "{get} after reset");
        }
    });
}

#[test]
fn row_15_stack_overflow_hits_the_guard_page() {
    require_kvm!();
    let mut sb = sandbox();
    let info = boot_info(&mut sb);
    let guard = info.stack_top - info.stack_size - PAGE_SIZE..info.stack_top - info.stack_size;
    // Infinite recursion, and a 1 MiB array in one frame (stack probes touch every page on the
    // way down, so the frame cannot jump over the guard page into the heap).
    for (name, arg) in [("recurse", 1u64 << 20), ("big_stack_array", 0)] {
        let f = hostile(&mut sb, |sb| fault_of(sb.call(name, &[Value::U64(arg)])));
        assert_eq!(f.kind, FaultKind::PageFault, "{name}");
        assert!(f.stack_overflow, "{name}: {f}");
        assert!(guard.contains(&f.address.unwrap()), "{name}: {f}");
        assert!(Error::GuestFault(f).to_string().starts_with("guest overflowed its stack at rip 0x"));
    }
    // With a larger stack the same array fits: it was the guard page that stopped it.
    let mut big = builder().stack_size(2 << 20).build(&testguest()).unwrap().init().unwrap();
    assert_eq!(big.call("big_stack_array", &[Value::U64(3)]).unwrap(), Value::U64(7));
}

#[test]
fn row_16_heap_exhaustion_is_a_guest_panic() {
    require_kvm!();
    let mut sb = sandbox();
    let cases: [(&str, u64, &str); 3] = [
        ("alloc_bytes", u64::MAX, "capacity overflow"),
        ("alloc_bytes", 1 << 30, "memory allocation of 1073741824 bytes failed"),
        ("alloc_until_oom", 4096, "memory allocation of 4096 bytes failed"),
    ];
    for (name, arg, expected) in cases {
        let err = hostile(&mut sb, |sb| sb.call(name, &[Value::U64(arg)]).unwrap_err());
        match err {
            Error::GuestPanic { message } => assert!(message.starts_with(expected), "{name}({arg}): {message}"),
            other => panic!("{name}({arg}): expected GuestPanic, got {other}"),
        }
    }
    // The heap is bounded by the configured memory: a sandbox with more memory has more heap.
    let mut big = builder().memory_mib(64).build(&testguest()).unwrap().init().unwrap();
    assert_eq!(big.call("alloc_bytes", &[Value::U64(32 << 20)]).unwrap(), Value::U64(32 << 20));
    assert!(matches!(sb.call("alloc_bytes", &[Value::U64(32 << 20)]), Err(Error::GuestPanic { .. })));
}

#[test]
fn row_17_dirtying_every_page_and_wrecking_the_allocator_stay_inside_the_guest() {
    require_kvm!();
    let mut sb = sandbox();
    let info = boot_info(&mut sb);
    let expected_pages = (info.input_size + info.output_size + info.heap_size) / PAGE_SIZE;
    let (pages, snapshot_pages, after) = hostile(&mut sb, |sb| {
        let pages = sb.call("dirty_memory", &[Value::U32(0xcc)]).unwrap();
        // Memory and restore cost stay bounded by the sandbox's size.
        let snapshot_pages = sb.snapshot().unwrap().stored_pages();
        // The allocator's state is gone: whatever the next call does is the guest's problem.
        let after = sb.call("rt_string", &[Value::String("x".into())]);
        (pages, snapshot_pages, after)
    });
    assert_eq!(pages, Value::U64(expected_pages));
    assert!(snapshot_pages as u64 >= expected_pages && snapshot_pages as u64 <= info.memory_size / PAGE_SIZE);
    eprintln!("row 17: {expected_pages} pages dirtied; snapshot holds {snapshot_pages}; next call: {after:?}");
    assert!(after.is_err(), "{after:?}");
    let start = Instant::now();
    sb.call("dirty_memory", &[Value::U32(0x33)]).unwrap();
    sb.reset().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(sb.call("rt_bytes", &[Value::Bytes(vec![1; 100_000])]).unwrap(), Value::Bytes(vec![1; 100_000]));
}
