//! Snapshots and restore: nothing a guest did survives a restore, poisoned sandboxes come back,
//! and snapshots only fit the sandboxes they were made for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, test_sandbox, testguest};
use glint::{Error, FaultKind, PoolConfig, Sandbox, SandboxPool, SnapshotMismatch, Value};

const INITIAL_SECRETS: &str = "0|none|0|0x1f80";

#[test]
fn reset_leaves_no_trace_in_memory_or_registers() {
    require_kvm!();
    let mut sb = test_sandbox();
    let set = sb.typed_fn::<(u64,), ()>("secrets_set").unwrap();
    let get = sb.typed_fn::<(), String>("secrets_get").unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS);
    set.call(&mut sb, (0x5ec4e7,)).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), "6210791|6210791|6210791|0x7f80", "the secrets are in place");
    sb.reset().unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS);
    // Twice in a row, and after a fresh set, still nothing.
    sb.reset().unwrap();
    set.call(&mut sb, (7,)).unwrap();
    sb.reset().unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS);
}

#[test]
fn a_poisoned_sandbox_works_again_after_reset() {
    require_kvm!();
    let mut sb = test_sandbox();
    for (bad, kind) in [
        ("ud2", FaultKind::InvalidOpcode),
        ("gp_fault", FaultKind::GeneralProtection),
        ("privileged", FaultKind::GeneralProtection),
        ("exec_heap", FaultKind::PageFault),
        ("write_code", FaultKind::PageFault),
    ] {
        match sb.call(bad, &[]) {
            Err(Error::GuestFault(f)) => assert_eq!(f.kind, kind, "{bad}: {f}"),
            other => panic!("{bad}: expected a {kind:?} fault, got {other:?}"),
        }
        assert!(sb.is_poisoned());
        sb.reset().unwrap();
        assert!(!sb.is_poisoned());
        assert_eq!(sb.call("rt_i32", &[Value::I32(11)]).unwrap(), Value::I32(11), "after {bad}");
    }
    match sb.call("recurse", &[Value::U64(1 << 20)]) {
        Err(Error::GuestFault(f)) => assert!(f.stack_overflow, "{f}"),
        other => panic!("expected a stack overflow, got {other:?}"),
    }
    sb.reset().unwrap();
    match sb.call("panics", &[Value::String("x".into())]) {
        Err(Error::GuestPanic { message }) => assert!(message.starts_with('x'), "{message}"),
        other => panic!("expected a guest panic, got {other:?}"),
    }
    sb.reset().unwrap();
    sb.set_call_timeout(Some(std::time::Duration::from_millis(50)));
    assert!(matches!(sb.call("spin", &[]), Err(Error::Timeout(_))));
    sb.reset().unwrap();
    assert_eq!(sb.call("rt_string", &[Value::String("back".into())]).unwrap(), Value::String("back".into()));
}

#[test]
fn later_snapshots_restore_in_any_order() {
    require_kvm!();
    let mut sb = test_sandbox();
    let set = sb.typed_fn::<(u64,), ()>("set_state").unwrap();
    let get = sb.typed_fn::<(), u64>("get_state").unwrap();
    set.call(&mut sb, (5,)).unwrap();
    let five = sb.snapshot().unwrap();
    set.call(&mut sb, (9,)).unwrap();
    let nine = sb.snapshot().unwrap();
    set.call(&mut sb, (13,)).unwrap();
    sb.restore(&five).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 5);
    sb.restore(&nine).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 9);
    sb.reset().unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 0);
    sb.restore(&five).unwrap();
    sb.restore(&five).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 5);
    // A snapshot taken right after a restore, before any call, restores correctly too.
    let again = sb.snapshot().unwrap();
    set.call(&mut sb, (77,)).unwrap();
    sb.restore(&again).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 5);
}

#[test]
fn snapshots_move_between_sandboxes_of_one_image_and_layout_only() {
    require_kvm!();
    let mut a = test_sandbox();
    a.call("set_state", &[Value::U64(21)]).unwrap();
    let snap = a.snapshot().unwrap();
    let mut b = test_sandbox();
    b.restore(&snap).unwrap();
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(21));

    let mut other_layout = test_builder().memory_mib(32).build(&testguest()).unwrap().init().unwrap();
    assert!(matches!(other_layout.restore(&snap), Err(Error::SnapshotMismatch(SnapshotMismatch::OtherLayout))));
    let mut other_image = test_builder().build(&common::hello()).unwrap().init().unwrap();
    assert!(matches!(other_image.restore(&snap), Err(Error::SnapshotMismatch(SnapshotMismatch::OtherImage))));
    assert!(!other_image.is_poisoned(), "a refused snapshot leaves the sandbox as it was");
    assert_eq!(other_image.call("add", &[Value::I32(1), Value::I32(2)]).unwrap(), Value::I32(3));
}

