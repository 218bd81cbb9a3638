//! Async calls on a pool, for embedders on an async runtime (feature `async`, off by default).
//!
//! `KVM_RUN` blocks its thread for the whole call, so a guest call must never run on an async
//! runtime's threads. [`AsyncPool`] owns a few worker threads of its own: a call is queued to
//! them, takes a fresh sandbox from the pool there, and its result wakes the future. Dropping a
//! [`CallFuture`] before it completes kills the guest call (through the sandbox's
//! [`InterruptHandle`](crate::InterruptHandle)), and the sandbox goes back to the pool restored,
//! as every checkout does. Runtime-agnostic: std only, no executor assumed.

use super::{PooledSandbox, SandboxPool};
use crate::func::TypedFn;
use crate::vmm::interrupt::InterruptHandle;
use crate::vmm::{Doing, VmmError};
use crate::{Error, Value};
use glint_abi::convert::{EncodeParams, FromWire};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

/// A queued call: run on a worker, or refused when the pool shuts down first.
trait Work<T>: Send {
    fn run(self: Box<Self>, pool: &SandboxPool<T>);
    fn refuse(self: Box<Self>);
}

type Job<T> = Box<dyn Work<T>>;

struct Call<R, F> {
    slot: Arc<Slot<R>>,
    call: F,
}

impl<T, R, F> Work<T> for Call<R, F>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnOnce(&mut PooledSandbox<T>) -> Result<R, Error> + Send + 'static,
{
    fn run(self: Box<Self>, pool: &SandboxPool<T>) {
        let Call { slot, call } = *self;
        slot.run(pool, call);
    }

    fn refuse(self: Box<Self>) {
        self.slot.finish(Err(shutting_down()));
    }
}

fn shutting_down() -> Error {
    Error::PoolExhausted { max: 0, why: crate::error::PoolEmpty::ShuttingDown }
}

struct Queue<T> {
    jobs: VecDeque<Job<T>>,
    closed: bool,
}

struct Shared<T> {
    pool: SandboxPool<T>,
    queue: Mutex<Queue<T>>,
    ready: Condvar,
}

fn lock<Q>(m: &Mutex<Q>) -> MutexGuard<'_, Q> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`SandboxPool`] whose calls are futures, run on worker threads the `AsyncPool` owns.
pub struct AsyncPool<T: Send + 'static = ()> {
    shared: Arc<Shared<T>>,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> std::fmt::Debug for AsyncPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPool").field("pool", &self.shared.pool).field("workers", &self.workers.len()).finish()
    }
}

impl<T: Send + 'static> AsyncPool<T> {
    /// Serves `pool`'s calls on `workers` threads (at least one): at most that many guest calls
    /// run at once, the rest wait in order.
    ///
    /// # Errors
    /// A worker thread could not be started.
    pub fn new(pool: SandboxPool<T>, workers: usize) -> Result<AsyncPool<T>, Error> {
        let shared = Arc::new(Shared {
            pool,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false }),
            ready: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("glint-async-{i}")).spawn(move || s.work());
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    let pool = AsyncPool { shared, workers: handles };
                    drop(pool);
                    return Err(
                        VmmError::System { call: "clone", doing: Doing::StartingThread, source: Arc::new(e) }.into()
                    );
                }
            }
        }
        Ok(AsyncPool { shared, workers: handles })
    }

    /// The pool the calls run in.
    pub fn pool(&self) -> &SandboxPool<T> {
        &self.shared.pool
    }

    /// Calls `name` in a fresh sandbox on a worker thread. Dropping the future kills the call.
    pub fn call(&self, name: &str, args: Vec<Value>) -> CallFuture<Value> {
        let name = name.to_owned();
        self.submit(move |sb| sb.call(&name, &args))
    }

    /// Calls a typed function in a fresh sandbox on a worker thread. Dropping the future kills
    /// the call.
    pub fn call_typed<P, R>(&self, f: &TypedFn<P, R>, args: P) -> CallFuture<R>
    where
        P: EncodeParams + Send + 'static,
        R: FromWire + Send + 'static,
    {
        let f = f.clone();
        self.submit(move |sb| f.call(sb, args))
    }

    fn submit<R: Send + 'static>(
        &self,
        call: impl FnOnce(&mut PooledSandbox<T>) -> Result<R, Error> + Send + 'static,
    ) -> CallFuture<R> {
        let slot = Arc::new(Slot { state: Mutex::new(State::Queued { waker: None }) });
        let job: Job<T> = Box::new(Call { slot: Arc::clone(&slot), call });
        let mut q = lock(&self.shared.queue);
        if q.closed {
            drop(q);
            job.refuse();
        } else {
            q.jobs.push_back(job);
            drop(q);
            self.shared.ready.notify_one();
        }
        CallFuture { slot }
    }
}

