//! Guests that fail: panics and CPU exceptions end the call with a typed error that says what
//! and where, poison the sandbox, and leave the host and other sandboxes working. Raw guests
//! (a few hand-assembled bytes in a minimal ELF) cover what no compiler emits and guests that do
//! not use the guest library at all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::elf::RawElf;
use common::{test_builder, test_sandbox, testguest};
use glint::{Error, FaultKind, GuestFault, GuestImage, Message, ProtocolError, Sandbox, SandboxBuilder};
use glint_abi::layout::IMAGE_BASE;
use glint_abi::wire::DecodeError;
use std::time::Duration;

/// Asserts the sandbox is poisoned and that a fresh sandbox beside it still works.
fn assert_poisoned_and_host_fine(sb: &mut Sandbox) {
    assert!(sb.is_poisoned());
    assert!(matches!(sb.call("rt_i32", &[glint::Value::I32(1)]), Err(Error::Poisoned { .. })));
    let mut other = test_sandbox();
    assert_eq!(other.call("rt_i32", &[glint::Value::I32(7)]).unwrap(), glint::Value::I32(7));
}

fn fault_of(result: Result<impl std::fmt::Debug, Error>) -> GuestFault {
    match result {
        Err(Error::GuestFault(f)) => f,
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

fn code_range(sb: &Sandbox) -> std::ops::Range<u64> {
    IMAGE_BASE..sb.image().end()
}

#[test]
fn guest_panic_reports_its_message() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = sb.typed_fn::<(String,), i32>("panics").unwrap();
    match f.call(&mut sb, ("the reactor is on fire".into(),)).unwrap_err() {
        Error::GuestPanic { message } => {
            assert!(message.starts_with("the reactor is on fire (at "), "{message}");
            assert!(message.contains("main.rs:"), "{message}");
        }
        other => panic!("expected GuestPanic, got {other}"),
    }
    assert_poisoned_and_host_fine(&mut sb);
}

#[test]
fn ud2_is_an_invalid_opcode_at_a_guest_address() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = fault_of(sb.call("ud2", &[]));
    assert_eq!(f.kind, FaultKind::InvalidOpcode);
    assert!(code_range(&sb).contains(&f.rip), "rip {:#x}", f.rip);
    assert!(Error::GuestFault(f).to_string().starts_with("guest raised an invalid opcode (#UD) at rip 0x"));
    assert_poisoned_and_host_fine(&mut sb);
}

#[test]
fn page_fault_on_an_unmapped_address_names_the_address() {
    require_kvm!();
    for addr in [0u64, 0x8, 0xdead_0000, 0x7fff_ffff_f000] {
        let mut sb = test_sandbox();
        let f = fault_of(sb.call("read_unmapped", &[glint::Value::U64(addr)]));
        assert_eq!(f.kind, FaultKind::PageFault);
        assert_eq!(f.address, Some(addr));
        assert!(code_range(&sb).contains(&f.rip));
        let msg = Error::GuestFault(f).to_string();
        assert!(msg.contains(&format!("address {addr:#x} (read, page not present)")), "{msg}");
        assert_poisoned_and_host_fine(&mut sb);
    }
}

#[test]
fn host_owned_pages_are_out_of_reach() {
    require_kvm!();
    // Page tables, GDT, IDT, TSS, stubs: supervisor-only or unmapped, so a CPL3 read faults.
    for addr in [0x1000u64, 0x3000, 0x84000, 0x85000, 0x86000, 0x87000] {
        let mut sb = test_sandbox();
        let f = fault_of(sb.call("read_unmapped", &[glint::Value::U64(addr)]));
        assert_eq!((f.kind, f.address), (FaultKind::PageFault, Some(addr)), "{addr:#x}");
    }
}

#[test]
fn general_protection_fault() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = fault_of(sb.call("gp_fault", &[]));
    assert_eq!(f.kind, FaultKind::GeneralProtection);
    assert!(code_range(&sb).contains(&f.rip));
    assert_poisoned_and_host_fine(&mut sb);
}

#[test]
fn privileged_instruction_at_cpl3_faults() {
    require_kvm!();
    let mut sb = test_sandbox();
    assert_eq!(fault_of(sb.call("privileged", &[])).kind, FaultKind::GeneralProtection);
    assert_poisoned_and_host_fine(&mut sb);
}

