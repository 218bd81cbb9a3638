//! Quick measurements of glint's paths next to the bare-KVM floor, taken in one run: what
//! `glint bench` prints. The criterion benchmarks (`cargo bench`) measure the same paths more
//! carefully; this is the under-a-minute version a user runs on their own machine.
//!
//! The guest must export `add(i32, i32) -> i32`. Paths whose function it lacks are skipped:
//! `host_calls(u32) -> u32` (calls the host function `nop` that many times), `dirty(u32) -> u32`
//! (writes one byte to that many pages of a 1 MiB area) and `spin() -> u64` (never returns).
//! The `benchguest` in `guest/bins/test` exports all of them.

#![deny(missing_docs)]

pub mod cold;
pub mod floor;

use floor::{BareVm, FloorError, FloorHost};
use glint::{GuestImage, PoolConfig, SandboxBuilder, SandboxPool, WhenEmpty};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Why a measurement could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// glint itself failed (building, calling, restoring a sandbox).
    #[error(transparent)]
    Glint(#[from] glint::Error),
    /// The bare-KVM floor failed.
    #[error("the bare-KVM floor failed")]
    Floor(#[from] FloorError),
    /// A measurement saw something other than what it measures.
    #[error("{0}")]
    Unexpected(String),
}

/// Medians in microseconds (and derived figures) of one `glint bench` run. Serialised with the
/// keys `glint bench --json` prints, which scripts read: they are a contract.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Bare KVM: create a VM and run it to its first CPL3 exit.
    pub floor_cold_us: f64,
    /// Bare KVM: one CPL3 entry/exit round trip.
    pub floor_call_us: f64,
    /// Bare KVM: dirty log plus copying back 4 dirtied pages.
    pub floor_restore_us: f64,
    /// New VM, initialise the guest, first call of `add`; each sandbox dropped right after it was
    /// timed, so the next creation runs in the shadow of its teardown (nothing deferred).
    pub cold_start_us: f64,
    /// A new sandbox from the pool's copy-on-write template, no guest code run.
    pub sandbox_from_template_us: f64,
    /// A warm call of `add`.
    pub warm_call_us: f64,
    /// One host call, from the difference between 100 and 0 host calls per guest call.
    pub host_call_us: Option<f64>,
    /// Restore after 4 dirtied pages, smallest sandbox (4 MiB).
    pub restore_1mib_us: Option<f64>,
    /// Restore after 4 dirtied pages, 64 MiB sandbox.
    pub restore_64mib_us: Option<f64>,
    /// Restore after 256 dirtied pages, smallest sandbox.
    #[serde(rename = "restore_1mib_256_pages_us")]
    pub restore_1mib_256_us: Option<f64>,
    /// Restore after 256 dirtied pages, 64 MiB sandbox.
    #[serde(rename = "restore_64mib_256_pages_us")]
    pub restore_64mib_256_us: Option<f64>,
    /// Pool take, `add`, give back (restore included), one thread.
    pub fresh_call_us: f64,
    /// Fresh calls per second on one thread.
    #[serde(rename = "fresh_calls_per_sec_1_thread")]
    pub fresh_calls_per_sec_1: f64,
    /// Fresh calls per second on two threads.
    #[serde(rename = "fresh_calls_per_sec_2_threads")]
    pub fresh_calls_per_sec_2: f64,
    /// From `InterruptHandle::kill` to the spinning call returning.
    pub kill_us: Option<f64>,
    /// Ready sandboxes per GiB of host memory (process and kernel, from MemAvailable).
    pub ready_sandboxes_per_gib: Option<f64>,
    /// Private (unshared) process memory per ready sandbox, in KiB.
    pub private_kib_per_sandbox: Option<f64>,
    /// Bare KVM: create a VM and run it to its first exit, each dropped right after it was timed
    /// (the floor of `cold_start_us`'s method; `floor_cold_us` defers the teardowns).
    pub floor_cold_not_deferred_us: f64,
    /// As `cold_start_us`, with every teardown deferred until all samples were taken.
    pub cold_start_deferred_us: f64,
    /// As `cold_start_us` while another thread creates and drops VMs continuously.
    pub cold_start_churn_us: f64,
    /// As `floor_cold_not_deferred_us` under the same churn.
    pub floor_cold_churn_us: f64,
    /// The largest `cold_start_us` over the CPUs the process may run on, the measuring thread
    /// pinned to each in turn.
    pub cold_start_worst_cpu_us: f64,
    /// The largest `floor_cold_not_deferred_us` over the same CPUs.
    pub floor_cold_worst_cpu_us: f64,
    /// `cold_start_us` per CPU (keys: CPU numbers).
    pub cold_start_by_cpu_us: std::collections::BTreeMap<usize, f64>,
    /// `floor_cold_not_deferred_us` per CPU.
    pub floor_cold_by_cpu_us: std::collections::BTreeMap<usize, f64>,
    /// The guest's init alone (`UninitSandbox::init`: its first entry, setup, export table).
    pub init_us: f64,
    /// From a snapshot file to the first `add`'s result with a new VM: load (read, check, map),
    /// instantiate, call.
    pub snapshot_start_us: f64,
    /// `Template::load` of that file alone: read it, check its checksum and contents, map its
    /// pages (the part of `snapshot_start_us` before the new VM).
    pub snapshot_load_us: f64,
    /// A new `glint run --snapshot FILE add 2 3` process, spawn to exit (`null` when the bench
    /// does not know where the `glint` binary is).
    pub process_snapshot_start_us: Option<f64>,
    /// The same binary started as a new process that exits at once (`glint --version`), spawn to
    /// exit: the floor of `process_snapshot_start_us` on this machine.
    pub floor_process_us: Option<f64>,
    /// Size of that snapshot file, in KiB (only non-zero pages are stored).
    pub snapshot_file_kib: f64,
    /// Sandboxes a second the pool creates while another thread creates and drops VMs, its worker
    /// pinned to its worst CPU.
    pub pool_refill_per_sec: f64,
    /// `pool_refill_per_sec` per CPU.
    pub pool_refill_by_cpu_per_sec: std::collections::BTreeMap<usize, f64>,
    /// Warm call of `echo` with a 1 MiB byte string (`null` if the guest has no `echo`).
    pub echo_1mib_us: Option<f64>,
    /// Copying 1 MiB from one host buffer to another, in the same run.
    pub memcpy_1mib_us: f64,
}

