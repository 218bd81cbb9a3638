//! The sandbox pool: fresh sandboxes per call that never leak state, bounded size, waiting or
//! failing when empty, failed sandboxes restored or replaced, many takers, copy-on-write memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use glint::{ConfigError, Error, PoolConfig, PoolEmpty, SandboxPool, Value, WhenEmpty};
use std::time::{Duration, Instant};

const INITIAL_SECRETS: &str = "0|none|0|0x1f80";

fn pool(max: usize, when_empty: WhenEmpty) -> SandboxPool {
    let config = PoolConfig { max_sandboxes: max, ready_target: max, when_empty, restore_in_background: false };
    SandboxPool::new(&test_builder(), &testguest(), config).unwrap()
}

#[test]
fn the_next_user_of_a_pooled_vm_sees_none_of_the_previous_users_state() {
    require_kvm!();
    for background in [false, true] {
        let config =
            PoolConfig { max_sandboxes: 1, ready_target: 1, restore_in_background: background, ..Default::default() };
        let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
        let set = pool.typed_fn::<(u64,), ()>("secrets_set").unwrap();
        let get = pool.typed_fn::<(), String>("secrets_get").unwrap();
        for round in 1..=5u64 {
            let mut sb = pool.take().unwrap();
            assert_eq!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS, "round {round}, background {background}");
            set.call(&mut sb, (round * 1000,)).unwrap();
            assert_ne!(get.call(&mut sb, ()).unwrap(), INITIAL_SECRETS);
        }
        let stats = pool.stats();
        assert_eq!(stats.created, 1, "one VM served every checkout: {stats:?}");
        assert!(stats.recycled >= 4, "{stats:?}");
    }
}

#[test]
fn fresh_calls_return_results() {
    require_kvm!();
    let pool = pool(2, WhenEmpty::Wait(Duration::from_secs(10)));
    let add = pool.typed_fn::<(i32, i32), i32>("host_add").unwrap();
    for i in 0..20 {
        assert_eq!(pool.call_typed(&add, (i, 1)).unwrap(), i + 1);
        assert_eq!(pool.call("rt_u64", &[Value::U64(7)]).unwrap(), Value::U64(7));
    }
    assert!(matches!(pool.typed_fn::<(i32,), i32>("host_add"), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(pool.call("nope", &[]), Err(Error::NoSuchFunction { .. })));
}

#[test]
fn the_pool_is_bounded_and_fails_fast_when_told_to() {
    require_kvm!();
    let pool = pool(2, WhenEmpty::Fail);
    assert_eq!(pool.wait_ready(2, Duration::from_secs(10)), 2);
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    match pool.take() {
        Err(Error::PoolExhausted { max, .. }) => assert_eq!(max, 2),
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(pool.stats().lent, 2);
    drop(a);
    let c = pool.take().unwrap();
    drop((b, c));
    let stats = pool.stats();
    assert!(stats.created <= 2, "never more VMs than the bound: {stats:?}");
}

#[test]
fn a_pool_with_no_ready_target_creates_on_demand_and_says_what_is_true() {
    require_kvm!();
    let config = PoolConfig { max_sandboxes: 2, ready_target: 0, when_empty: WhenEmpty::Fail, ..Default::default() };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    let mut a = pool.take().expect("a take on an empty pool with room creates a sandbox");
    assert_eq!(a.call("rt_i32", &[Value::I32(5)]).unwrap(), Value::I32(5));
    let b = pool.take().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.lent, stats.created), (2, 2), "{stats:?}");
    match pool.take() {
        Err(Error::PoolExhausted { max, why }) => {
            assert_eq!(max, 2);
            assert!(matches!(why, PoolEmpty::AllLent { lent: 2 }), "{why:?}");
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    drop((a, b));
    // Given back and restored, they are lent again without new VMs.
    let _c = pool.take().unwrap();
    assert_eq!(pool.stats().created, 2);
}

#[test]
fn an_interrupt_handle_belongs_to_its_checkout() {
    require_kvm!();
    let config = PoolConfig { max_sandboxes: 1, ready_target: 1, ..Default::default() };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    let stale = {
        let sb = pool.take().unwrap();
        sb.interrupt_handle()
    };
    let mut next = pool.take().unwrap();
    assert_eq!(pool.stats().created, 1, "the same VM serves the next checkout");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The old checkout's handle hammers kill() while the new tenant makes calls.
        let killer = scope.spawn(|| {
            let mut stopped = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                stopped += u32::from(stale.kill());
            }
            stopped
        });
        let results: Vec<_> = (0..200).map(|_| next.call("busy", &[Value::U64(10_000)])).collect();
        // Stop the killer before asserting, so a failure fails the test instead of hanging it.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stopped = killer.join().unwrap();
        for (i, r) in results.iter().enumerate() {
            assert!(r.is_ok(), "call {i} was stopped: {r:?}");
        }
        assert_eq!(stopped, 0, "a stale handle stopped nothing");
    });
    // The current checkout's own handle still works.
    let own = next.interrupt_handle();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let start = Instant::now();
            while !own.kill() && start.elapsed() < Duration::from_secs(20) {
                std::thread::yield_now();
            }
        });
        assert!(matches!(next.call("spin", &[]), Err(Error::Cancelled)));
    });
    assert!(!stale.is_dropped(), "the sandbox lives on in the pool");
}

