//! A process that never asks for an MSR filter gets no factory thread and no stocked VM fd.
//! Alone in its own test binary, so no other test can start the factory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};

fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn unfiltered_sandboxes_start_no_factory_and_leak_nothing() {
    require_kvm!();
    // The first sandbox opens /dev/kvm (kept for the process) and starts the watchdog; count
    // after it.
    drop(test_builder().build(&testguest()).unwrap().init().unwrap());
    let fds = open_fds();
    for _ in 0..20 {
        let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
        sb.call("rt_i32", &[glint::Value::I32(1)]).unwrap();
    }
    let pool = glint::SandboxPool::new(&test_builder(), &testguest(), glint::PoolConfig::default()).unwrap();
    drop(pool.take().unwrap());
    drop(pool);
    assert_eq!(open_fds(), fds, "every VM fd was closed");
    assert_eq!(threads_named("glint-vm-fac"), 0, "no factory thread");
    assert_eq!(glint::vm_factory_stats(), glint::VmFactoryStats::default());
}
