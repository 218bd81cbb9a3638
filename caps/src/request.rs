//! Per-request state: which request a host call belongs to, and what it has used so far.
//!
//! The host functions of one function are registered once and shared by every sandbox of its
//! pool, so per-request state cannot live in the closures. It lives in the sandbox's own data
//! (the `T` of `Sandbox<T>`), which each host function reaches through `glint::Caller<'_, T>`:
//! a [`RequestState`] there, or a type of the embedder's that holds one and says where with
//! [`RequestData`]. A `SandboxPool` gives every checkout fresh data, so the counters start at
//! zero for every request; a sandbox kept across requests starts each with
//! [`RequestState::begin`].

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

/// The state the capability host functions keep for one request: which request it is, and what
/// it used so far (the per-request quotas count here).
///
/// `Default` is a request with no id (denials then carry none) and nothing used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestState {
    /// The request, when the embedder said which.
    pub context: Option<RequestContext>,
    /// What it used so far.
    pub usage: RequestUsage,
}

impl RequestState {
    /// The state of a request that has used nothing yet.
    pub fn new(context: RequestContext) -> RequestState {
        RequestState { context: Some(context), usage: RequestUsage::default() }
    }

    /// Starts `context`: what an earlier request used is forgotten (for a sandbox kept across
    /// requests; a pool's checkouts start fresh).
    pub fn begin(&mut self, context: RequestContext) {
        *self = RequestState::new(context);
    }

    /// What the request used so far.
    pub fn usage(&self) -> RequestUsage {
        self.usage
    }

    /// Ends the request: what it used; the state is back to its default.
    pub fn finish(&mut self) -> RequestUsage {
        std::mem::take(self).usage
    }
}

/// Sandbox data that the capability host functions count into: implemented by [`RequestState`]
/// itself, by `()` (no per-request state: see below), and by an embedder's own data type that
/// holds a `RequestState`:
///
/// ```
/// use glint_caps::{RequestData, RequestState};
///
/// #[derive(Default)]
/// struct Tenant {
///     caps: RequestState,
///     tenant_id: u64,
/// }
///
/// impl RequestData for Tenant {
///     fn request_state(&mut self) -> Option<&mut RequestState> {
///         Some(&mut self.caps)
///     }
/// }
/// ```
///
/// Data that gives no state (`()`, the data of `SandboxBuilder::new()`) makes every call count
/// against one counter of the registration, shared by all its sandboxes and never reset: the
/// per-request limit then becomes a limit over the registration's life, and its error says so
/// ([`Quota::OutboundRequestsUnscoped`](crate::Quota::OutboundRequestsUnscoped)).
pub trait RequestData: Send + 'static {
    /// The state this sandbox's current request counts into, if it keeps one.
    fn request_state(&mut self) -> Option<&mut RequestState>;
}

impl RequestData for RequestState {
    fn request_state(&mut self) -> Option<&mut RequestState> {
        Some(self)
    }
}

impl RequestData for () {
    fn request_state(&mut self) -> Option<&mut RequestState> {
        None
    }
}

/// Where one capability call counts: the request's own state, or the registration's shared one.
pub(crate) enum Counter<'a> {
    /// The calling sandbox's request.
    Request(&'a mut RequestState),
    /// No request state: the registration's counter (locked only while it is updated, never
    /// across a network request).
    Shared(&'a Mutex<RequestState>),
}

impl Counter<'_> {
    /// Runs `f` on the state; `f` must not block.
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut RequestState) -> R) -> R {
        match self {
            Counter::Request(state) => f(state),
            Counter::Shared(shared) => f(&mut shared.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// Whether calls count per request.
    pub(crate) fn is_per_request(&self) -> bool {
        matches!(self, Counter::Request(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: &str) -> RequestContext {
        RequestContext { request_id: id.into(), function: "f".into() }
    }

    #[test]
    fn a_state_counts_per_request_and_begin_resets_it() {
        let mut state = RequestState::new(ctx("1"));
        let bump = |state: &mut RequestState| Counter::Request(state).with(|s| s.usage.outbound_requests += 1);
        bump(&mut state);
        bump(&mut state);
        assert_eq!(state.usage().outbound_requests, 2);
        state.begin(ctx("2"));
        bump(&mut state);
        assert_eq!(state.context.as_ref().unwrap().request_id.as_ref(), "2");
        assert_eq!(state.finish().outbound_requests, 1);
        assert_eq!(state, RequestState::default());
    }

    #[test]
    fn data_without_state_counts_in_the_shared_counter() {
        let shared = Mutex::new(RequestState::default());
        let mut data = ();
        let mut counter = match data.request_state() {
            Some(s) => Counter::Request(s),
            None => Counter::Shared(&shared),
        };
        assert!(!counter.is_per_request());
        counter.with(|s| s.usage.kv_reads += 1);
        assert_eq!(shared.lock().unwrap().usage.kv_reads, 1);
        let mut state = RequestState::default();
        assert!(state.request_state().is_some());
    }
}
