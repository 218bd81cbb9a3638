//! Criterion benchmarks of glint's paths, each group next to the bare-KVM floor measured in the
//! same run (`glint_bench::floor`: KVM driven directly, no glint code). Read results as ratios to the
//! floor; absolute figures drift on shared machines.
//!
//! Run: `cargo bench --bench calls` (add `-- --save-baseline NAME` to compare runs, or a filter
//! such as `-- restore`). `glint bench` measures the same paths in under a minute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use criterion::{criterion_group, criterion_main, Criterion};
use glint::{GuestImage, PoolConfig, SandboxBuilder, SandboxPool};
use glint_bench::cold;
use glint_bench::floor::{BareVm, FloorHost};
use std::time::{Duration, Instant};

fn image() -> GuestImage {
    GuestImage::from_file(glint_guest_artifacts::BENCHGUEST).unwrap()
}

fn builder() -> SandboxBuilder {
    SandboxBuilder::new().host_fn("nop", || ())
}

/// The smallest buffers and stack, so the 4 MiB sandbox is mostly heap.
fn small(b: SandboxBuilder, mib: u64) -> SandboxBuilder {
    b.input_buffer_size(64 << 10).output_buffer_size(64 << 10).stack_size(64 << 10).memory_mib(mib)
}

fn floor(c: &mut Criterion) {
    let host = FloorHost::new().unwrap();
    let mut g = c.benchmark_group("floor");
    g.sample_size(40).measurement_time(Duration::from_secs(4));
    g.bench_function("create_to_first_exit", |b| b.iter_with_large_drop(|| BareVm::new(&host, false).unwrap()));
    let mut vm = BareVm::new(&host, false).unwrap();
    g.bench_function("round_trip", |b| b.iter(|| vm.round_trip().unwrap()));
    let mut dirty = BareVm::new(&host, true).unwrap();
    g.bench_function("dirty_log_restore_4_pages", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                dirty.round_trip().unwrap();
                let t = Instant::now();
                assert_eq!(dirty.restore().unwrap(), glint_bench::floor::DIRTIED_PAGES);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn cold(c: &mut Criterion) {
    let image = image();
    let builder = builder();
    let mut g = c.benchmark_group("cold");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("new_vm_init_first_call", |b| {
        b.iter_with_large_drop(|| {
            let mut sb = builder.build(&image).unwrap().init().unwrap();
            let add = sb.typed_fn::<(i32, i32), i32>("add").unwrap();
            assert_eq!(add.call(&mut sb, (2, 3)).unwrap(), 5);
            sb
        })
    });
    // Teardown not deferred: each sandbox (and each floor VM) dropped right after it was timed,
    // so the next creation runs in the shadow of its teardown.
    let host = FloorHost::new().unwrap();
    let not_deferred = |b: &mut criterion::Bencher<'_>, make: &mut dyn FnMut() -> Box<dyn std::any::Any>| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let made = make();
                total += t.elapsed();
                drop(made);
            }
            total
        })
    };
    g.bench_function("floor_create_to_first_exit_not_deferred", |b| {
        not_deferred(b, &mut || Box::new(BareVm::new(&host, false).unwrap()))
    });
    g.bench_function("new_vm_init_first_call_not_deferred", |b| {
        not_deferred(b, &mut || Box::new(cold::cold_start(&builder, &image).unwrap()))
    });
    // Under churn: another thread creates and drops VMs all along.
    cold::under_churn(&host, || {
        g.bench_function("floor_create_to_first_exit_under_churn", |b| {
            not_deferred(b, &mut || Box::new(BareVm::new(&host, false).unwrap()))
        });
        g.bench_function("new_vm_init_first_call_under_churn", |b| {
            not_deferred(b, &mut || Box::new(cold::cold_start(&builder, &image).unwrap()))
        });
        Ok(())
    })
    .unwrap();
    // From a snapshot file: load (read, check, map), new VM, first call; no guest init.
    let file = cold::SnapshotFile::save(&glint::Template::new(&builder, &image).unwrap()).unwrap();
    g.bench_function("from_snapshot_file_first_call", |b| {
        not_deferred(b, &mut || Box::new(cold::snapshot_start(file.path(), &builder, &image).unwrap()))
    });
    let pool =
        SandboxPool::new(&builder, &image, PoolConfig { max_sandboxes: 1, ready_target: 1, ..Default::default() })
            .unwrap();
    g.bench_function("pool_take_after_drain", |b| {
        // A pool of one: each take after the previous sandbox was restored and given back.
        b.iter(|| drop(pool.take().unwrap()))
    });
    g.finish();
}

