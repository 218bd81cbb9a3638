//! A pool of ready sandboxes of one image: a fresh, isolated sandbox per call without a new VM.
//!
//! The pool initialises the guest once into a [`Template`]; every VM is then made from the
//! template (its memory mapped copy-on-write from a memfd, its vCPU set to the captured state)
//! by a worker thread, ahead of demand, one at a time. A sandbox handed back is restored to the
//! initial state, copying back only the pages it dirtied, and lent out again; one that cannot be
//! restored is torn down on the worker thread and replaced.

use super::template::Template;
use super::{Sandbox, SandboxBuilder};
use crate::error::{ConfigError, PoolEmpty};
use crate::func::TypedFn;
use crate::image::GuestImage;
use crate::vmm::{Doing, VmmError};
use crate::{Error, Value};
use glint_abi::convert::{EncodeParams, FromWire};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What [`SandboxPool::take`] does when no sandbox is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// Wait up to this long for one, then fail with [`Error::PoolExhausted`].
    Wait(Duration),
    /// Fail at once with [`Error::PoolExhausted`].
    Fail,
}

/// How a [`SandboxPool`] sizes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most VMs the pool owns at once: ready, lent out, being restored or being created.
    pub max_sandboxes: usize,
    /// Ready sandboxes the worker keeps created ahead of demand (capped by `max_sandboxes`).
    pub ready_target: usize,
    /// What `take` does when none is ready.
    pub when_empty: WhenEmpty,
    /// Restore returned sandboxes on the pool's worker thread instead of the returning thread.
    /// Shortens the caller's path by the restore (about a third of a call on kvm_pvm) at the
    /// cost of throughput when callers already keep every core busy.
    pub restore_in_background: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_sandboxes: 64,
            ready_target: 8,
            when_empty: WhenEmpty::Wait(Duration::from_secs(10)),
            restore_in_background: false,
        }
    }
}

/// Counters of a pool's life, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sandboxes ready to be taken.
    pub ready: usize,
    /// Sandboxes lent out.
    pub lent: usize,
    /// Sandboxes waiting to be restored (background restore only).
    pub restoring: usize,
    /// VMs being created.
    pub creating: usize,
    /// VMs created so far.
    pub created: u64,
    /// Sandboxes restored and lent again.
    pub recycled: u64,
    /// Sandboxes torn down because they could not be restored.
    pub replaced: u64,
    /// VM creations that failed.
    pub create_failures: u64,
}

struct State<T> {
    ready: Vec<Sandbox<T>>,
    to_restore: Vec<Sandbox<T>>,
    to_drop: Vec<Sandbox<T>>,
    waiting: usize,
    closed: bool,
    last_create_error: Option<Error>,
    stats: PoolStats,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            ready: Vec::new(),
            to_restore: Vec::new(),
            to_drop: Vec::new(),
            waiting: 0,
            closed: false,
            last_create_error: None,
            stats: PoolStats::default(),
        }
    }
}

impl<T> State<T> {
    fn owned(&self) -> usize {
        self.ready.len() + self.stats.lent + self.to_restore.len() + self.stats.creating
    }
}

/// Makes the host-side data of each sandbox the pool creates or takes back.
type DataFactory<T> = Arc<dyn Fn() -> T + Send + Sync>;

struct Inner<T> {
    template: Template<T>,
    new_data: DataFactory<T>,
    config: PoolConfig,
    state: Mutex<State<T>>,
    /// Testing only: how many of the next VM creations fail (see
    /// `SandboxPool::inject_create_failures`).
    fail_creates: AtomicUsize,
    /// Signalled when a sandbox becomes ready.
    ready: Condvar,
    /// Signalled when the worker has something to do.
    work: Condvar,
}

