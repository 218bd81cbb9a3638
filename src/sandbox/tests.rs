//! The run loop and restore, driven by a fake vCPU and fake memory (`vmm::fake`): every exit kind,
//! the crossings, restore's choice of pages, and what hardware KVM does that kvm_pvm does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "tests")]

use super::config::SandboxConfig;
use super::core::Core;
use super::stats::LogRecord;
use crate::error::{Crash, Message, ProtocolError};
use crate::image::{test_elf, GuestImage};
use crate::mem::layout::{Layout, FAULT_STACK_TOP};
use crate::mem::MemoryConfig;
use crate::vmm::fake::{FakeMemory, FakeVcpu, GuestSide};
use crate::vmm::{Exit, GuestMemory, Restore};
use crate::{Error, FaultKind};
use glint_abi::code::HostCallError;
use glint_abi::layout::{IMAGE_BASE, PAGE_SIZE};
use glint_abi::wire;
use glint_abi::{port, ValueType};
use std::sync::{Arc, Mutex};

type FakeCore = Core<(), FakeVcpu, FakeMemory>;

/// `out 0xe0, al` (RETURN) at the image base, then `ud2`.
const CODE: [u8; 4] = [0xe6, 0xe0, 0x0f, 0x0b];

/// One image for every core of a test binary, so snapshots move between them.
fn image() -> GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| GuestImage::from_bytes(&test_elf::RawElf::exec(&CODE).build()).unwrap()).clone()
}

fn config() -> SandboxConfig<()> {
    SandboxConfig::default()
}

fn core_with(config: SandboxConfig<()>) -> (FakeCore, GuestSide) {
    let image = image();
    let memory =
        MemoryConfig { memory_size: 4 << 20, input_size: 64 << 10, output_size: 64 << 10, stack_size: 64 << 10 };
    let layout = Layout::new(&memory, &image).unwrap();
    let (mut mem, guest) = FakeMemory::new(layout.memory_size);
    for seg in image.segments() {
        mem.write(seg.addr, &seg.data).unwrap();
    }
    let vcpu = FakeVcpu::new(guest.clone());
    (Core::new((vcpu, mem), layout, image, config, (), None, 0).unwrap(), guest)
}

fn out(port: u16) -> Exit {
    Exit::Out { port, size: 1, value: 0 }
}

/// Writes a frame holding `body` into the output buffer, as a guest does before a crossing.
fn put_frame(guest: &GuestSide, layout: &Layout, body: &[u8]) {
    let frame = wire::frame_vec(|v| wire::Sink::put(v, body)).unwrap();
    guest.write(layout.output_addr, &frame);
}

/// The body of an `Ok(unit)` outcome.
fn ok_unit() -> Vec<u8> {
    let mut v = Vec::new();
    wire::put_ok(&mut v, glint_abi::ValueRef::Unit).unwrap();
    v
}

/// Scripts a guest that ends its call with `Ok(())`.
fn returns_unit(core: &mut FakeCore) {
    let layout = core.layout;
    core.vcpu.then(move |g, _| {
        put_frame(g, &layout, &ok_unit());
        out(port::RETURN)
    });
}

fn call_unit(core: &mut FakeCore) -> Result<(), Error> {
    core.call(0, "f", 0, |_| Ok(()), ValueType::Unit, |_| Some(()))
}

