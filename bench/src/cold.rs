//! The cold-start measurements of `glint bench` (issue 13): creation with teardown not deferred,
//! under VM churn, on every CPU, the guest's init alone, from a snapshot file (in this process and
//! in a new `glint run --snapshot` process) and the pool's refill rate, each beside the bare-KVM
//! floor measured the same way.

use crate::floor::{BareVm, FloorHost};
use crate::{median, us, Error};
use glint::{GuestImage, PoolConfig, SandboxBuilder, SandboxPool, Template, WhenEmpty};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Median of `samples` timings of `make`, each result dropped right after it was timed, so every
/// creation but the first runs in the shadow of the previous teardown (nothing deferred).
///
/// # Errors
/// The first failure of `make`.
pub fn timed_each<T>(samples: usize, mut make: impl FnMut() -> Result<T, Error>) -> Result<f64, Error> {
    let mut xs = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let made = make()?;
        xs.push(us(t.elapsed()));
        drop(made);
    }
    Ok(median(xs))
}

/// The CPUs the calling thread may run on.
///
/// # Errors
/// `sched_getaffinity` failed.
pub fn allowed_cpus() -> Result<Vec<usize>, Error> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size; 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(Error::Unexpected(format!("sched_getaffinity: {}", std::io::Error::last_os_error())));
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads bit `c` of `set`, and `c` < CPU_SETSIZE, the set's size in bits.
    Ok((0..max).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Pins the calling thread (and the threads it starts from now on) to `cpu`.
fn pin(cpu: usize) -> Result<(), Error> {
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    if cpu >= max {
        return Err(Error::Unexpected(format!("CPU {cpu} is outside cpu_set_t")));
    }
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (checked above), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(Error::Unexpected(format!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Runs `f` on a new thread pinned to `cpu` (threads it starts inherit the pinning).
///
/// # Errors
/// Pinning failed, or whatever `f` returns.
pub fn on_cpu<R: Send>(cpu: usize, f: impl FnOnce() -> Result<R, Error> + Send) -> Result<R, Error> {
    std::thread::scope(|s| {
        s.spawn(move || {
            pin(cpu)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Unexpected(format!("the thread pinned to CPU {cpu} panicked"))))
    })
}

/// Runs `f` while another thread creates and drops bare VMs back to back, so every step of `f`
/// overlaps some VM's teardown. Returns what `f` returned and how many VMs the churn made.
///
/// # Errors
/// Whatever `f` returns, or the churn thread's first failure.
pub fn under_churn<R>(host: &FloorHost, f: impl FnOnce() -> Result<R, Error>) -> Result<(R, u64), Error> {
    let stop = AtomicBool::new(false);
    let made = AtomicU64::new(0);
    std::thread::scope(|s| {
        let churn = s.spawn(|| -> Result<(), Error> {
            while !stop.load(Ordering::Relaxed) {
                drop(BareVm::new(host, false)?);
                made.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        // Let the churn get going before measuring.
        let start = Instant::now();
        while made.load(Ordering::Relaxed) < 2 && start.elapsed() < Duration::from_secs(2) {
            std::thread::yield_now();
        }
        let r = f();
        stop.store(true, Ordering::Relaxed);
        let churned = churn.join().unwrap_or_else(|_| Err(Error::Unexpected("the churn thread panicked".into())));
        let r = r?;
        churned?;
        Ok((r, made.load(Ordering::Relaxed)))
    })
}

/// New VM, init, first `add`: one cold start.
///
/// # Errors
/// Building, initialising or calling failed, or `add(2, 3)` was not 5.
pub fn cold_start(builder: &SandboxBuilder, image: &GuestImage) -> Result<glint::Sandbox, Error> {
    let mut sb = builder.build(image)?.init()?;
    let add = sb.typed_fn::<(i32, i32), i32>("add")?;
    let five = add.call(&mut sb, (2, 3))?;
    if five != 5 {
        return Err(Error::Unexpected(format!("add(2, 3) returned {five}")));
    }
    Ok(sb)
}

/// A snapshot file in the temporary directory, removed when dropped.
#[derive(Debug)]
pub struct SnapshotFile(PathBuf);

impl SnapshotFile {
    /// Saves `template` to a fresh file.
    ///
    /// # Errors
    /// Saving failed.
    pub fn save<T: Send + 'static>(template: &Template<T>) -> Result<SnapshotFile, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("glint-bench-{}-{n}.snap", std::process::id()));
        let file = SnapshotFile(path);
        template.save(&file.0)?;
        Ok(file)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// From a snapshot file to the first `add`'s result, with a new VM: load (reads and checks the
/// file, maps its pages), instantiate, call.
pub fn snapshot_start(file: &Path, builder: &SandboxBuilder, image: &GuestImage) -> Result<glint::Sandbox, Error> {
    let template = Template::load(file, builder, image)?;
    let mut sb = template.instantiate()?;
    let add = sb.typed_fn::<(i32, i32), i32>("add")?;
    let five = add.call(&mut sb, (2, 3))?;
    if five != 5 {
        return Err(Error::Unexpected(format!("add(2, 3) from a snapshot returned {five}")));
    }
    Ok(sb)
}

/// A new `glint run --snapshot FILE add 2 3` process, from spawn to exit, checked to print 5.
pub(crate) fn process_snapshot_start(glint: &Path, file: &Path) -> Result<Duration, Error> {
    let t = Instant::now();
    let out = std::process::Command::new(glint)
        .arg("run")
        .arg("--snapshot")
        .arg(file)
        .args(["add", "2", "3"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Unexpected(format!("could not start {}: {e}", glint.display())))?;
    let took = t.elapsed();
    if !out.status.success() || out.stdout != b"5\n" {
        return Err(Error::Unexpected(format!(
            "`glint run --snapshot` exited {} printing {:?} (stderr {:?})",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(took)
}

/// A new process of `glint` that exits at once (`glint --version`), spawn to exit.
pub(crate) fn process_floor(glint: &Path) -> Result<Duration, Error> {
    let t = Instant::now();
    let out = std::process::Command::new(glint)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Unexpected(format!("could not start {}: {e}", glint.display())))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(Error::Unexpected(format!("`glint --version` exited {}", out.status)));
    }
    Ok(took)
}

/// VMs a second a pool made from `template` creates to fill `count` ready sandboxes, its worker
/// pinned to `cpu`, while another thread creates and drops VMs.
pub(crate) fn pool_refill_per_sec(
    host: &FloorHost,
    template: &Template,
    cpu: usize,
    count: usize,
) -> Result<f64, Error> {
    let config = PoolConfig {
        max_sandboxes: count,
        ready_target: count,
        when_empty: WhenEmpty::Fail,
        restore_in_background: false,
    };
    let (rate, _) = under_churn(host, || {
        on_cpu(cpu, || {
            // The worker thread starts here and inherits the pinning.
            let t = Instant::now();
            let pool = SandboxPool::from_template(template.clone(), config)?;
            let ready = pool.wait_ready(count, Duration::from_secs(60));
            let took = t.elapsed();
            if ready < count {
                return Err(Error::Unexpected(format!("the pool made {ready} of {count} sandboxes in 60 s")));
            }
            // The pool's teardown (its worker drops them) is not timed.
            drop(pool);
            Ok(count as f64 / took.as_secs_f64())
        })
    })?;
    Ok(rate)
}