impl<T: Send + 'static> Shared<T> {
    fn work(&self) {
        loop {
            let job = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
            };
            job.run(&self.pool);
        }
    }
}

impl<T: Send + 'static> Drop for AsyncPool<T> {
    fn drop(&mut self) {
        let abandoned: Vec<Job<T>> = {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            q.jobs.drain(..).collect()
        };
        // Queued calls never ran: their futures resolve to a shut-down error.
        for job in abandoned {
            job.refuse();
        }
        self.shared.ready.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

enum State<R> {
    /// Waiting for a worker.
    Queued { waker: Option<Waker> },
    /// A worker runs it; `handle` stops it.
    Running { waker: Option<Waker>, handle: InterruptHandle },
    /// The future was dropped.
    Abandoned,
    /// Finished; the result waits for `poll`.
    Done(Result<R, Error>),
    /// The result was taken.
    Taken,
}

struct Slot<R> {
    state: Mutex<State<R>>,
}

impl<R> Slot<R> {
    /// Runs the call on a worker thread, unless its future is gone.
    fn run<T: Send + 'static>(
        &self,
        pool: &SandboxPool<T>,
        call: impl FnOnce(&mut PooledSandbox<T>) -> Result<R, Error>,
    ) {
        if matches!(*lock(&self.state), State::Abandoned) {
            return;
        }
        let mut sandbox = match pool.take() {
            Ok(sb) => sb,
            Err(e) => return self.finish(Err(e)),
        };
        {
            let mut s = lock(&self.state);
            match std::mem::replace(&mut *s, State::Taken) {
                State::Queued { waker } => *s = State::Running { waker, handle: sandbox.interrupt_handle() },
                // Dropped while this worker took the sandbox: give it back unused.
                other => {
                    *s = other;
                    return;
                }
            }
        }
        // A drop between here and the call's start finds no call to kill; the call then runs to
        // its end or its deadline, and its result is discarded.
        let result = call(&mut sandbox);
        drop(sandbox);
        self.finish(result);
    }

    fn finish(&self, result: Result<R, Error>) {
        let mut s = lock(&self.state);
        let waker = match std::mem::replace(&mut *s, State::Taken) {
            State::Queued { waker } | State::Running { waker, .. } => waker,
            State::Abandoned => {
                *s = State::Abandoned;
                return;
            }
            State::Done(_) | State::Taken => None,
        };
        *s = State::Done(result);
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A guest call in flight on an [`AsyncPool`]'s worker thread. Dropping it before it completes
/// kills the call.
pub struct CallFuture<R> {
    slot: Arc<Slot<R>>,
}

impl<R> std::fmt::Debug for CallFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallFuture").finish_non_exhaustive()
    }
}

impl<R> Future for CallFuture<R> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot.state);
        match &mut *s {
            State::Queued { waker } | State::Running { waker, .. } => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut *s, State::Taken) {
                State::Done(r) => Poll::Ready(r),
                _ => Poll::Pending,
            },
            State::Abandoned | State::Taken => Poll::Ready(Err(shutting_down())),
        }
    }
}

impl<R> Drop for CallFuture<R> {
    fn drop(&mut self) {
        let mut s = lock(&self.slot.state);
        if let State::Running { handle, .. } = std::mem::replace(&mut *s, State::Abandoned) {
            drop(s);
            handle.kill();
        }
    }
}
