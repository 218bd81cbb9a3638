//! B.6 Host API misuse, concurrency, environment: rows 42-48.

use crate::common::hostile::*;
use crate::common::testguest;
use glint::{Error, LayoutError, SandboxBuilder, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the test guest's `busy(n)` returns.
fn busy(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
}

#[test]
fn row_42_kill_outside_a_call_is_a_no_op_and_never_cancels_a_later_call() {
    require_kvm!();
    let mut sb = sandbox();
    sb.set_call_timeout(Some(PATIENCE));
    let handle = sb.interrupt_handle();
    hostile(&mut sb, |sb| {
        // Before a call, after one, many times: no call runs, so nothing happens and nothing is
        // remembered for the next call.
        assert!(!handle.kill());
        assert_eq!(sb.call("rt_i32", &[Value::I32(1)]).unwrap(), Value::I32(1));
        assert!(!handle.kill());
        for _ in 0..10_000 {
            assert!(!handle.kill());
        }
        assert_eq!(sb.call("busy", &[Value::U64(1000)]).unwrap(), Value::U64(busy(1000)));
        assert!(!sb.is_poisoned());
        // A kill that lands ends only its own call: its signal, if it arrives late, is ignored by
        // the next call (the handler checks the call's generation).
        for round in 0..50u64 {
            assert!(matches!(call_and_kill(sb, "spin", &[]), Err(Error::Cancelled)), "round {round}");
            sb.reset().unwrap();
            assert_eq!(sb.call("busy", &[Value::U64(round)]).unwrap(), Value::U64(busy(round)), "round {round}");
        }
    });

    // A kill storm: three threads call kill() at random moments for 3 s while this thread makes
    // calls. Every call either returns its correct value or is Cancelled; nothing else.
    let storm = Duration::from_secs(3);
    let (ok, cancelled, landed) = hostile(&mut sb, |sb| {
        let killers: Vec<_> = (1..=3u64)
            .map(|seed| {
                let handle = handle.clone();
                thread::spawn(move || {
                    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let (start, mut landed) = (Instant::now(), 0u64);
                    while start.elapsed() < storm {
                        landed += u64::from(handle.kill());
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        thread::sleep(Duration::from_micros(rng % 1500));
                    }
                    landed
                })
            })
            .collect();
        let (mut ok, mut cancelled, mut i) = (0u64, 0u64, 0u64);
        while !killers.iter().all(JoinHandle::is_finished) {
            i += 1;
            let (result, expected) = if i % 2 == 0 {
                let n = 1000 + i % 5000;
                (sb.call("busy", &[Value::U64(n)]), Value::U64(busy(n)))
            } else {
                let a = (i % 1000) as i32;
                (sb.call("host_add", &[Value::I32(a), Value::I32(1)]), Value::I32(a + 1))
            };
            match result {
                Ok(v) => {
                    assert_eq!(v, expected, "call {i}");
                    ok += 1;
                }
                Err(Error::Cancelled) => {
                    cancelled += 1;
                    sb.reset().unwrap();
                }
                Err(e) => panic!("call {i}: only a value or Cancelled may come back, got {e}"),
            }
        }
        let landed: u64 = killers.into_iter().map(|k| k.join().unwrap()).sum();
        assert_eq!(sb.call("busy", &[Value::U64(77)]).unwrap(), Value::U64(busy(77)), "after the storm");
        (ok, cancelled, landed)
    });
    eprintln!("row 42: kill storm: {ok} calls returned, {cancelled} cancelled, {landed} kills found a call");
    assert!(ok > 0 && cancelled > 0, "both outcomes must occur: {ok} ok, {cancelled} cancelled");
    assert!(cancelled <= landed, "a call was cancelled without a kill landing");
}

#[test]
fn row_42_kill_spam_from_several_threads_lets_the_killed_call_return() {
    require_kvm!();
    let mut sb = sandbox();
    sb.set_call_timeout(Some(PATIENCE));
    let handle = sb.interrupt_handle();
    let stop = Arc::new(AtomicBool::new(false));
    let spammers: Vec<_> = (0..3)
        .map(|_| {
            let (h, stop) = (handle.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    h.kill();
                }
            })
        })
        .collect();
    let call = thread::spawn(move || sb.call("spin", &[]).map_err(|e| e.to_string()));
    let returned = wait_until(Duration::from_secs(10), || call.is_finished());
    stop.store(true, Ordering::Relaxed);
    for s in spammers {
        s.join().unwrap();
    }
    let result = call.join().unwrap();
    assert!(returned, "the killed call did not return within 10 s while kill() was called in a loop");
    assert_eq!(result, Err("guest call was cancelled".to_string()));
}