#[test]
fn divide_error_and_breakpoint() {
    require_kvm!();
    let mut sb = test_sandbox();
    assert_eq!(fault_of(sb.call("divide_error", &[])).kind, FaultKind::DivideError);
    let mut sb = test_sandbox();
    assert_eq!(fault_of(sb.call("breakpoint", &[])).kind, FaultKind::Breakpoint);
}

#[test]
fn code_is_not_writable_and_the_heap_is_not_executable() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = fault_of(sb.call("write_code", &[]));
    assert_eq!(f.kind, FaultKind::PageFault);
    assert!(code_range(&sb).contains(&f.address.unwrap()));
    assert!(Error::GuestFault(f).to_string().contains("(write, protection violation)"));

    let mut sb = test_sandbox();
    let f = fault_of(sb.call("exec_heap", &[]));
    assert_eq!(f.kind, FaultKind::PageFault);
    assert_eq!(Some(f.rip), f.address, "the fetch itself faults");
    assert!(Error::GuestFault(f).to_string().contains("(instruction fetch, protection violation)"));
}

#[test]
fn stack_overflow_hits_the_guard_page() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = fault_of(sb.call("recurse", &[glint::Value::U64(1 << 20)]));
    assert_eq!(f.kind, FaultKind::PageFault);
    assert!(f.stack_overflow, "{f}");
    assert!(Error::GuestFault(f).to_string().starts_with("guest overflowed its stack at rip"));
    assert_poisoned_and_host_fine(&mut sb);
}