#[test]
fn takers_wait_for_a_sandbox_or_time_out() {
    require_kvm!();
    let pool = pool(1, WhenEmpty::Wait(Duration::from_secs(20)));
    let held = pool.take().unwrap();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let start = Instant::now();
            let mut sb = pool.take().unwrap();
            assert_eq!(sb.call("rt_i32", &[Value::I32(3)]).unwrap(), Value::I32(3));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(50), "the waiter got a sandbox only once it was given back");
    });

    let short = self::pool(1, WhenEmpty::Wait(Duration::from_millis(50)));
    let _held = short.take().unwrap();
    assert!(matches!(short.take(), Err(Error::PoolExhausted { .. })));
}

#[test]
fn a_failed_sandbox_is_restored_before_it_is_lent_again() {
    require_kvm!();
    let pool = pool(1, WhenEmpty::Wait(Duration::from_secs(10)));
    for bad in ["ud2", "gp_fault", "write_code", "recurse"] {
        let mut sb = pool.take().unwrap();
        let args: &[Value] = if bad == "recurse" { &[Value::U64(1 << 20)] } else { &[] };
        assert!(sb.call(bad, args).unwrap_err().poisons(), "{bad}");
        assert!(sb.is_poisoned());
        drop(sb);
        let mut sb = pool.take().unwrap();
        assert!(!sb.is_poisoned(), "after {bad}");
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
    }
    let mut sb = pool.take().unwrap();
    sb.set_call_timeout(Some(Duration::from_millis(30)));
    assert!(matches!(sb.call("spin", &[]), Err(Error::Timeout(_))));
    drop(sb);
    let sb = pool.take().unwrap();
    assert!(!sb.is_poisoned());
}

#[test]
fn a_sandbox_whose_restore_failed_is_replaced_and_never_lent() {
    require_kvm!();
    for background in [false, true] {
        let config =
            PoolConfig { max_sandboxes: 1, ready_target: 1, restore_in_background: background, ..Default::default() };
        let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
        {
            let mut sb = pool.take().unwrap();
            sb.call("set_state", &[Value::U64(99)]).unwrap();
            sb.inject_restore_failure();
        }
        // The give-back's restore failed: that VM is torn down and a new one made.
        let mut sb = pool.take().unwrap();
        assert!(!sb.is_poisoned(), "background {background}");
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0), "background {background}");
        let stats = pool.stats();
        assert_eq!((stats.replaced, stats.created), (1, 2), "background {background}: {stats:?}");
        drop(sb);
        // And the new one is recycled normally.
        let mut again = pool.take().unwrap();
        assert_eq!(again.call("rt_i32", &[Value::I32(4)]).unwrap(), Value::I32(4));
        assert_eq!(pool.stats().created, 2);
    }
}

