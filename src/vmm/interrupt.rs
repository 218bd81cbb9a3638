//! Stopping a running vCPU from another thread: kill and per-call deadlines.
//!
//! A guest need not cooperate (on kvm_pvm a `vmmcall` at CPL0 keeps KVM_RUN from returning at
//! all), so the only lever is the vCPU thread itself: we mark the call cancelled, then send that
//! thread a real-time signal carrying the call's generation number. The handler sets the vCPU's
//! `immediate_exit` if, and only if, the thread is still running that very call, which closes the
//! race with a signal landing just before KVM_RUN and makes a late signal harmless for the next
//! call. The run loop checks the cancel mark before every entry and after every `EINTR`.
//!
//! Deadlines come from one process-wide watchdog thread that sleeps until the earliest deadline
//! of any running call; starting a call costs two uncontended lock operations, no syscall unless
//! the new deadline is the earliest.

use super::error::{Doing, VmmError};
use crate::error::ConfigError;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Why a call was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    /// `InterruptHandle::kill`.
    Killed = 1,
    /// The call's deadline passed.
    Deadline = 2,
}

#[derive(Clone, Copy)]
struct Running {
    generation: u64,
    thread: libc::pthread_t,
    deadline: Option<Instant>,
    /// When the call was last sent the kick signal.
    kicked: Option<Instant>,
}

/// How long a stopped call may keep running before the watchdog sends the signal again. A
/// signal can be lost (the per-user queue of real-time signals is full) or land in a window
/// the kernel does not turn into EINTR; the re-kick bounds the damage to this delay.
const REKICK_AFTER: Duration = Duration::from_millis(2);

/// Shared by a sandbox, its interrupt handles and the watchdog.
pub(crate) struct CallControl {
    running: Mutex<Option<Running>>,
    /// Generation of the call that was stopped (0: none).
    stopped: AtomicU64,
    /// `StopReason` of `stopped`: 1 killed, 2 deadline.
    reason: AtomicU8,
    next_generation: AtomicU64,
    /// Who owns the sandbox now (a pool checkout, say); handles of earlier owners are inert.
    /// Changed only with `running` held, so a kill checks it and stops atomically.
    owner: AtomicU64,
    /// The call's thread is in (or about to enter) KVM_RUN, not in a host function.
    in_guest: std::sync::atomic::AtomicBool,
    /// A debugger asked the guest to stop without ending the call (see [`CallControl::pause`]).
    pause: std::sync::atomic::AtomicBool,
    /// The process-wide watchdog; the tests give a control a watchdog of its own.
    watchdog: &'static Watchdog,
}

impl std::fmt::Debug for CallControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControl").field("stopped", &self.stopped).finish_non_exhaustive()
    }
}

thread_local! {
    /// The `immediate_exit` byte of the vCPU this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    /// Generation of the call this thread is running, or 0.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    /// The call this thread is running, for `call_cancelled` (never touched by the handler).
    static CURRENT_CALL: std::cell::RefCell<Option<(Weak<CallControl>, u64)>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether the guest call this thread is serving has been stopped: killed through an
/// [`InterruptHandle`], or past its deadline. `false` outside a call.
///
/// This is the cancel token of host functions: one that waits or works for long should poll it
/// and return early (an error, say). The stop takes effect when the host function returns,
/// whatever it returns; the guest is not resumed.
pub fn call_cancelled() -> bool {
    CURRENT_CALL.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|(control, generation)| {
                control.upgrade().map(|c| c.stopped.load(Ordering::Acquire) == *generation)
            })
            .unwrap_or(false)
    })
}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + KICK_SIGNAL_OFFSET.load(Ordering::Relaxed)
}