impl<T: Send + 'static> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new sandbox from the template, with new data.
    fn create(&self) -> Result<Sandbox<T>, Error> {
        if self.fail_creates.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            let injected = "KVM_CREATE_VM (failure injected for testing)";
            return Err(VmmError::ioctl_errno(injected, Doing::CreatingVm, libc::ENOMEM).into());
        }
        self.template.instantiate_with((self.new_data)())
    }

    fn needs_create(&self, s: &State<T>) -> bool {
        let wanted = self.config.ready_target.max(s.waiting);
        !s.closed && s.ready.len() + s.stats.creating < wanted && s.owned() < self.config.max_sandboxes
    }

    /// The worker: tears down, restores and creates, one thing at a time, never holding the lock
    /// while it works.
    fn work(self: Arc<Self>) {
        let mut s = self.lock();
        loop {
            if s.closed {
                let state = &mut *s;
                let doomed: Vec<Sandbox<T>> =
                    state.ready.drain(..).chain(state.to_restore.drain(..)).chain(state.to_drop.drain(..)).collect();
                drop(s);
                drop(doomed);
                return;
            }
            if let Some(sb) = s.to_drop.pop() {
                drop(s);
                drop(sb);
                s = self.lock();
            } else if let Some(mut sb) = s.to_restore.pop() {
                drop(s);
                let restored = sb.reset().is_ok();
                s = self.lock();
                self.put_back(&mut s, sb, restored);
            } else if self.needs_create(&s) {
                s.stats.creating += 1;
                drop(s);
                let created = self.create();
                s = self.lock();
                s.stats.creating -= 1;
                match created {
                    Ok(sb) => {
                        s.stats.created += 1;
                        s.last_create_error = None;
                        s.ready.push(sb);
                        self.ready.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pool could not create a sandbox");
                        s.stats.create_failures += 1;
                        s.last_create_error = Some(e);
                        // Do not spin on a persistent failure; waiters see the error.
                        self.ready.notify_all();
                        drop(s);
                        std::thread::sleep(Duration::from_millis(10));
                        s = self.lock();
                    }
                }
            } else {
                s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn lend(self: &Arc<Self>, sb: Sandbox<T>) -> PooledSandbox<T> {
        PooledSandbox { sandbox: Some(sb), pool: Arc::downgrade(self) }
    }

    /// Why `take` found nothing to lend, as it stands now.
    fn exhausted(&self, s: &State<T>) -> Error {
        let max = self.config.max_sandboxes;
        let why = if s.closed {
            PoolEmpty::ShuttingDown
        } else if let Some(e) = &s.last_create_error {
            PoolEmpty::CreationFailed(Box::new(e.clone()))
        } else if s.stats.lent >= max {
            PoolEmpty::AllLent { lent: s.stats.lent }
        } else {
            PoolEmpty::NoneReadyInTime { lent: s.stats.lent, creating: s.stats.creating, restoring: s.to_restore.len() }
        };
        Error::PoolExhausted { max, why }
    }

    /// Returns a restored sandbox to the ready list, or schedules a failed one for teardown.
    fn put_back(&self, s: &mut State<T>, sb: Sandbox<T>, restored: bool) {
        if restored && !s.closed {
            s.stats.recycled += 1;
            s.ready.push(sb);
            self.ready.notify_one();
        } else {
            if !restored {
                s.stats.replaced += 1;
            }
            s.to_drop.push(sb);
            self.work.notify_one();
        }
    }

    fn give_back(&self, mut sb: Sandbox<T>) {
        // The checkout is over: its interrupt handles must never reach the next tenant, nor its
        // host-side data.
        sb.core.control.new_owner();
        sb.core.data = (self.new_data)();
        // The caller may have changed the deadline; the next one gets the pool's.
        sb.set_call_timeout(self.template.call_timeout());
        if self.config.restore_in_background {
            let mut s = self.lock();
            s.stats.lent -= 1;
            s.to_restore.push(sb);
            self.work.notify_one();
            return;
        }
        let restored = sb.reset().is_ok();
        let mut s = self.lock();
        s.stats.lent -= 1;
        self.put_back(&mut s, sb, restored);
        if self.needs_create(&s) {
            self.work.notify_one();
        }
    }
}

/// Ready sandboxes of one image, each taken for one caller and restored to its initial state
/// when given back. See the module docs for how it works.
///
/// Dropping the pool stops its worker; sandboxes still lent out are torn down when given back.
pub struct SandboxPool<T = ()> {
    inner: Arc<Inner<T>>,
    worker: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> std::fmt::Debug for SandboxPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool").field("config", &self.inner.config).field("stats", &self.stats()).finish()
    }
}

impl<T: Send + Default + 'static> SandboxPool<T> {
    /// Initialises `image` once with `builder`'s configuration and starts filling the pool; each
    /// sandbox's data is `T::default()`, made anew whenever a sandbox is given back.
    ///
    /// # Errors
    /// Whatever building and initialising the first sandbox fails with;
    /// [`ConfigError::EmptyPool`] for a zero `max_sandboxes`.
    pub fn new(builder: &SandboxBuilder<T>, image: &GuestImage, config: PoolConfig) -> Result<SandboxPool<T>, Error> {
        SandboxPool::with_data(builder, image, config, T::default)
    }
}

