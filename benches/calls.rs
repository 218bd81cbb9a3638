//! Criterion benchmarks of glint's call paths next to the bare-KVM floor measured in the same run.
//!
//! `floor/*` drives KVM directly with kvm-ioctls (no glint code): a CPL3 guest whose code is
//! `out 0x10, al; jmp back`, the cheapest exit a CPL3 guest can make. Compare `glint/*` against
//! it as ratios; absolute numbers drift on shared machines.
//!
//! Run: `cargo bench --bench calls` (add `-- --save-baseline NAME` to compare runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use criterion::{criterion_group, criterion_main, Criterion};
use glint::{GuestImage, SandboxBuilder};
use std::time::{Duration, Instant};

mod floor {
    //! A bare KVM VM reaching CPL3 with the fewest structures that allow it: one 2 MiB user page,
    //! a GDT, a TSS whose I/O bitmap admits port 0x10, and an IDT-less vCPU.
    use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, KVM_MEM_LOG_DIRTY_PAGES};
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

    const MEM: usize = 2 << 20;
    const PORT: u16 = 0x10;

    pub struct BareVm {
        pub vcpu: VcpuFd,
        vm: VmFd,
        mem: *mut u8,
        /// A copy of memory right after the first exit, for the restore floor.
        snapshot: Vec<u8>,
    }

    impl Drop for BareVm {
        fn drop(&mut self) {
            // SAFETY: `mem` is the MEM-byte mapping made in `BareVm::new`, used by nothing else
            // once the VM (dropped with `self`) is gone; the fields drop after this body, but KVM
            // keeps its own reference to the pages until the VM fd closes, so unmapping first is
            // what every VMM does at teardown.
            unsafe { libc::munmap(self.mem.cast(), MEM) };
        }
    }

    fn put(mem: *mut u8, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= MEM);
        // SAFETY: bounds checked above; `mem` is a live MEM-byte mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.add(at), bytes.len()) };
    }

    impl BareVm {
        /// Creates the VM and runs it to its first exit. With `dirty`, every round trip writes
        /// one byte to each of four pages first, and the memory slot logs dirty pages.
        pub fn new(kvm: &Kvm, cpuid: &CpuId, dirty: bool) -> BareVm {
            let vm = kvm.create_vm().unwrap();
            // SAFETY: anonymous private mapping, no address hint; checked against MAP_FAILED.
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    MEM,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(mem, libc::MAP_FAILED);
            let mem = mem.cast::<u8>();
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: if dirty { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
                guest_phys_addr: 0,
                memory_size: MEM as u64,
                userspace_addr: mem as u64,
            };
            // SAFETY: `mem` is a live MEM-byte mapping owned by the returned BareVm, which
            // unmaps it only when dropped.
            unsafe { vm.set_user_memory_region(region).unwrap() };
            // Page tables: one 2 MiB user page at 0.
            put(mem, 0x1000, &(0x2000u64 | 7).to_le_bytes());
            put(mem, 0x2000, &(0x3000u64 | 7).to_le_bytes());
            put(mem, 0x3000, &(0x87u64).to_le_bytes());
            // GDT: null, user data (0x18), user code (0x20), TSS (0x28).
            put(mem, 0x4018, &0x00cf_f300_0000_ffffu64.to_le_bytes());
            put(mem, 0x4020, &0x00af_fb00_0000_ffffu64.to_le_bytes());
            // TSS at 0x5000: I/O bitmap at 104 admitting only PORT, limit 104 + 32.
            put(mem, 0x5000 + 102, &104u16.to_le_bytes());
            let mut bitmap = [0xffu8; 33];
            bitmap[usize::from(PORT) / 8] &= !(1 << (PORT % 8));
            put(mem, 0x5000 + 104, &bitmap);
            // Code at 0x6000: out 0x10, al; jmp -4.
            put(mem, 0x6000, &[0xe6, PORT as u8, 0xeb, 0xfc]);
            // Code at 0x7000: four `mov [page], al` (88 04 25 disp32), out 0x10, al; jmp back.
            let mut code = Vec::new();
            for page in 0..4u32 {
                code.extend_from_slice(&[0x88, 0x04, 0x25]);
                code.extend_from_slice(&(0x10_0000 + page * 0x1000).to_le_bytes());
            }
            code.extend_from_slice(&[0xe6, PORT as u8, 0xeb]);
            code.push((-(code.len() as i8 + 1)) as u8);
            put(mem, 0x7000, &code);

            let vcpu = vm.create_vcpu(0).unwrap();
            vcpu.set_cpuid2(cpuid).unwrap();
            let mut sregs = vcpu.get_sregs().unwrap();
            let data = kvm_segment {
                limit: 0xffff_ffff,
                selector: 0x1b,
                type_: 3,
                present: 1,
                dpl: 3,
                db: 1,
                s: 1,
                g: 1,
                ..Default::default()
            };
            sregs.cs = kvm_segment { selector: 0x23, type_: 11, db: 0, l: 1, ..data };
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.tr = kvm_segment {
                base: 0x5000,
                limit: 104 + 32,
                selector: 0x28,
                type_: 11,
                present: 1,
                ..Default::default()
            };
            sregs.gdt.base = 0x4000;
            sregs.gdt.limit = 0x37;
            sregs.cr0 = 0x8001_0033;
            sregs.cr3 = 0x1000;
            sregs.cr4 = 0x20;
            sregs.efer = 0x500;
            vcpu.set_sregs(&sregs).unwrap();
            let rip = if dirty { 0x7000 } else { 0x6000 };
            vcpu.set_regs(&kvm_regs { rip, rsp: 0x10_0000, rflags: 2, ..Default::default() }).unwrap();
            let mut vm = BareVm { vcpu, vm, mem, snapshot: Vec::new() };
            vm.round_trip();
            if dirty {
                // SAFETY: `mem` is a live MEM-byte mapping; the vCPU is stopped.
                vm.snapshot = unsafe { std::slice::from_raw_parts(mem, MEM) }.to_vec();
                vm.vm.get_dirty_log(0, MEM).unwrap();
            }
            let _ = kvm;
            vm
        }

        /// The cheapest restore KVM allows: read the dirty log, copy the dirtied pages back.
        pub fn restore(&mut self) -> usize {
            let bitmap = self.vm.get_dirty_log(0, MEM).unwrap();
            let mut pages = 0;
            for (w, bits) in bitmap.iter().enumerate() {
                for b in 0..64 {
                    if bits & (1 << b) != 0 {
                        let at = (w * 64 + b) * 4096;
                        put(self.mem, at, &self.snapshot[at..at + 4096]);
                        pages += 1;
                    }
                }
            }
            pages
        }

        /// One entry and exit.
        pub fn round_trip(&mut self) {
            match self.vcpu.run().unwrap() {
                VcpuExit::IoOut(PORT, _) => {}
                other => panic!("bare VM exited with {other:?}"),
            }
        }
    }
}