/// Offset from SIGRTMIN of the signal we use; see [`set_interrupt_signal_offset`].
static KICK_SIGNAL_OFFSET: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);
/// Set once the handler is installed; the signal cannot change after that.
static INSTALLED: OnceLock<()> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Chooses the real-time signal glint sends to interrupt a running call: `SIGRTMIN + offset`
/// (2 unless changed). For embedders that use that signal themselves. Call it before the first
/// sandbox is created; the signal is process-wide and fixed from then on.
///
/// # Errors
/// [`ConfigError::SignalOutOfRange`] when `offset` is outside `SIGRTMIN..=SIGRTMAX`,
/// [`ConfigError::SignalAlreadyChosen`] once a sandbox was created.
pub fn set_interrupt_signal_offset(offset: i32) -> Result<(), crate::Error> {
    let _installing = lock(&INSTALLING);
    if INSTALLED.get().is_some() {
        let current = KICK_SIGNAL_OFFSET.load(Ordering::Relaxed);
        return Err(ConfigError::SignalAlreadyChosen { current }.into());
    }
    if offset < 0 || libc::SIGRTMIN() + offset > libc::SIGRTMAX() {
        return Err(ConfigError::SignalOutOfRange { offset }.into());
    }
    KICK_SIGNAL_OFFSET.store(offset, Ordering::Relaxed);
    Ok(())
}

extern "C" fn on_kick(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; `si_value` is the
    // union member pthread_sigqueue filled (0 when the signal came another way).
    let wanted = unsafe { (*info).si_value().sival_ptr } as u64;
    // Only const-initialised, destructor-free thread-locals are touched: plain TLS reads. A kick
    // meant for an earlier call is dropped here; one without a generation stops whatever runs,
    // and the run loop's `stopped` check tells a real stop from a spurious one.
    let current = GENERATION.with(Cell::get);
    if current != 0 && (wanted == 0 || wanted == current) {
        let p = IMMEDIATE_EXIT.with(Cell::get);
        if !p.is_null() {
            // SAFETY: `p` points into the kvm_run page of the vCPU this thread is running; it is
            // set only inside `CallControl::begin` and cleared in `CallGuard::drop`, while the
            // `Partition` that owns the page is mutably borrowed by the call.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    }
}

/// Installs the kick handler once per process, refusing to take over a signal that already has
/// a handler of the embedder's.
fn install_handler() -> Result<(), crate::Error> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let _installing = lock(&INSTALLING);
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let signal = kick_signal();
    let offset = KICK_SIGNAL_OFFSET.load(Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is a valid value for both calls; the first only reads the
    // current disposition into `old`. The new one sets our handler, SA_SIGINFO (no
    // SA_RESTART, so KVM_RUN returns EINTR) and an empty mask; `on_kick` only touches
    // thread-locals and one byte of memory, which is async-signal-safe.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
            return Err(VmmError::last_os("sigaction", Doing::InstallingSignal).into());
        }
        let ours = on_kick as *const () as usize;
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != ours {
            return Err(ConfigError::SignalInUse { offset }.into());
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ours;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal, &sa, std::ptr::null_mut()) != 0 {
            return Err(VmmError::last_os("sigaction", Doing::InstallingSignal).into());
        }
    }
    let _ = INSTALLED.set(());
    Ok(())
}