#[test]
fn every_exit_that_is_not_a_crossing_ends_the_call_typed_and_poisons() {
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(Exit, Expect)> = vec![
        (Exit::Out { port: port::RETURN, size: 2, value: 0 }, |e| {
            matches!(e, Error::Protocol(ProtocolError::PortWidth { port: 0xe0, size: 2 }))
        }),
        (Exit::Out { port: 0x80, size: 1, value: 0 }, |e| {
            matches!(e, Error::Protocol(ProtocolError::UnknownPort { port: 0x80 }))
        }),
        (Exit::In { port: port::LOG }, |e| matches!(e, Error::Protocol(ProtocolError::PortRead { port: 0xe3 }))),
        (Exit::Mmio { addr: 0xfee0_0000, write: true }, |e| {
            matches!(e, Error::MemoryViolation { addr: 0xfee0_0000, write: true })
        }),
        (Exit::Hlt, |e| matches!(e, Error::GuestCrashed(Crash::Halted))),
        (Exit::Shutdown, |e| matches!(e, Error::GuestCrashed(Crash::TripleFault))),
        (Exit::InternalError, |e| matches!(e, Error::GuestCrashed(Crash::EmulationFailed))),
        (Exit::FailEntry(7), |e| matches!(e, Error::GuestCrashed(Crash::EntryFailed(7)))),
        (Exit::Other("KVM_EXIT_DEBUG"), |e| matches!(e, Error::GuestCrashed(Crash::UnexpectedExit("KVM_EXIT_DEBUG")))),
    ];
    for (exit, expected) in cases {
        let (mut core, _) = core_with(config());
        core.vcpu.then(move |_, _| exit);
        let err = call_unit(&mut core).unwrap_err();
        assert!(expected(&err), "{exit:?} gave {err:?}");
        assert!(err.poisons(), "{exit:?}");
        assert!(matches!(call_unit(&mut core), Err(Error::Poisoned { .. })), "{exit:?}: refused afterwards");
    }
}

#[test]
fn a_spurious_interruption_is_ignored_and_the_call_goes_on() {
    let (mut core, _) = core_with(config());
    core.vcpu.then(|_, _| Exit::Interrupted);
    returns_unit(&mut core);
    call_unit(&mut core).unwrap();
    assert_eq!(core.stats.exits, 2);
}

/// Makes the next entry a page fault (vector 14, error code 6) at rip 0x201234, as the CPL0 stub
/// reports it: the CPU's frame on the fault stack, then the exception `out`. CR2 is the caller's.
fn page_fault_next(core: &mut FakeCore) {
    core.vcpu.then(|g, _| {
        let frame: Vec<u8> =
            [6u64, 0x20_1234, 0x23, 0x202, 0x3f_f000, 0x1b].iter().flat_map(|w| w.to_le_bytes()).collect();
        g.write(FAULT_STACK_TOP - 48, &frame);
        Exit::Out { port: port::EXCEPTION, size: 1, value: 14 }
    });
}