impl<T: Send + Default + 'static> SandboxPool<T> {
    /// A pool of sandboxes made from `template`, each with `T::default()` as its data (see
    /// [`from_template_with`](Self::from_template_with)).
    ///
    /// # Errors
    /// As [`from_template_with`](Self::from_template_with).
    pub fn from_template(template: Template<T>, config: PoolConfig) -> Result<SandboxPool<T>, Error> {
        SandboxPool::from_template_with(template, config, T::default)
    }
}

impl<T: Send + 'static> SandboxPool<T> {
    /// As [`SandboxPool::new`], with `new_data` making each sandbox's data: for every sandbox
    /// created, and again whenever one is given back, so no checkout sees another's.
    ///
    /// # Errors
    /// As [`SandboxPool::new`].
    pub fn with_data(
        builder: &SandboxBuilder<T>,
        image: &GuestImage,
        config: PoolConfig,
        new_data: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<SandboxPool<T>, Error> {
        if config.max_sandboxes == 0 {
            return Err(ConfigError::EmptyPool.into());
        }
        let template = Template::new_with(builder, image, new_data())?;
        SandboxPool::from_template_with(template, config, new_data)
    }

    /// A pool of sandboxes made from `template` (for instance one [`Template::load`] read from
    /// a snapshot file): no guest code runs; `new_data` makes each sandbox's data, as in
    /// [`SandboxPool::with_data`].
    ///
    /// # Errors
    /// [`ConfigError::EmptyPool`] for a zero `max_sandboxes`; failing to start the worker.
    pub fn from_template_with(
        template: Template<T>,
        config: PoolConfig,
        new_data: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<SandboxPool<T>, Error> {
        if config.max_sandboxes == 0 {
            return Err(ConfigError::EmptyPool.into());
        }
        let inner = Arc::new(Inner {
            template,
            new_data: Arc::new(new_data),
            config,
            state: Mutex::new(State::default()),
            fail_creates: AtomicUsize::new(0),
            ready: Condvar::new(),
            work: Condvar::new(),
        });
        let worker_inner = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("glint-pool".into())
            .spawn(move || worker_inner.work())
            .map_err(|e| VmmError::System { call: "clone", doing: Doing::StartingThread, source: Arc::new(e) })?;
        Ok(SandboxPool { inner, worker: Some(worker) })
    }

    /// Takes a ready sandbox, indistinguishable from a freshly initialised one.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] when none is ready and the policy is `Fail` or the wait timed out.
    pub fn take(&self) -> Result<PooledSandbox<T>, Error> {
        let inner = &self.inner;
        let mut s = inner.lock();
        let deadline = match inner.config.when_empty {
            WhenEmpty::Wait(d) => Instant::now().checked_add(d),
            WhenEmpty::Fail => None,
        };
        loop {
            if let Some(sb) = s.ready.pop() {
                s.stats.lent += 1;
                if inner.needs_create(&s) {
                    inner.work.notify_one();
                }
                return Ok(inner.lend(sb));
            }
            let Some(deadline) = deadline else {
                // Nothing ready and no waiting allowed: make one here if the pool has room.
                if !s.closed && s.owned() < inner.config.max_sandboxes {
                    s.stats.creating += 1;
                    drop(s);
                    let created = inner.create();
                    s = inner.lock();
                    s.stats.creating -= 1;
                    return match created {
                        Ok(sb) => {
                            s.stats.created += 1;
                            s.last_create_error = None;
                            s.stats.lent += 1;
                            Ok(inner.lend(sb))
                        }
                        Err(e) => {
                            s.stats.create_failures += 1;
                            s.last_create_error = Some(e.clone());
                            Err(e)
                        }
                    };
                }
                return Err(inner.exhausted(&s));
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(inner.exhausted(&s));
            }
            s.waiting += 1;
            if inner.needs_create(&s) {
                inner.work.notify_one();
            }
            s = inner.ready.wait_timeout(s, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
            s.waiting -= 1;
        }
    }

    /// Runs `name` in a fresh sandbox and gives the sandbox back: one isolated call.
    ///
    /// # Errors
    /// As [`SandboxPool::take`] and [`Sandbox::call`].
    pub fn call(&self, name: &str, args: &[Value]) -> Result<Value, Error> {
        self.take()?.call(name, args)
    }

    /// Runs a typed function in a fresh sandbox and gives the sandbox back.
    ///
    /// # Errors
    /// As [`SandboxPool::take`] and [`TypedFn::call`].
    pub fn call_typed<P: EncodeParams, R: FromWire>(&self, f: &TypedFn<P, R>, args: P) -> Result<R, Error> {
        f.call(&mut *self.take()?, args)
    }

    /// A typed handle to the export `name`, checked once, usable with every sandbox of the pool.
    ///
    /// # Errors
    /// [`Error::NoSuchFunction`] or [`Error::SignatureMismatch`].
    pub fn typed_fn<P: EncodeParams, R: FromWire>(&self, name: &str) -> Result<TypedFn<P, R>, Error> {
        self.inner.template.functions().typed_fn(name, self.inner.template.image().id())
    }

    /// Blocks until `n` sandboxes are ready (capped by the pool size) or `timeout` passes;
    /// returns how many are ready.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> usize {
        let n = n.min(self.inner.config.max_sandboxes);
        let deadline = Instant::now() + timeout;
        let mut s = self.inner.lock();
        s.waiting += n.saturating_sub(s.ready.len());
        self.inner.work.notify_one();
        let waited = n.saturating_sub(s.ready.len());
        while s.ready.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self.inner.ready.wait_timeout(s, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        s.waiting -= waited;
        s.ready.len()
    }

    /// Testing only: makes the next `n` VM creations fail as KVM refusing a VM would (`ENOMEM`).
    /// Nothing else can make a creation fail, and what the pool does then needs a test.
    #[doc(hidden)]
    pub fn inject_create_failures(&self, n: usize) {
        self.inner.fail_creates.store(n, Ordering::Release);
    }

    /// The template every sandbox of the pool is made from.
    pub fn template(&self) -> &Template<T> {
        &self.inner.template
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let s = self.inner.lock();
        PoolStats { ready: s.ready.len(), restoring: s.to_restore.len(), ..s.stats }
    }
}

impl<T> Drop for SandboxPool<T> {
    fn drop(&mut self) {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.inner.work.notify_all();
        self.inner.ready.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A sandbox lent by a [`SandboxPool`]; dereferences to [`Sandbox`]. Dropping it gives it back:
/// it is restored to its initial state (or replaced if that fails) before anyone else gets it.
pub struct PooledSandbox<T: Send + 'static = ()> {
    sandbox: Option<Sandbox<T>>,
    pool: Weak<Inner<T>>,
}

impl<T: Send + 'static> std::fmt::Debug for PooledSandbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PooledSandbox").field(&self.sandbox).finish()
    }
}

impl<T: Send + 'static> Deref for PooledSandbox<T> {
    type Target = Sandbox<T>;
    fn deref(&self) -> &Sandbox<T> {
        // `sandbox` is `Some` from construction until `drop`.
        self.sandbox.as_ref().unwrap_or_else(|| unreachable!("PooledSandbox used after drop"))
    }
}