/// Makes sure the kick signal is not blocked on this thread. Done at every call (one cheap
/// syscall): the embedder may block signals on a thread between calls.
fn unblock_on_this_thread() {
    // SAFETY: the set is initialised by sigemptyset before use; unblocking one signal on the
    // calling thread affects nothing else.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

impl CallControl {
    pub(crate) fn new() -> Result<Arc<CallControl>, crate::Error> {
        Self::watched_by(watchdog())
    }

    fn watched_by(watchdog: &'static Watchdog) -> Result<Arc<CallControl>, crate::Error> {
        install_handler()?;
        let control = Arc::new(CallControl::unregistered(watchdog));
        watchdog.register(&control);
        Ok(control)
    }

    fn unregistered(watchdog: &'static Watchdog) -> CallControl {
        CallControl {
            running: Mutex::new(None),
            stopped: AtomicU64::new(0),
            reason: AtomicU8::new(0),
            next_generation: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            in_guest: std::sync::atomic::AtomicBool::new(false),
            pause: std::sync::atomic::AtomicBool::new(false),
            watchdog,
        }
    }

    /// Marks the start of a call on this thread. `immediate_exit` must stay valid until the
    /// returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>, immediate_exit: *mut u8, timeout: Option<Duration>) -> CallGuard {
        unblock_on_this_thread();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        // A host function may call into another sandbox on this thread: keep the outer call's
        // values and put them back when this call ends.
        let outer = Outer {
            immediate_exit: IMMEDIATE_EXIT.with(|c| c.replace(immediate_exit)),
            generation: GENERATION.with(|c| c.replace(generation)),
            call: CURRENT_CALL.with(|c| c.replace(Some((Arc::downgrade(self), generation)))),
        };
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        *lock(&self.running) = Some(Running { generation, thread, deadline, kicked: None });
        if let Some(d) = deadline {
            self.watchdog.consider(d);
        }
        CallGuard { control: Arc::clone(self), generation, outer: Some(outer) }
    }

    /// The current owner, for a new [`InterruptHandle`].
    fn owner(&self) -> u64 {
        self.owner.load(Ordering::Acquire)
    }

    /// Starts a new owner: every handle obtained so far stops working.
    pub(crate) fn new_owner(&self) {
        let _running = lock(&self.running);
        self.owner.fetch_add(1, Ordering::AcqRel);
    }

    /// Stops the running call, if there is one and `owner` still owns the sandbox. Returns
    /// whether a call was stopped (or already stopping).
    fn stop(&self, reason: StopReason, owner: u64) -> bool {
        let mut running = lock(&self.running);
        if self.owner.load(Ordering::Acquire) != owner {
            return false;
        }
        let Some(r) = running.as_mut() else { return false };
        if self.stopped.load(Ordering::Acquire) == r.generation {
            // Already stopped: one signal per call; the watchdog re-sends it if it is lost. A
            // signal per kill() would let a kill storm keep the vCPU thread in its handler.
            return true;
        }
        self.reason.store(reason as u8, Ordering::Relaxed);
        self.stopped.store(r.generation, Ordering::Release);
        kick(r);
        drop(running);
        // Make sure someone looks again if the call does not end.
        self.watchdog.consider(Instant::now() + REKICK_AFTER);
        true
    }
}

impl CallControl {
    /// Makes the guest leave the vCPU without ending its call, for a debugger's interrupt: the
    /// run loop sees an interrupted exit and [`CallGuard::take_pause`]. Remembered until the run
    /// loop takes it, so a pause asked for between calls stops the next one at its start.
    #[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb stub's interrupt uses it"))]
    pub(crate) fn pause(&self) {
        let mut running = lock(&self.running);
        self.pause.store(true, Ordering::Release);
        if let Some(r) = running.as_mut() {
            kick(r);
        }
    }
}

/// Sends the kick signal to the thread running `r`. Call with the `running` lock held: the call's
/// guard takes that lock before the call ends, so the thread is alive.
fn kick(r: &mut Running) {
    let value = libc::sigval { sival_ptr: r.generation as usize as *mut libc::c_void };
    r.kicked = Some(Instant::now());
    // SAFETY: `r.thread` is running a call (see above), so it is a live thread of this process.
    let rc = unsafe { libc::pthread_sigqueue(r.thread, kick_signal(), value) };
    if rc != 0 {
        // The real-time signal queue is full: a plain kill still interrupts (without a value).
        // SAFETY: as above.
        unsafe { libc::pthread_kill(r.thread, kick_signal()) };
        tracing::debug!(errno = rc, "pthread_sigqueue failed; kicked with pthread_kill");
    }
}

/// A call in progress; dropping it ends the call's claim on the thread and its deadline.
pub(crate) struct CallGuard {
    control: Arc<CallControl>,
    generation: u64,
    outer: Option<Outer>,
}

/// The thread-local state of the call (if any) that was running on this thread when a call
/// began, restored when it ends.
struct Outer {
    immediate_exit: *mut u8,
    generation: u64,
    call: Option<(Weak<CallControl>, u64)>,
}

impl CallGuard {
    /// Marks the thread as entering the guest (KVM_RUN) or leaving it.
    pub(crate) fn in_guest(&self, inside: bool) {
        self.control.in_guest.store(inside, Ordering::Release);
    }

    /// Whether a debugger asked for a pause (see [`CallControl::pause`]); clears the request.
    pub(crate) fn take_pause(&self) -> bool {
        self.control.pause.swap(false, Ordering::AcqRel)
    }