#[test]
fn row_43_kill_follows_a_moved_sandbox_and_handles_outlive_it_inertly() {
    require_kvm!();
    let mut sb = sandbox();
    sb.set_call_timeout(Some(PATIENCE));
    let handle = sb.interrupt_handle();
    let mut sb = beside_bystander(|| {
        // Moved between calls, killed on whichever thread runs it now.
        for hop in 0..3 {
            let h = handle.clone();
            sb = thread::spawn(move || {
                let killer = thread::spawn(move || assert!(wait_until(PATIENCE, || h.kill())));
                let r = sb.call("spin", &[]);
                killer.join().unwrap();
                assert!(matches!(r, Err(Error::Cancelled)), "hop {hop}: {r:?}");
                sb.reset().unwrap();
                assert_eq!(sb.call("rt_i32", &[Value::I32(hop)]).unwrap(), Value::I32(hop));
                sb
            })
            .join()
            .unwrap();
        }
        sb
    });
    assert_recovers(&mut sb);
    // The handle outlives the sandbox while other threads spam kill() during the drop, which
    // happens on yet another thread right after a killed call. After the drop no kill() finds
    // a call. (While kill() calls overlap, each holds the shared control block for an instant,
    // so is_dropped() turns true once they stop.)
    let (dropped, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    beside_bystander(|| {
        let spammers: Vec<_> = (0..3)
            .map(|_| {
                let (h, dropped, stop) = (handle.clone(), dropped.clone(), stop.clone());
                thread::spawn(move || {
                    let (mut landed, mut after_drop) = (0u64, 0u64);
                    while !stop.load(Ordering::SeqCst) {
                        let was_dropped = dropped.load(Ordering::SeqCst);
                        let killed = h.kill();
                        landed += u64::from(killed);
                        after_drop += u64::from(killed && was_dropped);
                        // Paced: unpaced kill() loops livelock the killed call (see
                        // row_42_kill_spam_from_several_threads_lets_the_killed_call_return).
                        thread::sleep(Duration::from_micros(20));
                    }
                    (landed, after_drop)
                })
            })
            .collect();
        let dropper = dropped.clone();
        thread::spawn(move || {
            let r = sb.call("spin", &[]);
            assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            drop(sb);
            dropper.store(true, Ordering::SeqCst);
        })
        .join()
        .unwrap();
        thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::SeqCst);
        let (mut landed, mut after_drop) = (0, 0);
        for s in spammers {
            let (n, a) = s.join().unwrap();
            landed += n;
            after_drop += a;
        }
        assert!(landed >= 1, "the spin call was killed by a spammer");
        assert_eq!(after_drop, 0, "kill() found a call after the sandbox was dropped");
    });
    assert!(handle.is_dropped());
    assert!(!handle.kill(), "a handle outliving its sandbox is inert");
}

#[test]
#[ignore = "inner part of row_45_ten_thousand_sandboxes_leak_no_fds_or_mappings (runs in a child process)"]
fn row_45_inner() {
    if !in_child() {
        return;
    }
    require_kvm!();
    let image = testguest();
    // Small sandboxes: the cost per sandbox is mostly proportional to its memory.
    let builder = builder().memory_mib(4).input_buffer_size(256 << 10).output_buffer_size(256 << 10);
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    // The first sandboxes open /dev/kvm once and start the deadline watchdog thread.
    for _ in 0..2 {
        let mut sb = builder.build(&image).unwrap().init().unwrap();
        assert_eq!(sb.call("rt_i32", &[Value::I32(1)]).unwrap(), Value::I32(1));
        drop(sb);
        drop(builder.build(&image).unwrap());
    }
    let (fds_before, maps_before) = (fds(), maps());
    let start = Instant::now();
    for i in 0..10_000u32 {
        let sb = builder.build(&image).unwrap();
        if i % 50 == 0 {
            let mut sb = sb.init().unwrap();
            assert_eq!(sb.call("rt_u32", &[Value::U32(i)]).unwrap(), Value::U32(i));
        }
    }
    let (fds_after, maps_after) = (fds(), maps());
    eprintln!(
        "row 45: 10000 sandboxes (200 initialised) in {:?}; fds {fds_before} -> {fds_after}, maps {maps_before} -> {maps_after}",
        start.elapsed()
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert_eq!(maps_after, maps_before, "mappings leaked");
}

#[test]
fn row_45_ten_thousand_sandboxes_leak_no_fds_or_mappings() {
    require_kvm!();
    let (passed, output) = beside_bystander(|| run_child("host_api::row_45_inner", Duration::from_secs(300)));
    for line in output.lines().filter(|l| l.starts_with("row 45")) {
        eprintln!("{line}");
    }
    assert!(passed, "{output}");
}

/// Blocks glint's kick signal (SIGRTMIN + 2) on the calling thread, as an embedder might.
fn block_kick_signal() {
    // SAFETY: plain libc calls on a local, initialised signal set; only this thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGRTMIN() + 2);
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()), 0);
    }
}