/// How long `run` spends.
#[derive(Debug, Clone)]
pub struct Options {
    /// Samples per measurement.
    pub samples: usize,
    /// Ready sandboxes created for the density figure (0: skip).
    pub density_sandboxes: usize,
    /// The `glint` binary, for `process_snapshot_start_us` (`None`: skip it).
    pub glint_exe: Option<std::path::PathBuf>,
    /// Sandboxes the pool fills per refill measurement.
    pub refill_sandboxes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { samples: 41, density_sandboxes: 200, glint_exe: None, refill_sandboxes: 64 }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median over `samples` batches of `per` runs of `f`, per run, in microseconds.
fn per_run(samples: usize, per: usize, mut f: impl FnMut() -> Result<(), Error>) -> Result<f64, Error> {
    let mut xs = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..per {
            f()?;
        }
        xs.push(us(t.elapsed()) / per as f64);
    }
    Ok(median(xs))
}

/// Median of `samples` timings of `make`, dropping what it made only after the last sample:
/// tearing a VM down is done off the request path (and on kvm_pvm it slows down a creation that
/// overlaps it), so creations are timed back to back, as a pool does them.
fn timed_creation<T>(samples: usize, mut make: impl FnMut() -> Result<T, Error>) -> Result<f64, Error> {
    let mut made = Vec::with_capacity(samples);
    let mut xs = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        made.push(make()?);
        xs.push(us(t.elapsed()));
    }
    drop(made);
    Ok(median(xs))
}