#[test]
fn an_exception_is_reported_from_the_cpus_frame_and_cr2() {
    let (mut core, _) = core_with(config());
    // A page fault (vector 14, with an error code) at rip 0x201234 touching 0xdead0000.
    core.vcpu.cr2 = 0xdead_0000;
    page_fault_next(&mut core);
    match call_unit(&mut core) {
        Err(Error::GuestFault(f)) => {
            assert_eq!(
                (f.kind, f.rip, f.address, f.error_code, f.stack_overflow),
                (FaultKind::PageFault, 0x20_1234, Some(0xdead_0000), Some(6), false)
            );
        }
        other => panic!("{other:?}"),
    }
    // #UD has no error code: the frame starts one word higher, and there is no address.
    let (mut core, _) = core_with(config());
    core.vcpu.then(|g, _| {
        let frame: Vec<u8> =
            [0x20_0002u64, 0x23, 0x202, 0x3f_f000, 0x1b].iter().flat_map(|w| w.to_le_bytes()).collect();
        g.write(FAULT_STACK_TOP - 40, &frame);
        Exit::Out { port: port::EXCEPTION, size: 1, value: 6 }
    });
    match call_unit(&mut core) {
        Err(Error::GuestFault(f)) => {
            assert_eq!((f.kind, f.rip, f.address, f.error_code), (FaultKind::InvalidOpcode, 0x20_0002, None, None))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_calls_are_answered_in_the_input_buffer_and_the_call_goes_on() {
    let mut config = config();
    config.host_fns.insert("double", |x: i32| x * 2);
    let (mut core, guest) = core_with(config);
    let layout = core.layout;
    // The guest calls `double(21)` and `missing()`, checks the answers, then returns.
    let seen = Arc::new(Mutex::new(Vec::new()));
    for (name, args) in [("double", vec![1u8, 21, 0, 0, 0]), ("missing", vec![])] {
        let argc = u32::from(!args.is_empty());
        core.vcpu.then(move |g, _| {
            let mut body = Vec::new();
            wire::put_host_call_head(&mut body, name, argc as usize).unwrap();
            body.extend_from_slice(&args);
            put_frame(g, &layout, &body);
            out(port::HOST_CALL)
        });
    }
    let log = Arc::clone(&seen);
    let g2 = guest.clone();
    core.vcpu.then(move |g, _| {
        let frame = g2.read(layout.input_addr, 64);
        log.lock().unwrap().push(frame);
        put_frame(g, &layout, &ok_unit());
        out(port::RETURN)
    });
    call_unit(&mut core).unwrap();
    assert_eq!(core.stats.host_calls, 2);
    // The last response in the input buffer is the refusal of `missing`.
    let frame = seen.lock().unwrap()[0].clone();
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    match wire::read_outcome(&frame[4..4 + len]).unwrap() {
        wire::Outcome::Err { code, message } => {
            assert_eq!(code, HostCallError::NotFound.number());
            assert_eq!(message, b"no host function named `missing`");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn log_lines_reach_the_hook_and_an_abort_is_a_guest_panic() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let mut config = config();
    config.on_log = Some(Arc::new(move |r: &LogRecord| sink.lock().unwrap().push(r.message.clone())));
    let (mut core, _) = core_with(config);
    let layout = core.layout;
    core.vcpu.then(move |g, _| {
        let mut buf = vec![0u8; 64];
        let n = wire::write_log_frame(&mut buf, glint_abi::code::LogLevel::Info, format_args!("hi\x1b")).unwrap();
        g.write(layout.output_addr, &buf[..n]);
        out(port::LOG)
    });
    core.vcpu.then(move |g, _| {
        let mut buf = vec![0u8; 64];
        let n = wire::write_abort_frame(&mut buf, glint_abi::code::AbortCode::Panic, format_args!("boom")).unwrap();
        g.write(layout.output_addr, &buf[..n]);
        out(port::ABORT)
    });
    assert!(matches!(call_unit(&mut core), Err(Error::GuestPanic { message }) if message == "boom"));
    assert_eq!(*lines.lock().unwrap(), vec!["hi\\u{1b}".to_owned()]);
}

#[test]
fn a_frame_longer_than_the_output_buffer_is_refused_before_it_is_read() {
    let (mut core, _) = core_with(config());
    let layout = core.layout;
    core.vcpu.then(move |g, _| {
        g.write(layout.output_addr, &u32::MAX.to_le_bytes());
        out(port::RETURN)
    });
    match call_unit(&mut core) {
        Err(Error::Protocol(ProtocolError::Malformed { message: Message::CallResult, source })) => {
            assert_eq!(
                source,
                wire::DecodeError::FrameTooLarge { len: u64::from(u32::MAX), capacity: layout.output_size - 4 }
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A core after a clean call and a snapshot, its memory matching the snapshot.
fn snapshotted() -> (FakeCore, GuestSide, super::Snapshot) {
    let (mut core, guest) = core_with(config());
    returns_unit(&mut core);
    call_unit(&mut core).unwrap();
    let snap = core.snapshot().unwrap();
    (core, guest, snap)
}

#[test]
fn restore_copies_back_only_the_pages_dirtied_since_the_snapshot() {
    let (mut core, guest, snap) = snapshotted();
    let heap = core.layout.heap_addr;
    guest.write(heap, &[1]);
    guest.write(heap + 5 * PAGE_SIZE, &[2]);
    core.memory.copied_back.clear();
    core.restore(&snap).unwrap();
    let mut copied = core.memory.copied_back.clone();
    copied.sort_unstable();
    assert_eq!(copied, vec![heap / PAGE_SIZE, heap / PAGE_SIZE + 5]);
    assert_eq!(guest.read(heap, 1), vec![0]);
    assert_eq!(core.vcpu.restores.last().map(|r| r.1), Some(Restore::AfterCleanCall));
}

#[test]
fn restoring_another_snapshot_copies_every_page_either_side_may_hold() {
    let (mut core, guest, first) = snapshotted();
    let heap = core.layout.heap_addr;
    guest.write(heap + 3 * PAGE_SIZE, &[3]);
    returns_unit(&mut core);
    call_unit(&mut core).unwrap();
    let second = core.snapshot().unwrap();
    // Back to `first`: memory last matched `second`, so every written page is copied.
    core.memory.copied_back.clear();
    core.restore(&first).unwrap();
    assert!(core.memory.copied_back.contains(&(heap / PAGE_SIZE + 3)));
    assert_eq!(guest.read(heap + 3 * PAGE_SIZE, 1), vec![0]);
    // A fresh core never wrote `second`'s pages, but must still get them.
    let (mut fresh, fresh_guest) = core_with(config());
    fresh.restore(&second).unwrap();
    assert_eq!(fresh_guest.read(heap + 3 * PAGE_SIZE, 1), vec![3]);
    assert!(fresh.memory.copied_back.contains(&(heap / PAGE_SIZE + 3)));
}

#[test]
fn restore_after_a_failure_sets_every_piece_of_vcpu_state() {
    let (mut core, _, snap) = snapshotted();
    core.vcpu.then(|_, _| Exit::Hlt);
    assert!(call_unit(&mut core).is_err());
    core.restore(&snap).unwrap();
    assert_eq!(core.vcpu.restores.last().map(|r| r.1), Some(Restore::Full));
    assert!(core.poisoned.is_none());
}

#[test]
fn a_snapshot_at_return_resumes_after_the_out_whichever_way_the_hypervisor_reports_it() {
    // Hardware KVM reports the `out` exit with rip on the instruction; kvm_pvm with rip after it.
    // The snapshot must hold the address after the `out` in both cases.
    for (rip_at_exit, name) in [(IMAGE_BASE, "hardware KVM"), (IMAGE_BASE + 2, "kvm_pvm")] {
        let (mut core, _) = core_with(config());
        let layout = core.layout;
        core.vcpu.then(move |g, regs| {
            put_frame(g, &layout, &ok_unit());
            regs.rip = rip_at_exit;
            out(port::RETURN)
        });
        call_unit(&mut core).unwrap();
        let snap = core.snapshot().unwrap();
        assert_eq!(snap.vcpu().regs.rip, IMAGE_BASE + 2, "{name}");
    }
}

#[test]
fn a_refused_snapshot_leaves_the_sandbox_as_it_was() {
    let (mut core, _, snap) = snapshotted();
    let (mut other, _) = {
        // Another load of the same bytes is another image (its own id), and another layout.
        let image = GuestImage::from_bytes(&test_elf::RawElf::exec(&CODE).build()).unwrap();
        let memory =
            MemoryConfig { memory_size: 8 << 20, input_size: 64 << 10, output_size: 64 << 10, stack_size: 64 << 10 };
        let layout = Layout::new(&memory, &image).unwrap();
        let (mem, guest) = FakeMemory::new(layout.memory_size);
        (
            Core::<(), _, _>::new((FakeVcpu::new(guest.clone()), mem), layout, image, config(), (), None, 0).unwrap(),
            guest,
        )
    };
    // Another image (a new load has a new id) and another layout.
    assert!(matches!(other.restore(&snap), Err(Error::SnapshotMismatch(_))));
    assert!(other.vcpu.restores.is_empty() && other.memory.copied_back.is_empty());
    core.restore(&snap).unwrap();
}

/// Scripts a guest that makes `n` host calls to `name` (no arguments).
fn calls_host(core: &mut FakeCore, name: &'static str, n: usize) {
    let layout = core.layout;
    for _ in 0..n {
        core.vcpu.then(move |g, _| {
            let mut body = Vec::new();
            wire::put_host_call_head(&mut body, name, 0).unwrap();
            put_frame(g, &layout, &body);
            out(port::HOST_CALL)
        });
    }
}

#[test]
fn a_call_may_make_exactly_max_host_calls_and_the_next_one_is_not_served() {
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let mut config = config();
    config.limits.max_host_calls = 3;
    config.host_fns.insert("tick", move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let (mut core, _) = core_with(config);
    calls_host(&mut core, "tick", 3);
    returns_unit(&mut core);
    call_unit(&mut core).unwrap();
    assert_eq!((core.stats.host_calls, served.load(std::sync::atomic::Ordering::Relaxed)), (3, 3));

    let (mut core, _) = core_with({
        let mut c = self::config();
        c.limits.max_host_calls = 3;
        let counter = Arc::clone(&served);
        c.host_fns.insert("tick", move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        c
    });
    served.store(0, std::sync::atomic::Ordering::Relaxed);
    calls_host(&mut core, "tick", 4);
    let err = call_unit(&mut core).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { limit: crate::error::Limit::HostCalls, value: 3 }), "{err:?}");
    assert_eq!((core.stats.host_calls, served.load(std::sync::atomic::Ordering::Relaxed)), (4, 3));
}

/// Scripts a guest that logs `text` at info level.
fn logs(core: &mut FakeCore, text: &'static str) {
    let layout = core.layout;
    core.vcpu.then(move |g, _| {
        let mut buf = vec![0u8; 64];
        let n = wire::write_log_frame(&mut buf, glint_abi::code::LogLevel::Info, format_args!("{text}")).unwrap();
        g.write(layout.output_addr, &buf[..n]);
        out(port::LOG)
    });
}

/// A tracing subscriber that counts the warnings glint reports about guest output.
struct GuestWarnings(Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for GuestWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target() == "glint::guest" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_line_that_exactly_fills_the_log_budget_is_kept_and_later_ones_are_dropped_with_one_warning() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let mut config = config();
    config.limits.max_log_bytes = 10;
    config.on_log = Some(Arc::new(move |r: &LogRecord| sink.lock().unwrap().push(r.message.clone())));
    let (mut core, _) = core_with(config);
    for text in ["12345", "67890", "x", "y", "z"] {
        logs(&mut core, text);
    }
    returns_unit(&mut core);
    let warnings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::subscriber::with_default(GuestWarnings(Arc::clone(&warnings)), || call_unit(&mut core)).unwrap();
    assert_eq!(*lines.lock().unwrap(), ["12345", "67890"]);
    let s = core.stats;
    assert_eq!((s.log_lines, s.log_bytes, s.log_lines_dropped), (5, 13, 3), "{s:?}");
    assert_eq!(warnings.load(std::sync::atomic::Ordering::Relaxed), 1, "one warning per call, not one per line");
}

#[test]
fn with_end_call_the_first_line_past_the_log_budget_ends_the_call() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let mut config = config();
    config.limits.max_log_bytes = 10;
    config.limits.log_overflow = super::LogOverflow::EndCall;
    config.on_log = Some(Arc::new(move |r: &LogRecord| sink.lock().unwrap().push(r.message.clone())));
    let (mut core, _) = core_with(config);
    for text in ["12345", "67890", "x"] {
        logs(&mut core, text);
    }
    let err = call_unit(&mut core).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { limit: crate::error::Limit::LogBytes, value: 10 }), "{err:?}");
    assert_eq!(*lines.lock().unwrap(), ["12345", "67890"]);
    let s = core.stats;
    assert_eq!((s.log_lines, s.log_bytes, s.log_lines_dropped), (3, 11, 1), "{s:?}");
}

#[test]
fn a_page_fault_is_a_stack_overflow_exactly_when_it_hits_the_guard_page() {
    let layout = core_with(config()).0.layout;
    let (guard, stack) = (layout.guard_addr, layout.stack_addr);
    for (addr, overflow) in [(guard - 1, false), (guard, true), (stack - 1, true), (stack, false)] {
        let (mut core, _) = core_with(config());
        core.vcpu.cr2 = addr;
        page_fault_next(&mut core);
        match call_unit(&mut core) {
            Err(Error::GuestFault(f)) => assert_eq!(f.stack_overflow, overflow, "fault at {addr:#x}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_host_result_larger_than_the_input_buffer_reaches_the_guest_as_a_refusal() {
    let mut config = config();
    config.host_fns.insert("big", || vec![7u8; 64 << 10]);
    let (mut core, guest) = core_with(config);
    let layout = core.layout;
    calls_host(&mut core, "big", 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    core.vcpu.then(move |g, _| {
        log.lock().unwrap().push(guest.read(layout.input_addr, 256));
        put_frame(g, &layout, &ok_unit());
        out(port::RETURN)
    });
    call_unit(&mut core).unwrap();
    let frame = seen.lock().unwrap()[0].clone();
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    match wire::read_outcome(&frame[4..4 + len]).unwrap() {
        wire::Outcome::Err { code, message } => {
            assert_eq!(code, HostCallError::Refused.number());
            let message = String::from_utf8(message.to_vec()).unwrap();
            assert!(message.ends_with("bytes exceeds the 65536-byte input buffer"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_result_of_another_type_than_declared_is_refused_even_when_it_converts() {
    // An untyped call converts whatever value arrives; the declared type must still be checked.
    let (mut core, _) = core_with(config());
    let layout = core.layout;
    core.vcpu.then(move |g, _| {
        let mut body = Vec::new();
        wire::put_ok(&mut body, glint_abi::ValueRef::I32(7)).unwrap();
        put_frame(g, &layout, &body);
        out(port::RETURN)
    });
    let err = core.call(0, "f", 0, |_| Ok(()), ValueType::Unit, |v| Some(v.to_owned_value())).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol(ProtocolError::WrongResultType { function, declared: ValueType::Unit, actual: ValueType::I32 })
                if function == "f"
        ),
        "{err:?}"
    );
    assert!(err.poisons());
}

#[test]
fn a_snapshot_moved_to_shared_memory_holds_the_same_pages() {
    let (mut core, guest, _) = snapshotted();
    let heap = core.layout.heap_addr;
    // Distinct bytes in pages of two bitmap words, so a page read from the wrong place shows.
    for (i, page) in [1u64, 2, 65, 130].into_iter().enumerate() {
        guest.write(heap + page * PAGE_SIZE + 7, &[0xa0 + i as u8]);
    }
    returns_unit(&mut core);
    call_unit(&mut core).unwrap();
    let owned = core.snapshot().unwrap();
    let (shared, _memory) = owned.to_shared().unwrap();
    let held: Vec<u64> = (0..core.memory.pages()).filter(|&p| owned.page(p).is_some()).collect();
    assert_eq!(owned.stored_pages(), held.len());
    assert_eq!(shared.stored_pages(), held.len());
    for p in 0..core.memory.pages() {
        assert_eq!(shared.page(p), owned.page(p), "page {p}");
    }
    for (i, page) in [1u64, 2, 65, 130].into_iter().enumerate() {
        let bytes = owned.page(heap / PAGE_SIZE + page).unwrap();
        assert_eq!((bytes.len(), bytes[7]), (PAGE_SIZE as usize, 0xa0 + i as u8), "page {page}");
    }
    assert_eq!(owned.page(heap / PAGE_SIZE + 3), None, "a zero page is not stored");
    assert_eq!(shared.page(heap / PAGE_SIZE + 3), None);
    // A fresh core restored from the shared copy gets every page.
    let (mut fresh, fresh_guest) = core_with(config());
    fresh.restore(&shared).unwrap();
    for (i, page) in [1u64, 2, 65, 130].into_iter().enumerate() {
        assert_eq!(fresh_guest.read(heap + page * PAGE_SIZE + 7, 1), [0xa0 + i as u8]);
    }
    let debug = format!("{owned:?}");
    assert!(debug.starts_with("Snapshot {") && debug.contains(&format!("pages: {}", held.len())), "{debug}");
}

#[test]
fn a_core_built_over_a_snapshots_memory_restores_only_what_it_dirtied() {
    // Not the process's first snapshot: its id is not 1 (nor 0).
    let _ = snapshotted();
    let (_, _, snap) = snapshotted();
    // As Template::instantiate_with builds one: memory holding the snapshot's pages, the
    // snapshot's non-zero pages as those written, and the snapshot as the base memory equals.
    let layout = *snap.layout();
    let (mut mem, guest) = FakeMemory::new(layout.memory_size);
    for p in super::snapshot::pages_in(snap.nonzero()) {
        mem.write_untracked(p * PAGE_SIZE, snap.page(p).unwrap()).unwrap();
    }
    let vcpu = FakeVcpu::new(guest.clone());
    let mut core =
        FakeCore::new((vcpu, mem), layout, image(), config(), (), Some(snap.nonzero().to_vec()), snap.id()).unwrap();
    let page = layout.heap_addr + 2 * PAGE_SIZE;
    guest.write(page, &[9]);
    core.memory.copied_back.clear();
    core.restore(&snap).unwrap();
    assert_eq!(core.memory.copied_back, [page / PAGE_SIZE], "only the page written since");
    assert_eq!(guest.read(page, 1), [0]);
}
