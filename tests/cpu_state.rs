//! The census of CPU state a CPL3 guest can change (docs/SECURITY.md, "CPU state a guest can
//! change"): each piece is planted by a guest and must be gone for the next tenant on every path
//! (reset, reset after a fault, restore of another snapshot, a pool give-back, another sandbox on
//! the same thread), and must never reach the host thread or threads it spawns later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, test_sandbox, testguest};
use glint::{Error, FaultKind, PoolConfig, Sandbox, SandboxPool, Value};

/// One row of the census: a guest function that plants the state, one that reads it back.
struct Row {
    what: &'static str,
    set: &'static str,
    arg: Value,
    get: &'static str,
}

fn rows() -> Vec<Row> {
    let row = |what, set, arg, get| Row { what, set, arg, get };
    vec![
        row("DS, ES, FS and GS selectors", "sel_set", Value::U32(0x2b), "sel_get"),
        row("SSE register xmm5, MXCSR, memory", "secrets_set", Value::U64(0x5ec4e7), "secrets_get"),
        row("x87 control word", "x87_cw_set", Value::U32(0x0c7f), "x87_cw_get"),
        row("x87 register stack", "x87_push", Value::U64(7), "x87_env"),
        row("AVX upper halves (ymm7)", "ymm_set", Value::U64(0x5ec4_e75e_c4e7), "ymm_get"),
        row("AVX-512 zmm31 and mask k7", "zmm_set", Value::U64(0x5ec4_e75e_c4e7), "zmm_get"),
        row("FS base", "fsbase_set", Value::U64(0x5ec4_e700_0000), "fsbase_get"),
        row("GS base", "gsbase_set", Value::U64(0x5ec4_e700_1000), "gsbase_get"),
        row("protection-key rights (PKRU)", "pkru_set", Value::U32(0x5555_0000), "pkru_get"),
    ]
}

/// `get`'s value, or `None` with a note when the instruction does not exist here (#UD), in which
/// case the sandbox is reset and the row does not apply to this host.
fn read(sb: &mut Sandbox, get: &str) -> Option<Value> {
    match sb.call(get, &[]) {
        Ok(v) => Some(v),
        Err(Error::GuestFault(f)) if f.kind == FaultKind::InvalidOpcode => {
            sb.reset().unwrap();
            None
        }
        Err(e) => panic!("{get}: {e}"),
    }
}

/// Plants the row's state and checks a later call of the same tenant sees it (else the row
/// tests nothing). Returns the initial value, or `None` if the row does not apply here.
fn plant(sb: &mut Sandbox, row: &Row) -> Option<Value> {
    let initial = read(sb, row.get)?;
    match sb.call(row.set, std::slice::from_ref(&row.arg)) {
        Ok(_) => {}
        Err(Error::GuestFault(f)) if f.kind == FaultKind::InvalidOpcode => {
            sb.reset().unwrap();
            return None;
        }
        Err(e) => panic!("{}: {e}", row.set),
    }
    let planted = sb.call(row.get, &[]).unwrap();
    assert_ne!(planted, initial, "{}: planting changed nothing", row.what);
    Some(initial)
}

/// The host thread's own state that a guest must never change.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct HostThread {
    selectors: [u16; 4],
    ss: u16,
    mxcsr: u32,
    x87_cw: u16,
    rflags_ac: bool,
    pkru: Option<u32>,
    tls: u64,
}

thread_local!(static TLS_PROBE: std::cell::Cell<u64> = const { std::cell::Cell::new(0x715) });

fn host_thread() -> HostThread {
    let (ds, es, fs, gs, ss): (u16, u16, u16, u16, u16);
    let mut mxcsr = 0u32;
    let mut cw = 0u16;
    let flags: u64;
    // SAFETY: reads of segment registers, MXCSR, the x87 control word and RFLAGS.
    unsafe {
        std::arch::asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs", "mov {4:x}, ss",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) ss);
        std::arch::asm!("stmxcsr [{0}]", "fnstcw [{1}]", in(reg) &mut mxcsr, in(reg) &mut cw);
        std::arch::asm!("pushfq", "pop {0}", out(reg) flags);
    }
    // CPUID.7.0:ECX.OSPKE: the kernel enabled protection keys, so rdpkru works.
    #[allow(unused_unsafe, reason = "`__cpuid_count` is unsafe on older toolchains")]
    // SAFETY: CPUID exists on every x86-64 CPU.
    let ospke = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.ecx & (1 << 4) != 0;
    let pkru = ospke.then(|| {
        let v: u32;
        // SAFETY: OSPKE is set (checked), so rdpkru does not fault.
        unsafe { std::arch::asm!("rdpkru", out("eax") v, in("ecx") 0u32, out("edx") _) };
        v
    });
    HostThread {
        selectors: [ds, es, fs, gs],
        ss,
        mxcsr,
        x87_cw: cw,
        rflags_ac: flags & (1 << 18) != 0,
        pkru,
        tls: TLS_PROBE.with(std::cell::Cell::get),
    }
}

/// Runs `check` for every row that applies on this host; at least `min` rows must apply.
fn for_each_row(min: usize, mut check: impl FnMut(&Row)) {
    let mut applied = 0;
    for row in rows() {
        let mut probe = test_sandbox();
        if plant(&mut probe, &row).is_none() {
            eprintln!("note: {} cannot be planted on this host (#UD); row skipped", row.what);
            continue;
        }
        check(&row);
        applied += 1;
    }
    assert!(applied >= min, "only {applied} rows apply here");
}