/// A spinning call on a thread that blocked the kick signal before (`first_call: false`) or
/// after (`true`) its first call must still time out and be killable.
fn spin_with_the_kick_signal_blocked(call_first: bool) {
    thread::spawn(move || {
        if !call_first {
            block_kick_signal();
        }
        // Initialisation is this thread's first call.
        let mut sb = sandbox();
        if call_first {
            assert_eq!(sb.call("rt_i32", &[Value::I32(1)]).unwrap(), Value::I32(1));
            block_kick_signal();
        }
        sb.set_call_timeout(Some(Duration::from_millis(200)));
        let r = sb.call("spin", &[]);
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        sb.reset().unwrap();
        sb.set_call_timeout(Some(PATIENCE));
        assert!(matches!(call_and_kill(&mut sb, "spin", &[]), Err(Error::Cancelled)));
    })
    .join()
    .unwrap();
}

#[test]
#[ignore = "inner part of row_46_* (runs in a child process)"]
fn row_46_inner_blocked_before_the_first_call() {
    if in_child() {
        require_kvm!();
        spin_with_the_kick_signal_blocked(false);
    }
}

#[test]
#[ignore = "inner part of row_46_* (runs in a child process)"]
fn row_46_inner_blocked_after_the_first_call() {
    if in_child() {
        require_kvm!();
        spin_with_the_kick_signal_blocked(true);
    }
}

#[test]
fn row_46_a_thread_that_blocked_the_kick_signal_is_still_interruptible() {
    require_kvm!();
    // glint unblocks SIGRTMIN + 2 on a thread when that thread starts its first call.
    let (passed, output) =
        beside_bystander(|| run_child("host_api::row_46_inner_blocked_before_the_first_call", Duration::from_secs(60)));
    assert!(passed, "{output}");
}

#[test]
fn row_46_a_thread_that_blocks_the_kick_signal_after_its_first_call_is_still_interruptible() {
    require_kvm!();
    let (passed, output) =
        beside_bystander(|| run_child("host_api::row_46_inner_blocked_after_the_first_call", Duration::from_secs(20)));
    assert!(passed, "{output}");
}

#[test]
fn row_47_invalid_configuration_is_refused_naming_the_setting() {
    require_kvm!();
    let mib = 1u64 << 20;
    let cases: [(&str, SandboxBuilder); 14] = [
        ("memory size", builder().memory_size(0)),
        ("memory size", builder().memory_size(16 * mib + 1)),
        ("memory size", builder().memory_mib(257)),
        ("memory size", builder().memory_mib(u64::MAX)),
        ("input buffer size", builder().input_buffer_size(0)),
        ("input buffer size", builder().input_buffer_size(4095)),
        ("output buffer size", builder().output_buffer_size(100)),
        ("output buffer size", builder().output_buffer_size(0)),
        ("stack size", builder().stack_size(0)),
        ("stack size", builder().stack_size(12_345)),
        // Buffers or stack larger than the memory, or sums that overflow.
        ("memory size", builder().input_buffer_size(32 * mib)),
        ("memory size", builder().output_buffer_size(16 * mib)),
        ("memory size", builder().stack_size(16 * mib)),
        ("memory size", builder().input_buffer_size(!0xfff)),
    ];
    beside_bystander(|| {
        for (i, (what, b)) in cases.into_iter().enumerate() {
            match b.build(&testguest()) {
                Err(Error::Layout(e)) => {
                    let setting = match &e {
                        LayoutError::NotPageMultiple { what, .. } => *what,
                        LayoutError::TooLarge { .. } | LayoutError::DoesNotFit { .. } => "memory size",
                        other => panic!("case {i}: {other:?}"),
                    };
                    assert_eq!(setting, what, "case {i}: {e}");
                    assert!(e.to_string().contains(what), "the message names the setting: {e}");
                }
                other => panic!("case {i} ({what}): {other:?}"),
            }
        }
    });
    // The limits stay usable at their edges.
    let mut sb = builder().memory_mib(256).build(&testguest()).unwrap().init().unwrap();
    assert_recovers(&mut sb);
}