/// Median of `samples` timings of the part of `f` it reports back.
fn timed(samples: usize, mut f: impl FnMut() -> Result<Duration, Error>) -> Result<f64, Error> {
    let xs = (0..samples).map(|_| f().map(us)).collect::<Result<Vec<_>, _>>()?;
    Ok(median(xs))
}

fn has(sandbox: &glint::Sandbox, name: &str) -> bool {
    sandbox.signature(name).is_some()
}

/// Bytes of memory the system has available (`MemAvailable`), and of this process's private
/// pages (`Private_Clean + Private_Dirty` of smaps_rollup).
fn memory() -> Option<(u64, u64)> {
    let field = |text: &str, name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let private = field(&smaps, "Private_Clean:")? + field(&smaps, "Private_Dirty:")?;
    Some((field(&meminfo, "MemAvailable:")?, private))
}

/// Runs every measurement once. Takes well under a minute with the default options.
///
/// # Errors
/// The guest lacks `add(i32, i32) -> i32`, or creating a VM or a call failed.
#[allow(clippy::field_reassign_with_default, reason = "measurements fill the report one by one, in order")]
pub fn run(image: &GuestImage, options: &Options) -> Result<Report, Error> {
    let n = options.samples.max(3);
    let host = FloorHost::new()?;
    let builder = SandboxBuilder::new().host_fn("nop", || ()).host_fn("greeting", |s: String| s);
    let mut r = Report::default();

    // Floor.
    r.floor_cold_us = timed_creation(n, || BareVm::new(&host, false).map_err(Error::from))?;
    let mut bare = BareVm::new(&host, false)?;
    r.floor_call_us = per_run(n, 50, || bare.round_trip().map_err(Error::from))?;
    let mut dirty_bare = BareVm::new(&host, true)?;
    r.floor_restore_us = timed(n * 5, || {
        dirty_bare.round_trip()?;
        let t = Instant::now();
        dirty_bare.restore()?;
        Ok(t.elapsed())
    })?;

    // Cold start and warm calls.
    cold_starts(&mut r, &host, &builder, image, n, options)?;
    let mut sb = builder.build(image)?.init()?;
    let add = sb.typed_fn::<(i32, i32), i32>("add")?;
    r.warm_call_us = per_run(n, 50, || add.call(&mut sb, (2, 3)).map(drop).map_err(Error::from))?;
    if has(&sb, "echo") {
        // The argument borrowed: the host encodes it straight into guest memory.
        let mib = vec![7u8; 1 << 20];
        let echo = sb.typed_fn::<(&[u8],), Vec<u8>>("echo")?;
        let mut back = Vec::new();
        r.echo_1mib_us = Some(per_run(n, 4, || {
            back = echo.call(&mut sb, (&mib[..],))?;
            Ok(())
        })?);
        if back != mib {
            return Err(Error::Unexpected("echo of 1 MiB returned something else".into()));
        }
        let mut dst = vec![0u8; 1 << 20];
        r.memcpy_1mib_us = per_run(n, 20, || {
            dst.copy_from_slice(std::hint::black_box(&mib));
            std::hint::black_box(&mut dst);
            Ok(())
        })?;
    }
    if has(&sb, "host_calls") {
        let hc = sb.typed_fn::<(u32,), u32>("host_calls")?;
        let zero = per_run(n, 10, || hc.call(&mut sb, (0,)).map(drop).map_err(Error::from))?;
        let hundred = per_run(n, 2, || hc.call(&mut sb, (100,)).map(drop).map_err(Error::from))?;
        r.host_call_us = Some((hundred - zero) / 100.0);
    }

    // Restore.
    if has(&sb, "dirty") {
        let small = |mib: u64| {
            builder
                .clone()
                .input_buffer_size(64 << 10)
                .output_buffer_size(64 << 10)
                .stack_size(64 << 10)
                .memory_mib(mib)
        };
        for (mib, slot4, slot256) in [(4u64, 0, 1), (64, 2, 3)] {
            let mut sb = small(mib).build(image)?.init()?;
            let dirty = sb.typed_fn::<(u32,), u32>("dirty")?;
            let mut results = [0.0; 4];
            for (pages, slot) in [(4u32, slot4), (256, slot256)] {
                let v = timed(n * 3, || {
                    dirty.call(&mut sb, (pages,))?;
                    let t = Instant::now();
                    sb.reset()?;
                    Ok(t.elapsed())
                })?;
                if let Some(x) = results.get_mut(slot) {
                    *x = v;
                }
            }
            let [a, b, c, d] = results;
            if mib == 4 {
                (r.restore_1mib_us, r.restore_1mib_256_us) = (Some(a), Some(b));
            } else {
                (r.restore_64mib_us, r.restore_64mib_256_us) = (Some(c), Some(d));
            }
        }
    }

    // Fresh calls from a pool.
    let config = PoolConfig { max_sandboxes: 4, ready_target: 4, ..PoolConfig::default() };
    let pool = SandboxPool::new(&builder, image, config)?;
    pool.wait_ready(4, Duration::from_secs(10));
    let padd = pool.typed_fn::<(i32, i32), i32>("add")?;
    r.fresh_call_us = per_run(n, 20, || pool.call_typed(&padd, (2, 3)).map(drop).map_err(Error::from))?;
    let window = Duration::from_millis(600);
    r.fresh_calls_per_sec_1 = throughput(&pool, &padd, 1, window)?;
    r.fresh_calls_per_sec_2 = throughput(&pool, &padd, 2, window)?;
    r.sandbox_from_template_us = {
        let template = pool.template();
        timed_creation(n, || template.instantiate().map_err(Error::from))?
    };
    drop(pool);

    // Kill.
    if has(&sb, "spin") {
        r.kill_us = Some(kill_latency(image, n)?);
    }

    // Density.
    if options.density_sandboxes > 0 {
        if let Some((per_gib, private_kib)) = density(&builder, image, options.density_sandboxes)? {
            r.ready_sandboxes_per_gib = Some(per_gib);
            r.private_kib_per_sandbox = Some(private_kib);
        }
    }
    Ok(r)
}