#[test]
fn a_looping_guest_times_out_and_can_be_killed() {
    require_kvm!();
    let mut sb = test_sandbox();
    sb.set_call_timeout(Some(Duration::from_millis(100)));
    assert!(matches!(sb.call("spin", &[]), Err(Error::Timeout(d)) if d == Duration::from_millis(100)));
    assert_poisoned_and_host_fine(&mut sb);

    let mut sb = test_sandbox();
    sb.set_call_timeout(None);
    let handle = sb.interrupt_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        while !handle.kill() {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(matches!(sb.call("spin", &[]), Err(Error::Cancelled)));
    killer.join().unwrap();
    let handle = sb.interrupt_handle();
    drop(sb);
    assert!(handle.is_dropped());
    assert!(!handle.kill(), "a handle outliving its sandbox is inert");
}

// Raw guests: machine code at the entry point of a minimal ET_EXEC, no guest library.

fn raw(code: &[u8]) -> GuestImage {
    GuestImage::from_bytes(&RawElf::exec(code).build()).unwrap()
}

fn init_raw(code: &[u8]) -> Result<Sandbox, Error> {
    SandboxBuilder::new().call_timeout(Some(Duration::from_millis(500))).build(&raw(code))?.init()
}

#[test]
fn raw_guest_faulting_in_its_entry_point_is_reported() {
    require_kvm!();
    let f = fault_of(init_raw(&[0x0f, 0x0b])); // ud2
    assert_eq!((f.kind, f.rip), (FaultKind::InvalidOpcode, IMAGE_BASE));
    let f = fault_of(init_raw(&[0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0])); // mov rax, [0]
    assert_eq!((f.kind, f.address), (FaultKind::PageFault, Some(0)));
    let mut sb = test_sandbox();
    assert_eq!(sb.call("rt_u32", &[glint::Value::U32(3)]).unwrap(), glint::Value::U32(3));
}

#[test]
fn raw_guest_cannot_install_its_own_tables_or_touch_privileged_state() {
    require_kvm!();
    // (what, code, offset of the faulting instruction)
    let cases: &[(&str, &[u8], u64)] = &[
        ("lidt [rax]", &[0x0f, 0x01, 0x18], 0),
        ("lgdt [rax]", &[0x0f, 0x01, 0x10], 0),
        ("mov cr3, rax", &[0x0f, 0x22, 0xd8], 0),
        ("cli", &[0xfa], 0),
        ("hlt", &[0xf4], 0),
        ("wrmsr", &[0x0f, 0x30], 0),
        ("rdmsr", &[0x0f, 0x32], 0),
        ("out 0x80, al (port not in the I/O bitmap)", &[0xe6, 0x80], 0),
        ("out 0xe4, al (the stubs' exception port)", &[0xe6, 0xe4], 0),
        ("mov dx, 0xe3; out dx, ax (spans the denied 0xe4)", &[0x66, 0xba, 0xe3, 0x00, 0x66, 0xef], 4),
    ];
    for (what, code, at) in cases {
        let f = fault_of(init_raw(code));
        assert_eq!((f.kind, f.rip), (FaultKind::GeneralProtection, IMAGE_BASE + at), "{what}");
    }
    // `syscall`: EFER.SCE is clear, so hardware KVM raises #UD. kvm_pvm ignores SCE and enters
    // CPL0 at LSTAR, which is 0 and unmapped, so the fetch faults there. Either way: a fault.
    let f = fault_of(init_raw(&[0x0f, 0x05]));
    assert!(
        f.kind == FaultKind::InvalidOpcode || (f.kind, f.rip, f.address) == (FaultKind::PageFault, 0, Some(0)),
        "syscall: {f}"
    );
}

#[test]
fn raw_guest_reading_a_glint_port_or_writing_it_wide_breaks_the_abi() {
    require_kvm!();
    // in al, 0xe0: the port is open for writes, but a read is never served.
    assert!(matches!(init_raw(&[0xe4, 0xe0]), Err(Error::Protocol(ProtocolError::PortRead { port: 0xe0 }))));
    // mov dx, 0xe0; out dx, ax: two bytes to the RETURN port.
    assert!(matches!(
        init_raw(&[0x66, 0xba, 0xe0, 0x00, 0x66, 0xef]),
        Err(Error::Protocol(ProtocolError::PortWidth { port: 0xe0, size: 2 }))
    ));
}

#[test]
fn raw_guest_that_loops_in_init_times_out() {
    require_kvm!();
    assert!(matches!(init_raw(&[0xeb, 0xfe]), Err(Error::Timeout(_))));
}

#[test]
fn raw_guest_returning_garbage_exports_is_refused() {
    require_kvm!();
    // Writes a frame claiming 4 GiB into the output buffer, then `out 0xe0, al`.
    // mov rax, [rdi + 40] (output_addr); mov dword [rax], 0xffffffff; out 0xe0, al
    let code = [0x48, 0x8b, 0x47, 0x28, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff, 0xe6, 0xe0];
    match init_raw(&code) {
        Err(Error::Protocol(ProtocolError::Malformed { message, source: DecodeError::FrameTooLarge { len, .. } })) => {
            assert_eq!((message, len), (Message::CallResult, 0xffff_ffff))
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Runs `f` on its own thread and waits at most `limit` for it: a deadline that never fires
/// fails the test instead of hanging it (the spinning thread is left to the process's end).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let out = f();
        let _ = tx.send((out, start.elapsed()));
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("still running after {limit:?}: the deadline never fired"))
}

#[test]
fn a_100ms_deadline_ends_a_spinning_call_within_two_seconds() {
    require_kvm!();
    // Generous bounds on a noisy machine: the point is a deadline that fires late (or never),
    // which would otherwise pass as a slow test or hang the binary.
    let deadline = Duration::from_millis(100);
    let (result, took) = within(Duration::from_secs(30), move || {
        let mut sb = test_builder().call_timeout(Some(deadline)).build(&testguest()).unwrap().init().unwrap();
        sb.call("spin", &[])
    });
    assert!(matches!(result, Err(Error::Timeout(d)) if d == deadline), "{result:?}");
    assert!(took >= deadline, "ended before its deadline: {took:?}");
    assert!(took < Duration::from_secs(2), "a 100 ms deadline took {took:?}");

    // The same for a guest looping in its initialisation, and for a pooled sandbox.
    let (result, took) = within(Duration::from_secs(30), move || {
        SandboxBuilder::new().call_timeout(Some(deadline)).build(&raw(&[0xeb, 0xfe])).unwrap().init().map(drop)
    });
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(took < Duration::from_secs(2), "init: {took:?}");
    let (result, took) = within(Duration::from_secs(30), move || {
        let pool = glint::SandboxPool::new(
            &test_builder().call_timeout(Some(deadline)),
            &testguest(),
            glint::PoolConfig { max_sandboxes: 1, ready_target: 1, ..Default::default() },
        )
        .unwrap();
        let mut sb = pool.take().unwrap();
        let start = std::time::Instant::now();
        (sb.call("spin", &[]), start.elapsed())
    });
    let (result, spun) = result;
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(spun < Duration::from_secs(2) && took < Duration::from_secs(20), "pool: {spun:?}");
}
