//! Per-request state: which request a host call belongs to, and what it has used so far.
//!
//! The host functions of one function are registered once and shared by every sandbox of its
//! pool, so per-request state cannot live in the closures. A guest call runs synchronously on
//! the thread that made it and so do its host calls; the server marks the request on that thread
//! with [`enter_request`], and the host functions find it in a thread-local.
//!
//! This module is the only glue that changes when the core gives host functions a
//! `Caller<'_, T>`: [`RequestState`] becomes (part of) `T`, reset by the pool when a sandbox is
//! given back, and `with_request` reads it from the caller instead of the thread-local.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

/// Who a request is, for denials, audit events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The server's request id.
    pub request_id: Arc<str>,
    /// The function that serves it.
    pub function: Arc<str>,
}

/// What one request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestUsage {
    /// Outbound HTTP requests sent (or attempted past the allow-list).
    pub outbound_requests: u32,
    /// Key-value reads (gets and lists).
    pub kv_reads: u64,
    /// Key-value writes (sets and deletes).
    pub kv_writes: u64,
    /// Bytes of keys and values written by sets.
    pub kv_bytes_written: u64,
    /// Calls denied or stopped by a quota.
    pub denials: u32,
}

/// The state host functions see for the current request.
#[derive(Debug, Clone, Default)]
pub struct RequestState {
    /// The request, when the server said which.
    pub context: Option<RequestContext>,
    /// What it used so far.
    pub usage: RequestUsage,
}

thread_local! {
    static CURRENT: RefCell<Option<RequestState>> = const { RefCell::new(None) };
}

/// Marks the calling thread as serving `context` until the guard is dropped: every capability
/// host call made on this thread meanwhile counts against this request's quotas.
///
/// Enter on the thread that makes the guest call, right before it, and drop (or
/// [`finish`](RequestGuard::finish)) right after. Guards nest: the inner one hides the outer
/// until it is dropped.
pub fn enter_request(context: RequestContext) -> RequestGuard {
    let fresh = RequestState { context: Some(context), usage: RequestUsage::default() };
    let previous = CURRENT.with(|c| c.borrow_mut().replace(fresh));
    RequestGuard { previous: Some(previous), _not_send: PhantomData }
}

/// The mark of [`enter_request`]. Not `Send`: it must be dropped on the thread that entered.
#[derive(Debug)]
pub struct RequestGuard {
    /// What was current before (`Some(None)`: nothing); `None` once restored.
    previous: Option<Option<RequestState>>,
    _not_send: PhantomData<*const ()>,
}

impl RequestGuard {
    /// What the request used so far.
    pub fn usage(&self) -> RequestUsage {
        CURRENT.with(|c| c.borrow().as_ref().map(|s| s.usage).unwrap_or_default())
    }

    /// Ends the request; what it used.
    pub fn finish(mut self) -> RequestUsage {
        self.restore().map(|s| s.usage).unwrap_or_default()
    }

    fn restore(&mut self) -> Option<RequestState> {
        let previous = self.previous.take()?;
        CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Runs `f` on the current request's state, or on `ambient` when no request is marked (calls
/// outside any [`enter_request`]: their per-request quotas then count for the registration's
/// whole life). `f` must not call back into this module.
pub(crate) fn with_request<R>(ambient: &Mutex<RequestState>, f: impl FnOnce(&mut RequestState) -> R) -> R {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(state) => f(state),
        None => f(&mut ambient.lock().unwrap_or_else(PoisonError::into_inner)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: &str) -> RequestContext {
        RequestContext { request_id: id.into(), function: "f".into() }
    }

    #[test]
    fn usage_counts_per_request_and_resets() {
        let ambient = Mutex::new(RequestState::default());
        let bump = || with_request(&ambient, |s| s.usage.outbound_requests += 1);
        let first = enter_request(ctx("1"));
        bump();
        bump();
        assert_eq!(first.usage().outbound_requests, 2);
        assert_eq!(first.finish().outbound_requests, 2);
        let second = enter_request(ctx("2"));
        bump();
        assert_eq!(with_request(&ambient, |s| s.context.clone()).unwrap().request_id.as_ref(), "2");
        assert_eq!(second.finish().outbound_requests, 1);
        // Outside any request: the ambient counter.
        bump();
        assert_eq!(ambient.lock().unwrap().usage.outbound_requests, 1);
    }

    #[test]
    fn guards_nest_and_threads_are_separate() {
        let ambient = Mutex::new(RequestState::default());
        let outer = enter_request(ctx("outer"));
        with_request(&ambient, |s| s.usage.kv_reads += 1);
        {
            let _inner = enter_request(ctx("inner"));
            with_request(&ambient, |s| s.usage.kv_reads += 10);
            std::thread::scope(|t| {
                t.spawn(|| {
                    // Another thread sees no request.
                    assert!(with_request(&ambient, |s| s.context.is_none()));
                });
            });
        }
        assert_eq!(outer.finish().kv_reads, 1);
        assert!(with_request(&ambient, |s| s.context.is_none()));
    }
}