/// The cold-start figures of issue 13, each beside its floor measured the same way.
fn cold_starts(
    r: &mut Report,
    host: &FloorHost,
    builder: &SandboxBuilder,
    image: &GuestImage,
    n: usize,
    options: &Options,
) -> Result<(), Error> {
    use cold::{cold_start, on_cpu, timed_each, under_churn};
    let floor = || BareVm::new(host, false).map_err(Error::from);
    r.floor_cold_not_deferred_us = timed_each(n, floor)?;
    r.cold_start_us = timed_each(n, || cold_start(builder, image))?;
    r.cold_start_deferred_us = timed_creation(n, || cold_start(builder, image))?;
    r.init_us = timed(n, || {
        let uninit = builder.build(image)?;
        let t = Instant::now();
        let sb = uninit.init()?;
        let took = t.elapsed();
        drop(sb);
        Ok(took)
    })?;

    ((r.cold_start_churn_us, r.floor_cold_churn_us), _) =
        under_churn(host, || Ok((timed_each(n, || cold_start(builder, image))?, timed_each(n, floor)?)))?;

    for cpu in cold::allowed_cpus()? {
        let (glint, bare) = on_cpu(cpu, || Ok((timed_each(n, || cold_start(builder, image))?, timed_each(n, floor)?)))?;
        r.cold_start_by_cpu_us.insert(cpu, glint);
        r.floor_cold_by_cpu_us.insert(cpu, bare);
    }
    r.cold_start_worst_cpu_us = r.cold_start_by_cpu_us.values().copied().fold(f64::NAN, f64::max);
    r.floor_cold_worst_cpu_us = r.floor_cold_by_cpu_us.values().copied().fold(f64::NAN, f64::max);

    // Snapshot files, written with the builder `glint run` uses so the same file serves both.
    let cli_builder = SandboxBuilder::new().unknown_imports_as_traps(true);
    let template = glint::Template::new(&cli_builder, image)?;
    let file = cold::SnapshotFile::save(&template)?;
    r.snapshot_file_kib = std::fs::metadata(file.path()).map(|m| m.len() as f64 / 1024.0).unwrap_or(f64::NAN);
    r.snapshot_start_us = timed_each(n, || cold::snapshot_start(file.path(), &cli_builder, image))?;
    r.snapshot_load_us =
        timed_each(n, || glint::Template::load(file.path(), &cli_builder, image).map_err(Error::from))?;
    if let Some(exe) = &options.glint_exe {
        r.process_snapshot_start_us = Some(timed(n.min(21), || cold::process_snapshot_start(exe, file.path()))?);
        r.floor_process_us = Some(timed(n.min(21), || cold::process_floor(exe))?);
    }

    let count = options.refill_sandboxes.max(1);
    for cpu in cold::allowed_cpus()? {
        let rate = median(
            (0..3).map(|_| cold::pool_refill_per_sec(host, &template, cpu, count)).collect::<Result<Vec<_>, _>>()?,
        );
        r.pool_refill_by_cpu_per_sec.insert(cpu, rate);
    }
    r.pool_refill_per_sec = r.pool_refill_by_cpu_per_sec.values().copied().fold(f64::NAN, f64::min);
    Ok(())
}