#[test]
fn planted_state_is_gone_after_reset() {
    require_kvm!();
    for_each_row(6, |row| {
        let mut sb = test_sandbox();
        let initial = plant(&mut sb, row).unwrap();
        sb.reset().unwrap();
        assert_eq!(sb.call(row.get, &[]).unwrap(), initial, "{} after reset", row.what);
    });
}

#[test]
fn planted_state_is_gone_after_a_fault_and_reset() {
    require_kvm!();
    for_each_row(6, |row| {
        let mut sb = test_sandbox();
        let initial = plant(&mut sb, row).unwrap();
        assert!(matches!(sb.call("ud2", &[]), Err(Error::GuestFault(_))));
        sb.reset().unwrap();
        assert_eq!(sb.call(row.get, &[]).unwrap(), initial, "{} after fault + reset", row.what);
    });
}

#[test]
fn planted_state_is_gone_after_restoring_another_snapshot() {
    require_kvm!();
    for_each_row(6, |row| {
        let mut sb = test_sandbox();
        sb.call("set_state", &[Value::U64(1)]).unwrap();
        let before = sb.snapshot().unwrap();
        let initial = plant(&mut sb, row).unwrap();
        sb.restore(&before).unwrap();
        assert_eq!(sb.call(row.get, &[]).unwrap(), initial, "{} after restore", row.what);
        // Into another sandbox too.
        let mut other = test_sandbox();
        plant(&mut other, row).unwrap();
        other.restore(&before).unwrap();
        assert_eq!(other.call(row.get, &[]).unwrap(), initial, "{} after restore into another", row.what);
    });
}

#[test]
fn planted_state_is_gone_for_the_next_checkout_of_a_pooled_vm() {
    require_kvm!();
    let config = PoolConfig { max_sandboxes: 1, ready_target: 1, ..Default::default() };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    for_each_row(6, |row| {
        let initial = {
            let mut sb = pool.take().unwrap();
            plant(&mut sb, row).unwrap()
        };
        let mut next = pool.take().unwrap();
        assert_eq!(next.call(row.get, &[]).unwrap(), initial, "{} for the next checkout", row.what);
    });
    assert_eq!(pool.stats().created, 1, "one VM served every checkout");
}

#[test]
fn planted_state_never_reaches_another_sandbox_or_the_host_thread() {
    require_kvm!();
    let host_before = host_thread();
    for_each_row(6, |row| {
        let mut tenant = test_sandbox();
        let mut neighbour = test_sandbox();
        let initial = read(&mut neighbour, row.get).unwrap();
        plant(&mut tenant, row).unwrap();
        // The same thread runs the neighbour right after the tenant left its state behind.
        assert_eq!(neighbour.call(row.get, &[]).unwrap(), initial, "{} seen by another sandbox", row.what);
        assert_eq!(host_thread(), host_before, "{} reached the host thread", row.what);
        let spawned = std::thread::spawn(host_thread).join().unwrap();
        assert_eq!(spawned.selectors, host_before.selectors, "{} reached a thread spawned later", row.what);
        // A sandbox moved to another thread brings its guest's state, not that thread's.
        let get = row.get;
        let planted = tenant.call(get, &[]).unwrap();
        let (tenant, seen) = std::thread::spawn(move || {
            let seen = tenant.call(get, &[]).unwrap();
            (tenant, seen)
        })
        .join()
        .unwrap();
        assert_eq!(seen, planted, "{}: the guest's own state follows it to another thread", row.what);
        drop(tenant);
    });
}

#[test]
fn the_stack_segment_and_alignment_flag_stay_the_guests_own() {
    require_kvm!();
    let host_before = host_thread();
    let mut sb = test_sandbox();
    let ss = sb.call("ss_get", &[]).unwrap();
    // Under kvm_pvm the guest runs on the host's user stack segment (0x2b on Linux); a load of
    // the value it already has is all CPL3 allows, and must not disturb anything.
    if let Value::U32(sel) = ss {
        sb.call("ss_set", &[Value::U32(sel)]).unwrap();
        assert_eq!(sb.call("ss_get", &[]).unwrap(), ss);
    }
    let flags = sb.call("rflags_get", &[]).unwrap();
    // RFLAGS.AC: under kvm_pvm CR0.AM is the host's (set), so the guest's own misaligned
    // accesses may fault after this; either way the flag must not outlive a reset or reach us.
    sb.call("ac_set", &[]).unwrap();
    let _ = sb.call("rflags_get", &[]);
    assert_eq!(host_thread(), host_before);
    sb.reset().unwrap();
    assert_eq!(sb.call("rflags_get", &[]).unwrap(), flags);
    assert_eq!(host_thread(), host_before);
}

#[test]
fn what_the_host_cpu_number_leaks_is_read_only() {
    require_kvm!();
    // `lsl` on Linux's per-CPU GDT entry and `rdpid` (TSC_AUX) tell a guest which host CPU it is
    // on (documented in docs/SECURITY.md); nothing a guest does can change either.
    let mut sb = test_sandbox();
    for f in ["lsl_cpunode", "rdpid"] {
        match sb.call(f, &[]) {
            Ok(v) => eprintln!("note: {f} = {v} here"),
            Err(Error::GuestFault(fault)) => {
                eprintln!("note: {f} faults here ({fault})");
                sb.reset().unwrap();
            }
            Err(e) => panic!("{f}: {e}"),
        }
    }
}