#[test]
fn a_poisoned_sandbox_cannot_be_snapshotted() {
    require_kvm!();
    let mut sb = test_sandbox();
    let _ = sb.call("ud2", &[]);
    assert!(matches!(sb.snapshot(), Err(Error::Poisoned { .. })));
}

#[test]
fn restoring_after_large_calls_restores_the_heap() {
    require_kvm!();
    let mut sb = test_sandbox();
    let initial_pages = sb.initial_snapshot().stored_pages();
    let b = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    for round in 0..4u8 {
        let data = vec![round; 512 << 10];
        assert_eq!(b.call(&mut sb, (data.clone(),)).unwrap(), data);
        sb.reset().unwrap();
    }
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
    assert!(initial_pages < 256, "the initial snapshot holds only touched pages: {initial_pages}");
}

#[test]
fn many_rounds_of_changing_dirty_sets_always_restore_exactly() {
    require_kvm!();
    // Pages written in two rounds in a row stay writable ("hot") and are copied back by every
    // restore; pages written once are re-protected. Vary what each round writes so pages move
    // in and out of both sets, and check the state after every reset.
    let mut sb = test_sandbox();
    let set = sb.typed_fn::<(u64,), ()>("secrets_set").unwrap();
    let get = sb.typed_fn::<(), String>("secrets_get").unwrap();
    let bytes = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    let make = sb.typed_fn::<(u64, u32), Vec<u8>>("make_bytes").unwrap();
    for round in 0..60u64 {
        if round % 3 != 0 {
            set.call(&mut sb, (round + 1,)).unwrap();
        }
        let len = ((round * 7919) % 40) as usize * 4096 + 1;
        assert_eq!(bytes.call(&mut sb, (vec![round as u8; len],)).unwrap().len(), len);
        if round % 5 == 0 {
            assert_eq!(make.call(&mut sb, (len as u64, 9)).unwrap().len(), len);
        }
        sb.reset().unwrap();
        assert_eq!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS, "round {round}");
        sb.reset().unwrap();
    }
}

/// Sandbox A keeps 256 KiB on its heap and is snapshotted; restoring that snapshot into another
/// sandbox of the same image must bring every byte, and a working allocator, however the target
/// was made and whatever it did before.
fn assert_restores_across(
    mut a: impl std::ops::DerefMut<Target = Sandbox>,
    mut b: impl std::ops::DerefMut<Target = Sandbox>,
) {
    const KEPT: usize = 256 << 10;
    let keep = a.typed_fn::<(Vec<u8>,), u64>("keep").unwrap();
    let sum = a.typed_fn::<(), u64>("kept_sum").unwrap();
    let echo = a.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    a.call("set_state", &[Value::U64(3)]).unwrap();
    assert_eq!(keep.call(&mut a, (vec![7u8; KEPT],)).unwrap(), 1);
    let snap = a.snapshot().unwrap();
    b.restore(&snap).unwrap();
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(3));
    assert_eq!(sum.call(&mut b, ()).unwrap(), 7 * KEPT as u64, "every kept byte arrived");
    let big = vec![0x5a; 100_013];
    assert_eq!(echo.call(&mut b, (big.clone(),)).unwrap(), big, "the allocator state arrived whole");
    // And back to the target's own initial state.
    b.reset().unwrap();
    assert_eq!(sum.call(&mut b, ()).unwrap(), 0);
    assert_eq!(echo.call(&mut b, (big.clone(),)).unwrap(), big);
}

#[test]
fn a_snapshot_restores_whole_into_a_fresh_sandbox_of_the_image() {
    require_kvm!();
    assert_restores_across(Box::new(test_sandbox()), Box::new(test_sandbox()));
}