fn warm_call(c: &mut Criterion) {
    let mut sb = builder().build(&image()).unwrap().init().unwrap();
    let add = sb.typed_fn::<(i32, i32), i32>("add").unwrap();
    let echo = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("echo").unwrap();
    let kib = vec![7u8; 1 << 10];
    let mib = vec![7u8; 1 << 20];
    let host = FloorHost::new().unwrap();
    let mut vm = BareVm::new(&host, false).unwrap();
    let mut g = c.benchmark_group("warm_call");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("floor_round_trip", |b| b.iter(|| vm.round_trip().unwrap()));
    g.bench_function("add", |b| b.iter(|| add.call(&mut sb, (2, 3)).unwrap()));
    g.bench_function("echo_1kib", |b| b.iter(|| echo.call(&mut sb, (kib.clone(),)).unwrap()));
    g.bench_function("echo_1mib", |b| b.iter(|| echo.call(&mut sb, (mib.clone(),)).unwrap()));
    g.finish();
}

fn host_call(c: &mut Criterion) {
    let mut sb = builder().build(&image()).unwrap().init().unwrap();
    let calls = sb.typed_fn::<(u32,), u32>("host_calls").unwrap();
    let host = FloorHost::new().unwrap();
    let mut vm = BareVm::new(&host, false).unwrap();
    let mut g = c.benchmark_group("host_call");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("floor_round_trip", |b| b.iter(|| vm.round_trip().unwrap()));
    for n in [0u32, 1, 100] {
        g.bench_function(format!("guest_call_making_{n}"), |b| {
            b.iter(|| assert_eq!(calls.call(&mut sb, (n,)).unwrap(), n))
        });
    }
    g.finish();
}

fn restore(c: &mut Criterion) {
    let image = image();
    let host = FloorHost::new().unwrap();
    let mut bare = BareVm::new(&host, true).unwrap();
    let mut g = c.benchmark_group("restore");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("floor_dirty_log_restore_4_pages", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bare.round_trip().unwrap();
                let t = Instant::now();
                bare.restore().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    for (label, mib) in [("4mib", 4u64), ("64mib", 64)] {
        let mut sb = small(builder(), mib).build(&image).unwrap().init().unwrap();
        let dirty = sb.typed_fn::<(u32,), u32>("dirty").unwrap();
        for pages in [4u32, 256] {
            g.bench_function(format!("{label}_dirty_{pages}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        assert_eq!(dirty.call(&mut sb, (pages,)).unwrap(), pages);
                        let t = Instant::now();
                        sb.reset().unwrap();
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn fresh_call(c: &mut Criterion) {
    let image = image();
    let builder = builder();
    let pool =
        SandboxPool::new(&builder, &image, PoolConfig { max_sandboxes: 4, ready_target: 4, ..Default::default() })
            .unwrap();
    pool.wait_ready(4, Duration::from_secs(10));
    let add = pool.typed_fn::<(i32, i32), i32>("add").unwrap();
    let host = FloorHost::new().unwrap();
    let mut vm = BareVm::new(&host, false).unwrap();
    let mut g = c.benchmark_group("fresh_call");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("floor_round_trip", |b| b.iter(|| vm.round_trip().unwrap()));
    g.bench_function("take_add_give_back", |b| b.iter(|| pool.call_typed(&add, (2, 3)).unwrap()));
    // Time per call when two threads share the pool (the inverse of throughput): compare with
    // the single-thread figure for scaling.
    g.bench_function("two_threads_time_per_call", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for share in [iters / 2, iters - iters / 2] {
                    let (pool, add) = (&pool, &add);
                    s.spawn(move || {
                        for _ in 0..share {
                            pool.call_typed(add, (2, 3)).unwrap();
                        }
                    });
                }
            });
            t.elapsed()
        })
    });
    g.finish();
}

/// Time from `InterruptHandle::kill` to the spinning call returning `Cancelled`.
fn kill(c: &mut Criterion) {
    let mut sb = builder().call_timeout(None).build(&image()).unwrap().init().unwrap();
    let handle = sb.interrupt_handle();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Instant>();
    let worker = std::thread::spawn(move || {
        let spin = sb.typed_fn::<(), u64>("spin").unwrap();
        while go_rx.recv().is_ok() {
            let r = spin.call(&mut sb, ());
            let returned = Instant::now();
            assert!(matches!(r, Err(glint::Error::Cancelled)), "{r:?}");
            sb.reset().unwrap();
            done_tx.send(returned).unwrap();
        }
    });
    let host = FloorHost::new().unwrap();
    let mut vm = BareVm::new(&host, false).unwrap();
    let mut g = c.benchmark_group("kill");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.bench_function("floor_round_trip", |b| b.iter(|| vm.round_trip().unwrap()));
    g.bench_function("kill_to_return", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                go_tx.send(()).unwrap();
                let killed = loop {
                    let t = Instant::now();
                    if handle.kill() {
                        break t;
                    }
                    std::thread::yield_now();
                };
                total += done_rx.recv().unwrap().duration_since(killed);
            }
            total
        })
    });
    g.finish();
    drop(go_tx);
    worker.join().unwrap();
}

criterion_group!(benches, floor, cold, warm_call, host_call, restore, fresh_call, kill);
criterion_main!(benches);