impl<T: Send + 'static> DerefMut for PooledSandbox<T> {
    fn deref_mut(&mut self) -> &mut Sandbox<T> {
        self.sandbox.as_mut().unwrap_or_else(|| unreachable!("PooledSandbox used after drop"))
    }
}

impl<T: Send + 'static> Drop for PooledSandbox<T> {
    fn drop(&mut self) {
        let Some(sb) = self.sandbox.take() else { return };
        match self.pool.upgrade() {
            Some(pool) => pool.give_back(sb),
            None => drop(sb),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    /// A pool of the hello guest, or `None` without KVM (as `require_kvm!` in the integration
    /// tests: a failure under GLINT_REQUIRE_KVM).
    fn hello_pool(config: PoolConfig) -> Option<SandboxPool> {
        let image = GuestImage::from_file(glint_guest_artifacts::HELLO).unwrap();
        let builder = SandboxBuilder::new().host_fn("greeting", |name: String| format!("Hello, {name}"));
        match SandboxPool::new(&builder, &image, config) {
            Ok(pool) => Some(pool),
            Err(e) if std::env::var_os("GLINT_REQUIRE_KVM").is_none() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("GLINT_REQUIRE_KVM is set but KVM is unusable: {e}"),
        }
    }

    #[test]
    fn dropping_the_pool_stops_its_worker_and_lets_go_of_everything_it_held() {
        let config = PoolConfig { max_sandboxes: 2, ready_target: 2, ..PoolConfig::default() };
        let Some(pool) = hello_pool(config) else { return };
        assert_eq!(pool.wait_ready(2, Duration::from_secs(30)), 2);
        let lent = pool.take().unwrap();
        let inner = Arc::downgrade(&pool.inner);
        drop(pool);
        // The worker has returned and dropped its reference; the ready sandbox went with it.
        assert_eq!(inner.strong_count(), 0, "the pool's worker still runs");
        // A sandbox given back to a pool that is gone is torn down.
        drop(lent);
    }

    #[test]
    fn a_pool_counts_the_sandbox_being_created_against_its_bound() {
        let state =
            State::<()> { stats: PoolStats { lent: 1, creating: 1, ..PoolStats::default() }, ..State::default() };
        assert_eq!(state.owned(), 2);
        let state = State::<()> { stats: PoolStats { lent: 2, ..PoolStats::default() }, ..State::default() };
        assert_eq!(state.owned(), 2);
    }

    #[test]
    fn a_pools_debug_output_shows_its_bound_and_its_counters() {
        let config = PoolConfig { max_sandboxes: 3, ready_target: 1, ..PoolConfig::default() };
        let Some(pool) = hello_pool(config) else { return };
        let text = format!("{pool:?}");
        assert!(text.starts_with("SandboxPool {") && text.contains("max_sandboxes: 3"), "{text}");
        assert!(text.contains("stats: PoolStats {"), "{text}");
        // A lent sandbox shows the sandbox it lends.
        let lent = pool.take().unwrap();
        let text = format!("{lent:?}");
        assert!(text.starts_with("PooledSandbox(Some(Sandbox"), "{text}");
    }
}
