//! Quick measurements of glint's paths next to the bare-KVM floor, taken in one run: what
//! `glint bench` prints. The criterion benchmarks (`cargo bench`) measure the same paths more
//! carefully; this is the under-a-minute version a user runs on their own machine.
//!
//! The guest must export `add(i32, i32) -> i32`. Paths whose function it lacks are skipped:
//! `host_calls(u32) -> u32` (calls the host function `nop` that many times), `dirty(u32) -> u32`
//! (writes one byte to that many pages of a 1 MiB area) and `spin() -> u64` (never returns).
//! The `benchguest` in `guest/bins/test` exports all of them.

#![deny(missing_docs)]

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
    /// New VM, initialise the guest, first call of `add`.
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
}

/// How long `run` spends.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Samples per measurement.
    pub samples: usize,
    /// Ready sandboxes created for the density figure (0: skip).
    pub density_sandboxes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { samples: 41, density_sandboxes: 200 }
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
    r.cold_start_us = timed_creation(n, || {
        let mut sb = builder.build(image)?.init()?;
        let add = sb.typed_fn::<(i32, i32), i32>("add")?;
        add.call(&mut sb, (2, 3))?;
        Ok(sb)
    })?;
    let mut sb = builder.build(image)?.init()?;
    let add = sb.typed_fn::<(i32, i32), i32>("add")?;
    r.warm_call_us = per_run(n, 50, || add.call(&mut sb, (2, 3)).map(drop).map_err(Error::from))?;
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

impl Report {
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