    /// Whether, and why, this call was stopped.
    pub(crate) fn stopped(&self) -> Option<StopReason> {
        if self.control.stopped.load(Ordering::Acquire) != self.generation {
            return None;
        }
        match self.control.reason.load(Ordering::Relaxed) {
            r if r == StopReason::Deadline as u8 => Some(StopReason::Deadline),
            _ => Some(StopReason::Killed),
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        *lock(&self.control.running) = None;
        self.control.in_guest.store(false, Ordering::Release);
        if let Some(outer) = self.outer.take() {
            // A kick landing between these stores can at worst set `immediate_exit` of the
            // other call's vCPU: a spurious EINTR, which its run loop re-checks and ignores.
            GENERATION.with(|c| c.set(outer.generation));
            IMMEDIATE_EXIT.with(|c| c.set(outer.immediate_exit));
            CURRENT_CALL.with(|c| *c.borrow_mut() = outer.call);
        }
    }
}

/// A cloneable, thread-safe handle that stops the sandbox's running call.
///
/// `kill` stops the call that is running when it is invoked, from any thread, even while the
/// guest spins with interrupts off or while a host function runs (the call then ends when the
/// host function returns). With no call running it does nothing and returns `false`: a kill is
/// never remembered for a later call.
///
/// A handle belongs to whoever owned the sandbox when it was obtained. For a sandbox taken from
/// a [`SandboxPool`](crate::SandboxPool) that is the checkout: once the sandbox is given back,
/// handles obtained during that checkout do nothing and return `false`, so they can never stop
/// the next tenant's call. After the sandbox is dropped every handle is inert.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    control: Weak<CallControl>,
    owner: u64,
}

impl InterruptHandle {
    pub(crate) fn new(control: &Arc<CallControl>) -> Self {
        InterruptHandle { control: Arc::downgrade(control), owner: control.owner() }
    }

    /// Stops the running call; returns whether one was running (and this handle's owner still
    /// owns the sandbox).
    pub fn kill(&self) -> bool {
        self.control.upgrade().is_some_and(|c| c.stop(StopReason::Killed, self.owner))
    }

