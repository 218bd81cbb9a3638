//! Async calls on a pool (feature `async`): they run on glint's worker threads, never on the
//! caller's, and dropping a future kills its guest call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
#![cfg(feature = "async")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use glint::{AsyncPool, Error, PoolConfig, SandboxPool, Value};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Wakes by unparking the thread that polls: the smallest executor there is.
struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn async_pool(max: usize, workers: usize) -> AsyncPool {
    let config = PoolConfig { max_sandboxes: max, ready_target: max, ..Default::default() };
    // A long deadline, so a call that was not killed is told apart from one that was.
    let builder = test_builder().call_timeout(Some(Duration::from_secs(60)));
    AsyncPool::new(SandboxPool::new(&builder, &testguest(), config).unwrap(), workers).unwrap()
}

#[test]
fn calls_complete_as_futures_on_worker_threads() {
    require_kvm!();
    let pool = async_pool(2, 2);
    let add = pool.pool().typed_fn::<(i32, i32), i32>("host_add").unwrap();
    let futures: Vec<_> = (0..8).map(|i| pool.call_typed(&add, (i, 1))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(block_on(f).unwrap(), i as i32 + 1);
    }
    assert_eq!(block_on(pool.call("rt_string", vec![Value::String("x".into())])).unwrap(), Value::String("x".into()));
    // Errors arrive typed, and the sandbox is restored for the next caller as usual.
    assert!(matches!(block_on(pool.call("ud2", vec![])), Err(Error::GuestFault(_))));
    assert_eq!(block_on(pool.call("get_state", vec![])).unwrap(), Value::U64(0));
}

#[test]
fn dropping_the_future_kills_the_guest_call() {
    require_kvm!();
    let pool = async_pool(1, 1);
    // The call spins until its deadline (60 s) unless killed.
    let start = Instant::now();
    {
        let mut spin = Box::pin(pool.call("spin", vec![]));
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        assert!(spin.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        // Wait until the worker runs it (the pool's one sandbox is lent out).
        while pool.pool().stats().lent == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "the call never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
    } // dropped here: the guest call is killed
      // The one worker and the one sandbox are free again long before the 60 s deadline.
    assert_eq!(block_on(pool.call("rt_i32", vec![Value::I32(7)])).unwrap(), Value::I32(7));
    assert!(start.elapsed() < Duration::from_secs(30), "the dropped call ran on: {:?}", start.elapsed());
    let stats = pool.pool().stats();
    assert_eq!(stats.created, 1, "the killed call's sandbox was restored and lent again: {stats:?}");
}

#[test]
fn calls_still_queued_when_the_pool_is_dropped_resolve_to_an_error() {
    require_kvm!();
    let pool = async_pool(1, 1);
    let busy = pool.call("busy", vec![Value::U64(50_000_000)]);
    let queued: Vec<_> = (0..4).map(|_| pool.call("rt_i32", vec![Value::I32(1)])).collect();
    drop(pool);
    let _ = block_on(busy);
    for f in queued {
        match block_on(f) {
            Ok(v) => assert_eq!(v, Value::I32(1), "a call that ran before the drop answered"),
            Err(e) => assert!(matches!(e, Error::PoolExhausted { .. }), "{e:?}"),
        }
    }
}