fn benches(c: &mut Criterion) {
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    let image = GuestImage::from_file(glint_guest_artifacts::HELLO).unwrap();
    let test_image = GuestImage::from_file(glint_guest_artifacts::TESTGUEST).unwrap();
    let builder = SandboxBuilder::new().host_fn("greeting", |n: String| n);
    let test_builder = SandboxBuilder::new().host_fn("add", |a: i32, b: i32| a.wrapping_add(b));

    let mut g = c.benchmark_group("calls");
    g.measurement_time(Duration::from_secs(4));
    let mut bare = floor::BareVm::new(&kvm, &cpuid, false);
    g.bench_function("floor/round_trip", |b| b.iter(|| bare.round_trip()));

    let mut sb = builder.build(&image).unwrap().init().unwrap();
    let add = sb.typed_fn::<(i32, i32), i32>("add").unwrap();
    g.bench_function("glint/warm_call_add", |b| b.iter(|| add.call(&mut sb, (2, 3)).unwrap()));

    let mut tsb = test_builder.build(&test_image).unwrap().init().unwrap();
    let host_add = tsb.typed_fn::<(i32, i32), i32>("host_add").unwrap();
    g.bench_function("glint/call_with_one_host_call", |b| b.iter(|| host_add.call(&mut tsb, (2, 3)).unwrap()));

    let echo = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("echo").unwrap();
    let kib = vec![7u8; 1024];
    g.bench_function("glint/warm_call_echo_1kib", |b| b.iter(|| echo.call(&mut sb, (kib.clone(),)).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("cold");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("floor/create_to_first_exit", |b| {
        b.iter_with_large_drop(|| floor::BareVm::new(&kvm, &cpuid, false))
    });
    g.bench_function("glint/create_and_init", |b| {
        b.iter_with_large_drop(|| builder.build(&image).unwrap().init().unwrap())
    });
    g.bench_function("glint/create_init_first_call", |b| {
        b.iter_with_large_drop(|| {
            let mut sb = builder.build(&image).unwrap().init().unwrap();
            assert_eq!(add.call(&mut sb, (2, 3)).unwrap(), 5);
            sb
        })
    });
    g.finish();
}

/// Restore after the guest dirtied 4 or 256 pages, in a small and a 64 MiB sandbox, next to the
/// bare floor (dirty log plus copying the pages back).
fn restore(c: &mut Criterion) {
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    let image = GuestImage::from_file(glint_guest_artifacts::BENCHGUEST).unwrap();
    let mut g = c.benchmark_group("restore");
    g.measurement_time(Duration::from_secs(4));

    let mut bare = floor::BareVm::new(&kvm, &cpuid, true);
    g.bench_function("floor/dirty_log_4_pages", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bare.round_trip();
                let t = Instant::now();
                assert_eq!(bare.restore(), 4);
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("floor/round_trip", |b| b.iter(|| bare.round_trip()));

    for (label, mib) in [("4mib", 4u64), ("64mib", 64)] {
        let mut sb = small(SandboxBuilder::new()).memory_mib(mib).build(&image).unwrap().init().unwrap();
        let dirty = sb.typed_fn::<(u32,), u32>("dirty").unwrap();
        for pages in [4u32, 256] {
            g.bench_function(format!("glint/{label}_dirty_{pages}"), |b| {
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

/// The smallest buffers and stack, so the 4 MiB sandbox is mostly heap.
fn small(b: SandboxBuilder) -> SandboxBuilder {
    b.input_buffer_size(64 << 10).output_buffer_size(64 << 10).stack_size(64 << 10)
}

/// Time from `InterruptHandle::kill` to the spinning call returning `Cancelled`.
fn kill(c: &mut Criterion) {
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    let image = GuestImage::from_file(glint_guest_artifacts::BENCHGUEST).unwrap();
    let mut sb = SandboxBuilder::new().call_timeout(None).build(&image).unwrap().init().unwrap();
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
    let mut g = c.benchmark_group("kill");
    g.sample_size(50).measurement_time(Duration::from_secs(6));
    let mut bare = floor::BareVm::new(&kvm, &cpuid, false);
    g.bench_function("floor/round_trip", |b| b.iter(|| bare.round_trip()));
    g.bench_function("glint/kill_to_return", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                go_tx.send(()).unwrap();
                // Wait until the call is running, then time from the kill that stops it.
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

criterion_group!(calls, benches, restore, kill);
criterion_main!(calls);