#[test]
fn many_threads_take_and_give_back() {
    require_kvm!();
    let pool = pool(3, WhenEmpty::Wait(Duration::from_secs(30)));
    let set = pool.typed_fn::<(u64,), ()>("set_state").unwrap();
    let get = pool.typed_fn::<(), u64>("get_state").unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (pool, set, get) = (&pool, set.clone(), get.clone());
            scope.spawn(move || {
                for i in 0..50u64 {
                    let mut sb = pool.take().unwrap();
                    assert_eq!(get.call(&mut sb, ()).unwrap(), 0, "thread {t} call {i} saw a previous user's state");
                    set.call(&mut sb, (t * 100 + i + 1,)).unwrap();
                    assert_eq!(get.call(&mut sb, ()).unwrap(), t * 100 + i + 1);
                }
            });
        }
    });
    let stats = pool.stats();
    assert!(stats.created <= 3, "{stats:?}");
    assert_eq!(stats.lent, 0);
}

#[test]
fn dropping_the_pool_while_sandboxes_are_out_is_safe() {
    require_kvm!();
    let pool = pool(2, WhenEmpty::Wait(Duration::from_secs(10)));
    let mut sb = pool.take().unwrap();
    drop(pool);
    assert_eq!(sb.call("rt_i32", &[Value::I32(5)]).unwrap(), Value::I32(5), "a lent sandbox outlives its pool");
    drop(sb);
}

#[test]
fn sandboxes_of_one_pool_share_memory_copy_on_write_and_see_only_their_own_writes() {
    require_kvm!();
    let pool = pool(2, WhenEmpty::Wait(Duration::from_secs(10)));
    let mut a = pool.take().unwrap();
    let mut b = pool.take().unwrap();
    a.call("set_state", &[Value::U64(111)]).unwrap();
    b.call("set_state", &[Value::U64(222)]).unwrap();
    assert_eq!(a.call("get_state", &[]).unwrap(), Value::U64(111));
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(222));
    let big = vec![0x5a; 256 << 10];
    assert_eq!(a.call("rt_bytes", &[Value::Bytes(big.clone())]).unwrap(), Value::Bytes(big));
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(222));
}

#[test]
fn a_zero_sized_pool_is_refused() {
    require_kvm!();
    let config = PoolConfig { max_sandboxes: 0, ..Default::default() };
    assert!(matches!(
        SandboxPool::new(&test_builder(), &testguest(), config),
        Err(Error::Config(ConfigError::EmptyPool))
    ));
}

/// Private (unshared) memory of this process, from smaps_rollup.
fn private_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    text.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024)
        .sum()
}

#[test]
fn a_thousand_ready_sandboxes_of_the_hello_guest_fit_and_share_their_memory() {
    require_kvm!();
    // Each VM holds two descriptors; make sure the soft limit allows a thousand.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < 4096 && limit.rlim_max >= 4096 {
            limit.rlim_cur = 4096;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    const N: usize = 1000;
    let config =
        PoolConfig { max_sandboxes: N, ready_target: N, when_empty: WhenEmpty::Fail, restore_in_background: false };
    let before = private_bytes();
    let pool = SandboxPool::new(&common::test_builder(), &common::hello(), config).unwrap();
    let ready = pool.wait_ready(N, Duration::from_secs(600));
    let per_sandbox = private_bytes().saturating_sub(before) / N as u64;
    assert_eq!(ready, N, "{:?}", pool.stats());
    assert!(per_sandbox < 256 << 10, "{per_sandbox} bytes of private memory per ready sandbox");
    eprintln!("{N} ready sandboxes; {} KiB private memory each", per_sandbox / 1024);
    // They all work.
    let add = pool.typed_fn::<(i32, i32), i32>("add").unwrap();
    let mut taken: Vec<_> = (0..N).map(|_| pool.take().unwrap()).collect();
    for (i, sb) in taken.iter_mut().enumerate() {
        assert_eq!(add.call(sb, (i as i32, 1)).unwrap(), i as i32 + 1);
    }
}