/// Fresh calls per second with `threads` callers sharing `pool`, over `window`.
fn throughput(
    pool: &SandboxPool,
    add: &glint::TypedFn<(i32, i32), i32>,
    threads: usize,
    window: Duration,
) -> Result<f64, Error> {
    let start = Instant::now();
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64, Error> {
                    let mut calls = 0u64;
                    while start.elapsed() < window {
                        pool.call_typed(add, (1, 2))?;
                        calls += 1;
                    }
                    Ok(calls)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Unexpected("bench thread panicked".into()))))
            .collect::<Result<Vec<u64>, Error>>()
    })?;
    Ok(counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64())
}

fn kill_latency(image: &GuestImage, n: usize) -> Result<f64, Error> {
    let mut sb = SandboxBuilder::new().call_timeout(None).unknown_imports_as_traps(true).build(image)?.init()?;
    let handle = sb.interrupt_handle();
    let spin = sb.typed_fn::<(), u64>("spin")?;
    std::thread::scope(|scope| {
        let (go, went) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<Instant>();
        let worker = scope.spawn(move || -> Result<(), Error> {
            while went.recv().is_ok() {
                let r = spin.call(&mut sb, ());
                let returned = Instant::now();
                if !matches!(r, Err(glint::Error::Cancelled)) {
                    return Err(Error::Unexpected(format!("spin returned {r:?}, not Cancelled")));
                }
                sb.reset()?;
                if done.send(returned).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut xs = Vec::with_capacity(n);
        for _ in 0..n {
            if go.send(()).is_err() {
                break;
            }
            let killed = loop {
                let t = Instant::now();
                if handle.kill() {
                    break t;
                }
                std::thread::yield_now();
            };
            match finished.recv() {
                Ok(returned) => xs.push(us(returned.duration_since(killed))),
                Err(_) => break,
            }
        }
        drop(go);
        worker.join().unwrap_or_else(|_| Err(Error::Unexpected("kill bench thread panicked".into())))?;
        Ok(median(xs))
    })
}

/// Creates `count` ready sandboxes and measures what they cost: (sandboxes per GiB of
/// MemAvailable, private KiB per sandbox).
fn density(builder: &SandboxBuilder, image: &GuestImage, count: usize) -> Result<Option<(f64, f64)>, Error> {
    let config = PoolConfig {
        max_sandboxes: count,
        ready_target: count,
        when_empty: WhenEmpty::Fail,
        restore_in_background: false,
    };
    let Some((avail_before, private_before)) = memory() else { return Ok(None) };
    let pool = SandboxPool::new(builder, image, config)?;
    let ready = pool.wait_ready(count, Duration::from_secs(120));
    let Some((avail_after, private_after)) = memory() else { return Ok(None) };
    drop(pool);
    if ready == 0 {
        return Ok(None);
    }
    let per = avail_before.saturating_sub(avail_after) as f64 / ready as f64;
    let private = private_after.saturating_sub(private_before) as f64 / ready as f64;
    Ok(Some(((1u64 << 30) as f64 / per.max(1.0), private / 1024.0)))
}

/// One target of issue 13, its limit computed from floors measured in the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The report key.
    pub key: &'static str,
    /// Its measured value.
    pub value: f64,
    /// `<=` or `>=`.
    pub relation: &'static str,
    /// The limit.
    pub limit: f64,
    /// Whether the value is within the limit.
    pub met: bool,
}

impl Report {
    /// The cold-start targets of issue 13, each against its limit from this run's floors.
    pub fn cold_targets(&self) -> Vec<Target> {
        let at_most = |key, value: f64, limit: f64| Target { key, value, relation: "<=", limit, met: value <= limit };
        let cold_limit = 1.5 * self.floor_cold_us + self.init_us;
        let mut v = vec![
            at_most("cold_start_us", self.cold_start_us, cold_limit),
            at_most("cold_start_churn_us", self.cold_start_churn_us, cold_limit),
            at_most("cold_start_worst_cpu_us", self.cold_start_worst_cpu_us, cold_limit),
            at_most("init_us", self.init_us, 2.0 * self.floor_call_us),
            at_most("snapshot_start_us", self.snapshot_start_us, 1.2 * self.floor_cold_us + self.floor_call_us),
        ];
        if let Some(p) = self.process_snapshot_start_us {
            v.push(at_most("process_snapshot_start_us", p, 3000.0));
        }
        v.push(Target {
            key: "pool_refill_per_sec",
            value: self.pool_refill_per_sec,
            relation: ">=",
            limit: 1000.0,
            met: self.pool_refill_per_sec >= 1000.0,
        });
        if let Some(e) = self.echo_1mib_us {
            v.push(at_most("echo_1mib_us", e, self.floor_call_us + 3.0 * self.memcpy_1mib_us));
        }
        v
    }

    /// One JSON object, numbers in microseconds, `null` for what was skipped.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// A table: each figure, the floor it is compared with, and the ratio.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let call = self.floor_call_us;
        let fresh_floor = self.floor_restore_us + self.floor_call_us;
        let rows: Vec<(&str, Option<f64>, &str, Option<f64>)> = vec![
            ("floor: create VM to first CPL3 exit", Some(self.floor_cold_us), "", None),
            ("floor: CPL3 entry/exit round trip", Some(call), "", None),
            ("floor: dirty-log restore of 4 pages", Some(self.floor_restore_us), "", None),
            ("cold start: new VM, init, first call", Some(self.cold_start_us), "floor cold", Some(self.floor_cold_us)),
            (
                "sandbox from template (no guest code)",
                Some(self.sandbox_from_template_us),
                "floor cold",
                Some(self.floor_cold_us),
            ),
            ("warm call add(i32, i32)", Some(self.warm_call_us), "round trip", Some(call)),
            ("one host call", self.host_call_us, "round trip", Some(call)),
            ("restore 4 pages, 4 MiB sandbox", self.restore_1mib_us, "floor restore", Some(self.floor_restore_us)),
            ("restore 4 pages, 64 MiB sandbox", self.restore_64mib_us, "floor restore", Some(self.floor_restore_us)),
            ("restore 256 pages, 4 MiB sandbox", self.restore_1mib_256_us, "", None),
            ("restore 256 pages, 64 MiB sandbox", self.restore_64mib_256_us, "", None),
            ("fresh call: take + add + give back", Some(self.fresh_call_us), "restore + call", Some(fresh_floor)),
            ("kill to return", self.kill_us, "round trip", Some(call)),
            (
                "cold start, teardown not deferred",
                Some(self.cold_start_us),
                "floor, same",
                Some(self.floor_cold_not_deferred_us),
            ),
            (
                "cold start, teardown deferred",
                Some(self.cold_start_deferred_us),
                "floor cold",
                Some(self.floor_cold_us),
            ),
            (
                "cold start under VM churn",
                Some(self.cold_start_churn_us),
                "floor churn",
                Some(self.floor_cold_churn_us),
            ),
            (
                "cold start, worst CPU",
                Some(self.cold_start_worst_cpu_us),
                "floor worst CPU",
                Some(self.floor_cold_worst_cpu_us),
            ),
            ("guest init alone", Some(self.init_us), "round trip", Some(call)),
            ("snapshot file to first result", Some(self.snapshot_start_us), "floor cold", Some(self.floor_cold_us)),
            ("glint run --snapshot process", self.process_snapshot_start_us, "glint --version", self.floor_process_us),
            ("echo 1 MiB", self.echo_1mib_us, "memcpy 1 MiB", Some(self.memcpy_1mib_us)),
        ];
        let _ = writeln!(out, "{:<42} {:>12} {:>16} {:>8}", "path", "median us", "vs", "ratio");
        for (name, v, vs, floor) in rows {
            let v = v.map_or_else(|| "skipped".into(), |v| format!("{v:.1}"));
            let ratio = match (floor, v.parse::<f64>()) {
                (Some(f), Ok(x)) if f > 0.0 => format!("{:.2}x", x / f),
                _ => String::new(),
            };
            let _ = writeln!(out, "{name:<42} {v:>12} {vs:>16} {ratio:>8}");
        }
        let _ = writeln!(
            out,
            "fresh calls/s: {:.0} on 1 thread, {:.0} on 2 threads ({:.2}x)",
            self.fresh_calls_per_sec_1,
            self.fresh_calls_per_sec_2,
            self.fresh_calls_per_sec_2 / self.fresh_calls_per_sec_1
        );
        let by_cpu = |m: &std::collections::BTreeMap<usize, f64>| {
            m.iter().map(|(c, v)| format!("CPU {c}: {v:.0}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(out, "cold start by CPU (us): {}", by_cpu(&self.cold_start_by_cpu_us));
        let _ = writeln!(out, "floor cold by CPU (us): {}", by_cpu(&self.floor_cold_by_cpu_us));
        let _ = writeln!(
            out,
            "pool refill under churn: {:.0} sandboxes/s on its worst CPU ({})",
            self.pool_refill_per_sec,
            by_cpu(&self.pool_refill_by_cpu_per_sec)
        );
        let _ = writeln!(out, "snapshot file: {:.0} KiB", self.snapshot_file_kib);
        let _ = writeln!(out, "targets (issue 13; limits from figures of this run):");
        for t in self.cold_targets() {
            let verdict = if t.met { "met" } else { "MISSED" };
            let _ = writeln!(out, "  {:<28} {:>12.1} {} {:>10.1}  {verdict}", t.key, t.value, t.relation, t.limit);
        }
        match (self.ready_sandboxes_per_gib, self.private_kib_per_sandbox) {
            (Some(g), Some(p)) => {
                let _ = writeln!(out, "density: {g:.0} ready sandboxes per GiB; {p:.0} KiB private memory each");
            }
            _ => {
                let _ = writeln!(out, "density: skipped");
            }
        }
        out
    }
}
