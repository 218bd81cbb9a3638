//! Creation is correct whatever the CPU and whatever else the process is doing: sandboxes built
//! while another thread creates and destroys VMs, with the building thread pinned to each CPU in
//! turn, and with or without the MSR filter (whose VMs come from the process-wide factory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use glint::{Error, FaultKind, MsrFilter, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The tests of this file run one at a time: the factory's counters are process-wide.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
    // SAFETY: CPU_ISSET reads the set within its size.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Pins the calling thread to `cpus`.
fn pin(cpus: &[usize]) {
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` < CPU_SETSIZE (it came from `allowed_cpus`).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity {cpus:?}: {}", std::io::Error::last_os_error());
}

/// A sandbox built, initialised and called with `filter`, checked to behave.
fn build_and_check(filter: MsrFilter) {
    let mut sb = test_builder().msr_filter(filter).build(&testguest()).unwrap().init().unwrap();
    assert_eq!(sb.call("rt_i32", &[Value::I32(41)]).unwrap(), Value::I32(41));
    sb.call("set_state", &[Value::U64(7)]).unwrap();
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(7));
    sb.reset().unwrap();
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
}

#[test]
fn sandboxes_built_on_every_cpu_work() {
    require_kvm!();
    let _serial = serial();
    let cpus = allowed_cpus();
    assert!(!cpus.is_empty());
    std::thread::spawn(move || {
        for &cpu in &cpus {
            pin(&[cpu]);
            for filter in [MsrFilter::Off, MsrFilter::DenyAll] {
                for _ in 0..3 {
                    build_and_check(filter);
                }
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn sandboxes_built_while_another_thread_churns_vms_work() {
    require_kvm!();
    let _serial = serial();
    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Create and drop VMs continuously, the teardowns overlapping the builds below.
            while !stop.load(Ordering::Relaxed) {
                drop(test_builder().build(&testguest()).unwrap());
                churned.fetch_add(1, Ordering::Relaxed);
            }
        });
        let built = std::panic::catch_unwind(|| {
            for i in 0..20 {
                build_and_check(if i % 2 == 0 { MsrFilter::Off } else { MsrFilter::DenyAll });
            }
        });
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = built {
            std::panic::resume_unwind(p);
        }
    });
    assert!(churned.load(Ordering::Relaxed) > 0, "the churn thread made no VM");
}

#[test]
fn msr_instructions_fault_at_cpl3_with_and_without_the_filter() {
    require_kvm!();
    let _serial = serial();
    // The argument of docs/SECURITY.md section 2: the #GP comes before any VM exit, so KVM's
    // MSR handling (and the filter) is never consulted.
    for filter in [MsrFilter::Off, MsrFilter::DenyAll] {
        let mut sb = test_builder().msr_filter(filter).build(&testguest()).unwrap().init().unwrap();
        for index in [0x10u32, 0x1b, 0xc000_0080, 0xc000_0082, 0xc000_0102, 0x4b56_4d00] {
            match sb.call("rdmsr", &[Value::U32(index)]) {
                Err(Error::GuestFault(f)) => assert_eq!(f.kind, FaultKind::GeneralProtection, "{filter:?} {index:#x}"),
                other => panic!("rdmsr {index:#x} under {filter:?}: {other:?}"),
            }
            sb.reset().unwrap();
            match sb.call("wrmsr", &[Value::U32(index), Value::U64(1)]) {
                Err(Error::GuestFault(f)) => assert_eq!(f.kind, FaultKind::GeneralProtection, "{filter:?} {index:#x}"),
                other => panic!("wrmsr {index:#x} under {filter:?}: {other:?}"),
            }
            sb.reset().unwrap();
        }
    }
}

#[test]
fn filtered_sandboxes_come_from_the_factory_and_unfiltered_ones_never_do() {
    require_kvm!();
    let _serial = serial();
    glint::prepare_vms(MsrFilter::DenyAll).unwrap();
    let seen = |s: glint::VmFactoryStats| s.taken + s.missed;
    let before = glint::vm_factory_stats();
    assert!(before.threads > 0, "the factory started: {before:?}");
    for _ in 0..5 {
        drop(test_builder().build(&testguest()).unwrap().init().unwrap());
    }
    assert_eq!(seen(glint::vm_factory_stats()), seen(before), "an unfiltered build never consults the stock");
    for _ in 0..5 {
        drop(test_builder().msr_filter(MsrFilter::DenyAll).build(&testguest()).unwrap().init().unwrap());
    }
    assert_eq!(seen(glint::vm_factory_stats()), seen(before) + 5, "each filtered build asked the factory once");
    // Give the factory time to stock up, then a filtered build takes a ready VM.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while glint::vm_factory_stats().stocked == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let taken = glint::vm_factory_stats().taken;
    drop(test_builder().msr_filter(MsrFilter::DenyAll).build(&testguest()).unwrap());
    assert_eq!(glint::vm_factory_stats().taken, taken + 1, "{:?}", glint::vm_factory_stats());
}