#[test]
fn a_snapshot_restores_whole_into_a_sandbox_that_did_work_of_its_own() {
    require_kvm!();
    let mut b = test_sandbox();
    let keep = b.typed_fn::<(Vec<u8>,), u64>("keep").unwrap();
    for round in 0..3u8 {
        keep.call(&mut b, (vec![round; 300 << 10],)).unwrap();
    }
    b.call("dirty_memory", &[Value::U32(0x11)]).unwrap();
    assert_restores_across(Box::new(test_sandbox()), Box::new(b));
}

#[test]
fn a_snapshot_restores_whole_between_pooled_and_direct_sandboxes() {
    require_kvm!();
    let pool =
        SandboxPool::new(&test_builder(), &testguest(), PoolConfig { max_sandboxes: 2, ..Default::default() }).unwrap();
    assert_restores_across(pool.take().unwrap(), Box::new(test_sandbox()));
    assert_restores_across(Box::new(test_sandbox()), pool.take().unwrap());
    assert_restores_across(pool.take().unwrap(), pool.take().unwrap());
    // Given back, the pooled sandboxes are as new.
    let mut sb = pool.take().unwrap();
    assert_eq!(sb.call("kept_sum", &[]).unwrap(), Value::U64(0));
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
}

/// The boot info as the test guest sees it.
fn boot_info(sb: &mut Sandbox) -> glint_abi::layout::BootInfo {
    let Value::Bytes(raw) = sb.call("boot_info", &[]).unwrap() else { panic!("boot_info returns bytes") };
    glint_abi::layout::BootInfo::from_bytes(&raw.try_into().unwrap())
}

#[test]
fn reset_zeroes_pages_that_were_zero_in_the_snapshot() {
    require_kvm!();
    // Pages the initial snapshot holds as zero (far into the heap, the ends of both buffers,
    // low on the stack): the guest writes them, and after a reset each reads zero again.
    let mut sb = test_sandbox();
    let info = boot_info(&mut sb);
    let targets = [
        info.heap_addr + info.heap_size / 2,
        info.heap_addr + info.heap_size - 8,
        info.input_addr + info.input_size - 8,
        info.output_addr + info.output_size - 8,
        info.stack_top - info.stack_size + 64,
    ];
    for round in 0..3u64 {
        for &addr in &targets {
            assert_eq!(sb.call("peek", &[Value::U64(addr)]).unwrap(), Value::U64(0), "{addr:#x}, round {round}");
            sb.call("poke", &[Value::U64(addr), Value::U64(0x5ec4e7 + round)]).unwrap();
            assert_eq!(sb.call("peek", &[Value::U64(addr)]).unwrap(), Value::U64(0x5ec4e7 + round));
        }
        sb.reset().unwrap();
        for &addr in &targets {
            assert_eq!(sb.call("peek", &[Value::U64(addr)]).unwrap(), Value::U64(0), "{addr:#x} after reset");
        }
        sb.reset().unwrap();
    }
    // The same through a snapshot taken later and restored into another sandbox.
    let mut a = test_sandbox();
    let later = a.snapshot().unwrap();
    let mut b = test_sandbox();
    for &addr in &targets {
        b.call("poke", &[Value::U64(addr), Value::U64(1)]).unwrap();
    }
    b.restore(&later).unwrap();
    for &addr in &targets {
        assert_eq!(b.call("peek", &[Value::U64(addr)]).unwrap(), Value::U64(0), "{addr:#x} after a foreign restore");
    }
}

#[test]
fn the_restore_after_a_fault_resets_sse_and_avx_planted_in_the_faulting_call() {
    require_kvm!();
    let mut sb = test_sandbox();
    let initial_ymm = sb.call("ymm_get", &[]).ok();
    if initial_ymm.is_none() {
        sb.reset().unwrap();
    }
    // secrets_then_fault plants xmm5, MXCSR and ymm7 (where AVX exists), then executes ud2: the
    // state is planted on the path that ends in a fault, and the full restore must reset it.
    match sb.call("secrets_then_fault", &[Value::U64(0x5ec4e7)]) {
        Err(Error::GuestFault(f)) => {
            assert!(f.kind == FaultKind::InvalidOpcode, "ud2 (or a missing AVX instruction) ends the call: {f}")
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    sb.reset().unwrap();
    assert_eq!(sb.call("secrets_get", &[]).unwrap(), Value::String(INITIAL_SECRETS.into()));
    if let Some(initial) = initial_ymm {
        assert_eq!(sb.call("ymm_get", &[]).unwrap(), initial);
    }
}