    /// Whether the sandbox this handle belongs to has been dropped.
    pub fn is_dropped(&self) -> bool {
        self.control.strong_count() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Watchdog {
    controls: Mutex<Vec<Weak<CallControl>>>,
    /// When the watchdog will next look (nanoseconds after `epoch`); u64::MAX: parked.
    next_wake: AtomicU64,
    wake: Condvar,
    wake_lock: Mutex<()>,
    epoch: Instant,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(Watchdog::start)
}

impl Watchdog {
    /// A watchdog and its thread, both living as long as the process.
    fn start() -> &'static Watchdog {
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            controls: Mutex::new(Vec::new()),
            next_wake: AtomicU64::new(u64::MAX),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            epoch: Instant::now(),
        }));
        let spawned = std::thread::Builder::new().name("glint-watchdog".into()).spawn(move || w.run());
        if let Err(e) = spawned {
            tracing::error!("cannot start the deadline watchdog thread: {e}");
        }
        w
    }

    fn register(&self, control: &Arc<CallControl>) {
        let mut controls = lock(&self.controls);
        if prune_due(controls.len()) {
            forget_dropped(&mut controls);
        }
        controls.push(Arc::downgrade(control));
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Wakes the watchdog if `deadline` is earlier than its next look.
    fn consider(&self, deadline: Instant) {
        if self.nanos(deadline) < self.next_wake.load(Ordering::Acquire) {
            let _g = lock(&self.wake_lock);
            self.next_wake.store(0, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            {
                let mut controls = lock(&self.controls);
                forget_dropped(&mut controls);
                let mut soonest = |t: Instant| earliest = Some(earliest.map_or(t, |e: Instant| e.min(t)));
                for c in controls.iter().filter_map(Weak::upgrade) {
                    let mut running = lock(&c.running);
                    let Some(r) = running.as_mut() else { continue };
                    if c.stopped.load(Ordering::Acquire) == r.generation {
                        if !c.in_guest.load(Ordering::Acquire) {
                            // In a host function: the stop is latched and takes effect when it
                            // returns; signalling again would only interrupt its syscalls.
                            continue;
                        }
                        // Stopped but still running: the signal was lost or early. Again.
                        let due = rekick_due(r.kicked, now);
                        if due <= now {
                            tracing::debug!(generation = r.generation, "stopped call still running; kicking again");
                            kick(r);
                            soonest(now + REKICK_AFTER);
                        } else {
                            soonest(due);
                        }
                        continue;
                    }
                    let Some(d) = r.deadline else { continue };
                    if d <= now {
                        c.reason.store(StopReason::Deadline as u8, Ordering::Relaxed);
                        c.stopped.store(r.generation, Ordering::Release);
                        kick(r);
                        soonest(now + REKICK_AFTER);
                    } else {
                        soonest(d);
                    }
                }
            }
            let guard = lock(&self.wake_lock);
            let next = earliest.map_or(u64::MAX, |e| self.nanos(e));
            // A call that started since the scan set next_wake to 0: look again at once.
            if self.next_wake.swap(next, Ordering::AcqRel) == 0 && next != 0 {
                continue;
            }
            match earliest {
                Some(e) => {
                    let wait = e.saturating_duration_since(Instant::now());
                    drop(self.wake.wait_timeout(guard, wait));
                }
                None => {
                    drop(self.wake.wait(guard));
                }
            }
        }
    }
}

/// When a stopped call that is still in the guest gets its next kick: REKICK_AFTER after the
/// last one, so a lost signal costs that delay and a busy watchdog does not send a signal storm.
fn rekick_due(kicked: Option<Instant>, now: Instant) -> Instant {
    kicked.map_or(now, |k| k + REKICK_AFTER)
}

/// Whether registering a control should first forget the dropped ones: at each power of two from
/// 64 on, so the list stays within twice the live controls at a cost amortised over the pushes.
/// (The watchdog's scan forgets them too, but it runs only while calls have deadlines.)
fn prune_due(len: usize) -> bool {
    len >= 64 && len.is_power_of_two()
}

fn forget_dropped(controls: &mut Vec<Weak<CallControl>>) {
    controls.retain(|w| w.strong_count() > 0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn a_killed_call_that_stays_in_the_guest_is_kicked_again() {
        let control = CallControl::new().unwrap();
        let handle = InterruptHandle::new(&control);
        let (started, ready) = std::sync::mpsc::channel();
        let c = Arc::clone(&control);
        let vcpu = std::thread::spawn(move || {
            let mut exit = Box::new(0u8);
            let p: *mut u8 = &mut *exit;
            let guard = c.begin(p, None);
            guard.in_guest(true);
            started.send(()).unwrap();
            // Each kick sets the byte, as it sets a vCPU's immediate_exit. Clearing it is what a
            // kick that came too early for KVM_RUN amounts to: the call goes on in the guest.
            let mut kicks = 0;
            let start = Instant::now();
            while kicks < 3 && start.elapsed() < Duration::from_secs(10) {
                // SAFETY: `p` points into `exit`, which lives until the end of this closure; the
                // signal handler writes the same byte, volatile, on this thread.
                if unsafe { std::ptr::read_volatile(p) } == 1 {
                    // SAFETY: as above.
                    unsafe { std::ptr::write_volatile(p, 0) };
                    kicks += 1;
                }
                std::hint::spin_loop();
            }
            (kicks, guard.stopped())
        });
        ready.recv().unwrap();
        assert!(handle.kill());
        let (kicks, stopped) = vcpu.join().unwrap();
        assert_eq!(kicks, 3, "the watchdog kicks a stopped call again while it is in the guest");
        assert_eq!(stopped, Some(StopReason::Killed));
    }

    #[test]
    fn the_watchdog_keeps_every_live_sandbox_when_it_forgets_dropped_ones() {
        // Enough registrations to pass a power of two above 64 whatever was registered before,
        // so the watchdog prunes its list at least once while these are alive.
        let before = lock(&watchdog().controls).len();
        let live: Vec<Arc<CallControl>> = (0..before.max(64) + 64).map(|_| CallControl::new().unwrap()).collect();
        let controls = lock(&watchdog().controls);
        for c in &live {
            assert!(controls.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(c))), "a live control was dropped");
        }
    }

    /// CPU time (user and system, in clock ticks) of this process's thread named `name`.
    fn thread_cpu_ticks(name: &str) -> Option<u64> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            if std::fs::read_to_string(task.path().join("comm")).ok()?.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command (which is in parentheses): utime and stime are 12th and 13th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
        }
        None
    }

    #[test]
    fn the_watchdog_sleeps_while_nothing_is_due() {
        let _control = CallControl::new().unwrap();
        let before = thread_cpu_ticks("glint-watchdog").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let used = thread_cpu_ticks("glint-watchdog").unwrap() - before;
        // Other tests' calls give it a little to do; a watchdog that rescans instead of waiting
        // uses the whole second.
        assert!(used < 20, "the watchdog used {used} clock ticks in one second");
    }

    /// Sends this thread the kick signal carrying `generation`, as `kick` does.
    fn kick_self(generation: u64) {
        let value = libc::sigval { sival_ptr: generation as usize as *mut libc::c_void };
        // SAFETY: queues a signal to the calling thread, which has the kick handler installed
        // (CallControl::new) and the signal unblocked (CallControl::begin).
        assert_eq!(unsafe { libc::pthread_sigqueue(libc::pthread_self(), kick_signal(), value) }, 0);
    }

    #[test]
    fn a_kick_meant_for_another_call_leaves_this_one_running() {
        let control = CallControl::new().unwrap();
        let mut exit = Box::new(0u8);
        let p: *mut u8 = &mut *exit;
        let guard = control.begin(p, None);
        // SAFETY: `p` points into `exit`, alive until the end of the test; only this thread (and
        // its signal handler) touches it.
        let exit_set = || unsafe { std::ptr::read_volatile(p) } == 1;
        // A signal sent to this thread is handled before pthread_sigqueue returns.
        kick_self(guard.generation + 1);
        assert!(!exit_set(), "a late kick for another call is dropped");
        kick_self(guard.generation);
        assert!(exit_set(), "a kick for this call stops it");
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(p, 0) };
        kick_self(0);
        assert!(exit_set(), "a kick without a generation stops whatever runs");
        drop(guard);
    }

    #[test]
    fn a_handle_obtained_by_the_current_owner_stops_its_call() {
        let control = CallControl::new().unwrap();
        let old = InterruptHandle::new(&control);
        // A pool gives the sandbox to its next tenant.
        control.new_owner();
        let handle = InterruptHandle::new(&control);
        let mut exit = Box::new(0u8);
        let guard = control.begin(&mut *exit, None);
        assert!(!old.kill(), "the last tenant's handle is inert");
        assert!(handle.kill(), "the tenant's own handle works");
        assert_eq!(guard.stopped(), Some(StopReason::Killed));
        drop(guard);
        assert!(!handle.is_dropped());
        drop(control);
        assert!(handle.is_dropped() && !handle.kill(), "after the sandbox is gone a handle is inert");
    }

    /// The kick signal's set, for the mask and wait calls below.
    fn kick_set() -> libc::sigset_t {
        // SAFETY: sigemptyset initialises the zeroed set before sigaddset adds one signal to it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            set
        }
    }

    /// Holds kick signals sent to this thread pending, so a test can count them.
    fn block_kick_signal() {
        let set = kick_set();
        // SAFETY: changes only the calling thread's mask; `set` is initialised.
        assert_eq!(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }, 0);
    }

    fn kick_signal_blocked() -> bool {
        // SAFETY: with a null new set pthread_sigmask only reads this thread's mask into `current`,
        // which sigemptyset initialised.
        unsafe {
            let mut current: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut current);
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current), 0);
            libc::sigismember(&current, kick_signal()) == 1
        }
    }

    /// Takes every kick signal pending for this thread (blocked by `block_kick_signal`), without
    /// waiting, and returns the generation each carried (0 for one sent without a value).
    fn take_pending_kicks() -> Vec<u64> {
        let set = kick_set();
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let mut generations = Vec::new();
        loop {
            // SAFETY: all zeroes is a valid siginfo_t (a plain C struct).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set`, `info` and `zero` are initialised locals; with a zero timeout it
            // returns at once, the signal number when it took one pending signal of `set`.
            if unsafe { libc::sigtimedwait(&set, &mut info, &zero) } != kick_signal() {
                return generations;
            }
            // SAFETY: the kernel filled `info` for a real-time signal, whose value is `si_value`.
            generations.push(unsafe { info.si_value().sival_ptr } as u64);
        }
    }

    #[test]
    fn a_host_function_sees_its_call_cancelled_only_once_that_call_is_stopped() {
        let control = CallControl::new().unwrap();
        let handle = InterruptHandle::new(&control);
        assert!(!call_cancelled(), "outside a call");
        let mut exit = Box::new(0u8);
        let guard = control.begin(&mut *exit, None);
        assert!(!call_cancelled(), "a call that runs on");
        assert!(handle.kill());
        assert!(call_cancelled(), "the call was killed");
        // A host function of this call calls into another sandbox: that call is not cancelled,
        // and when it ends the killed call is this thread's again.
        let other = CallControl::new().unwrap();
        let mut other_exit = Box::new(0u8);
        let inner = other.begin(&mut *other_exit, None);
        assert!(!call_cancelled(), "the inner call runs on");
        drop(inner);
        assert!(call_cancelled(), "back in the killed call");
        drop(guard);
        assert!(!call_cancelled(), "the call is over");
        assert!(!handle.kill(), "with no call running a kill does nothing");
        let next = control.begin(&mut *exit, None);
        assert!(!call_cancelled() && next.stopped().is_none(), "a kill is not kept for the next call");
    }

    #[test]
    fn a_call_made_from_inside_another_gives_the_thread_back_when_it_ends() {
        let (outer, inner) = (CallControl::new().unwrap(), CallControl::new().unwrap());
        let (mut outer_exit, mut inner_exit) = (Box::new(0u8), Box::new(0u8));
        let (p_outer, p_inner): (*mut u8, *mut u8) = (&mut *outer_exit, &mut *inner_exit);
        let outer_guard = outer.begin(p_outer, None);
        drop(inner.begin(p_inner, None));
        // The watchdog's kick for the outer call must reach the outer call's vCPU.
        kick_self(outer_guard.generation);
        // SAFETY: both point into boxes alive until the end of the test; only this thread (and
        // its signal handler, which ran inside kick_self) touches them.
        let (outer_set, inner_set) = unsafe { (std::ptr::read_volatile(p_outer), std::ptr::read_volatile(p_inner)) };
        assert_eq!((outer_set, inner_set), (1, 0), "the outer call's kick set the outer vCPU's immediate_exit");
        drop(outer_guard);
        assert!(!InterruptHandle::new(&outer).kill(), "an ended call cannot be killed");
    }

    #[test]
    fn a_call_unblocks_the_kick_signal_its_thread_had_blocked() {
        std::thread::spawn(|| {
            let control = CallControl::new().unwrap();
            block_kick_signal();
            assert!(kick_signal_blocked());
            let mut exit = Box::new(0u8);
            let guard = control.begin(&mut *exit, None);
            assert!(!kick_signal_blocked(), "a kill could not reach this call");
            drop(guard);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_kill_sends_one_signal_carrying_the_calls_generation() {
        let control = CallControl::new().unwrap();
        let handle = InterruptHandle::new(&control);
        let (ready, started) = std::sync::mpsc::channel();
        let (killed, was_killed) = std::sync::mpsc::channel::<()>();
        let c = Arc::clone(&control);
        let vcpu = std::thread::spawn(move || {
            let mut exit = Box::new(0u8);
            let guard = c.begin(&mut *exit, None);
            // Not in the guest (in a host function, say), so the watchdog does not kick again.
            block_kick_signal();
            ready.send(()).unwrap();
            was_killed.recv().unwrap();
            (guard.generation, take_pending_kicks())
        });
        started.recv().unwrap();
        assert!(handle.kill());
        assert!(handle.kill(), "a second kill of a stopped call reports it stopping");
        killed.send(()).unwrap();
        let (generation, kicks) = vcpu.join().unwrap();
        assert_eq!(kicks, vec![generation], "one signal per stopped call, carrying its generation");
    }

    #[test]
    fn a_pause_is_kept_until_taken_and_interrupts_a_running_call_without_ending_it() {
        let control = CallControl::new().unwrap();
        control.pause();
        let mut exit = Box::new(0u8);
        let p: *mut u8 = &mut *exit;
        let guard = control.begin(p, None);
        assert!(guard.take_pause(), "a pause asked for between calls stops the next call");
        assert!(!guard.take_pause(), "a pause is taken once");
        control.pause();
        // SAFETY: `p` points into `exit`, alive until the end of the test; the signal handler that
        // wrote it ran on this thread before pthread_sigqueue returned.
        assert_eq!(unsafe { std::ptr::read_volatile(p) }, 1, "the running call leaves the guest");
        assert!(guard.take_pause());
        assert_eq!(guard.stopped(), None, "a pause does not end the call");
    }

    #[test]
    fn registering_forgets_dropped_controls_at_each_power_of_two_from_64() {
        assert!([0, 1, 32, 63, 65, 96, 127, 129].iter().all(|&n| !prune_due(n)));
        assert!([64, 128, 256, 1 << 20].iter().all(|&n| prune_due(n)));
        // A watchdog of its own, which never scans (no call has a deadline): only registering
        // forgets dropped controls here.
        let w = Watchdog::start();
        let live = CallControl::watched_by(w).unwrap();
        for _ in 0..1000 {
            drop(CallControl::watched_by(w).unwrap());
        }
        let controls = lock(&w.controls);
        assert!(controls.len() <= 128, "{} controls kept for 1 live one", controls.len());
        assert!(controls.iter().any(|c| std::ptr::eq(c.as_ptr(), Arc::as_ptr(&live))));
    }

    #[test]
    fn no_deadline_reads_as_the_parked_watchdogs_never() {
        // u64::MAX is `next_wake` for a parked watchdog: a deadline past what u64 nanoseconds
        // can count must still be earlier, or considering it would not wake the watchdog.
        let w = watchdog();
        let far = Instant::now().checked_add(Duration::from_secs(600 * 365 * 86_400)).unwrap();
        assert_eq!(w.nanos(far), u64::MAX - 1);
        assert_eq!(w.nanos(w.epoch), 0);
    }

    #[test]
    fn a_deadline_set_while_the_watchdog_scans_is_not_missed() {
        let w = Watchdog::start();
        // Registered first, so scanned first.
        let target = CallControl::watched_by(w).unwrap();
        let blocker = CallControl::watched_by(w).unwrap();
        let held = lock(&blocker.running);
        // The watchdog wakes and scans: past `target` (no call yet), then it waits for `blocker`.
        w.consider(Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        // A call starts meanwhile; the watchdog is awake, so considering its deadline wakes nothing.
        let mut exit = Box::new(0u8);
        let guard = target.begin(&mut *exit, Some(Duration::from_millis(20)));
        drop(held);
        let start = Instant::now();
        while guard.stopped().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(guard.stopped(), Some(StopReason::Deadline), "the watchdog must scan again");
    }

    #[test]
    fn a_stopped_call_is_kicked_again_at_most_once_per_rekick_interval() {
        let w = Watchdog::start();
        let control = CallControl::watched_by(w).unwrap();
        let handle = InterruptHandle::new(&control);
        let (ready, started) = std::sync::mpsc::channel();
        let (done, hammered) = std::sync::mpsc::channel::<Instant>();
        let c = Arc::clone(&control);
        let vcpu = std::thread::spawn(move || {
            let mut exit = Box::new(0u8);
            let guard = c.begin(&mut *exit, None);
            guard.in_guest(true);
            block_kick_signal();
            ready.send(()).unwrap();
            let killed_at = hammered.recv().unwrap();
            let kicks = take_pending_kicks();
            (guard.generation, kicks, killed_at.elapsed())
        });
        started.recv().unwrap();
        let killed_at = Instant::now();
        assert!(handle.kill());
        // Every look of the watchdog is a chance to kick too often: make it look all the time.
        while killed_at.elapsed() < Duration::from_millis(100) {
            w.consider(Instant::now());
            std::thread::yield_now();
        }
        done.send(killed_at).unwrap();
        let (generation, kicks, elapsed) = vcpu.join().unwrap();
        let most = elapsed.as_millis() / REKICK_AFTER.as_millis() + 2;
        // (That it is kicked again at all is a_killed_call_that_stays_in_the_guest_is_kicked_again.)
        assert!(!kicks.is_empty(), "the kill itself sends one");
        assert!(kicks.len() as u128 <= most, "{} kicks in {elapsed:?}, at most {most}", kicks.len());
        assert!(kicks.iter().all(|&g| g == generation), "{kicks:?}");
    }

    #[test]
    fn call_control_debug_shows_the_stopped_generation() {
        assert_eq!(format!("{:?}", CallControl::unregistered(watchdog())), "CallControl { stopped: 0, .. }");
    }
}