#[test]
fn the_stats_count_a_sandbox_given_back_for_a_background_restore_as_restoring() {
    require_kvm!();
    use std::sync::{Arc, Condvar, Mutex};
    // The pool's worker blocks in the data factory while `hold` is set, so a sandbox given back
    // stays queued for its restore until the test lets the worker go.
    let hold = Arc::new((Mutex::new(false), Condvar::new()));
    let gate = Arc::clone(&hold);
    let factory = move || {
        if std::thread::current().name() == Some("glint-pool") {
            let (held, cv) = &*gate;
            let mut held = held.lock().unwrap();
            while *held {
                held = cv.wait(held).unwrap();
            }
        }
    };
    /// Lets the worker go when dropped, so a failed assertion cannot hang the pool's drop.
    struct Release(Arc<(Mutex<bool>, Condvar)>);
    impl Drop for Release {
        fn drop(&mut self) {
            *self.0 .0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
            self.0 .1.notify_all();
        }
    }
    let config = PoolConfig { max_sandboxes: 2, ready_target: 1, restore_in_background: true, ..Default::default() };
    let pool = SandboxPool::with_data(&test_builder(), &testguest(), config, factory).unwrap();
    assert_eq!(pool.wait_ready(1, Duration::from_secs(10)), 1);
    let release = Release(Arc::clone(&hold));
    *hold.0.lock().unwrap() = true;
    // Taking the ready one sends the worker to make another: it blocks in the factory.
    let sb = pool.take().unwrap();
    let start = Instant::now();
    while pool.stats().creating == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the worker never started a sandbox");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(sb);
    let stats = pool.stats();
    assert_eq!((stats.restoring, stats.ready, stats.lent), (1, 0, 0), "{stats:?}");
    drop(release);
    assert_eq!(pool.wait_ready(2, Duration::from_secs(10)), 2);
    let stats = pool.stats();
    assert_eq!((stats.restoring, stats.ready), (0, 2), "{stats:?}");
}

#[test]
fn the_demand_of_a_taker_or_a_wait_for_ready_sandboxes_ends_when_it_is_served() {
    require_kvm!();
    // No ready target: the pool makes a sandbox only for someone waiting for one.
    let config = PoolConfig {
        max_sandboxes: 4,
        ready_target: 0,
        when_empty: WhenEmpty::Wait(Duration::from_secs(10)),
        ..Default::default()
    };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    let sb = pool.take().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stats = pool.stats();
    assert_eq!((stats.created, stats.creating, stats.ready), (1, 0, 0), "a served taker wants no more: {stats:?}");
    drop(sb);

    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    assert_eq!(pool.wait_ready(1, Duration::from_secs(10)), 1);
    std::thread::sleep(Duration::from_millis(200));
    let stats = pool.stats();
    assert_eq!((stats.created, stats.creating, stats.ready), (1, 0, 1), "a served wait wants no more: {stats:?}");
    // Taking that one makes the pool look at its demand again.
    let _sb = pool.take().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stats = pool.stats();
    assert_eq!((stats.created, stats.creating, stats.ready), (1, 0, 0), "{stats:?}");
}

#[test]
fn a_failed_creation_is_counted_reported_and_retried() {
    require_kvm!();
    // Failing fast: the taker gets the creation's error, and the next take creates.
    let config = PoolConfig { max_sandboxes: 1, ready_target: 0, when_empty: WhenEmpty::Fail, ..Default::default() };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    pool.inject_create_failures(1);
    let err = pool.take().unwrap_err();
    assert!(matches!(&err, Error::Vmm(e) if format!("{e:?}").contains("failure injected")), "{err:?}");
    let stats = pool.stats();
    assert_eq!((stats.create_failures, stats.created, stats.lent), (1, 0, 0), "{stats:?}");
    let mut sb = pool.take().unwrap();
    assert_eq!(sb.call("rt_i32", &[Value::I32(4)]).unwrap(), Value::I32(4));
    let stats = pool.stats();
    assert_eq!((stats.create_failures, stats.created, stats.lent), (1, 1, 1), "{stats:?}");
    drop(sb);

    // Waiting: the worker's creation fails, it tries again, and the taker is served.
    let config = PoolConfig { when_empty: WhenEmpty::Wait(Duration::from_secs(10)), ..config };
    let pool = SandboxPool::new(&test_builder(), &testguest(), config).unwrap();
    pool.inject_create_failures(2);
    let sb = pool.take().unwrap();
    assert!(!sb.is_poisoned());
    let stats = pool.stats();
    assert_eq!((stats.create_failures, stats.created), (2, 1), "{stats:?}");
}
