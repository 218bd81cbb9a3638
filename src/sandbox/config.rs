//! The configuration every sandbox of one builder shares: host functions, the log hook, the call
//! deadline and the per-call limits.

use super::stats::LogRecord;
use crate::debug::core::CoreDumpConfig;
use crate::func::host::HostFunctions;
use crate::vmm::MsrFilter;
use std::sync::Arc;
use std::time::Duration;

pub(crate) type LogHook = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Per-call bounds on what a guest can make the host do, beyond the buffer sizes (which bound
/// every message a guest writes).
///
/// Build one from the default and change what you need, so new limits keep their defaults:
///
/// ```
/// use glint::{Limits, LogOverflow};
/// let strict = Limits { max_log_bytes: 4096, log_overflow: LogOverflow::EndCall, ..Limits::default() };
/// assert_eq!(strict.max_host_calls, Limits::default().max_host_calls);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Host calls one guest call may make; more ends the call with
    /// `Error::LimitExceeded { limit: Limit::HostCalls, .. }` before the extra one is served.
    pub max_host_calls: u64,
    /// Bytes of log text one guest call may write (the message bytes, kept or not); what happens
    /// to a line that would go past it is `log_overflow`.
    pub max_log_bytes: u64,
    /// What a log line past `max_log_bytes` does.
    pub log_overflow: LogOverflow,
}

/// What a guest's log line past [`Limits::max_log_bytes`] does. Either way the budget holds:
/// no line past it reaches `tracing` or the log hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogOverflow {
    /// The line is dropped (the first drop of a call logs one warning) and the call goes on;
    /// [`CallStats::log_lines_dropped`](crate::CallStats::log_lines_dropped) counts the drops.
    /// The default.
    #[default]
    DropLines,
    /// The call ends with `Error::LimitExceeded { limit: Limit::LogBytes, value: max_log_bytes }`
    /// (which poisons the sandbox, like every exceeded limit); the line is not logged.
    EndCall,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_host_calls: 1 << 20, max_log_bytes: 1 << 20, log_overflow: LogOverflow::DropLines }
    }
}

/// Default per-call deadline: generous for real work, finite so nothing hangs forever.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a builder gives each sandbox it builds (cheap to clone: the closures are shared).
pub(crate) struct SandboxConfig<T> {
    pub(crate) host_fns: HostFunctions<T>,
    pub(crate) on_log: Option<LogHook>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) limits: Limits,
    /// Imports with no registered host function are allowed: calling one fails as not found.
    pub(crate) unknown_imports_as_traps: bool,
    /// The MSR filter each VM gets.
    pub(crate) msr_filter: MsrFilter,
    /// Where faults write core files, if anywhere.
    pub(crate) core_dumps: Option<Arc<CoreDumpConfig>>,
}

impl<T> Clone for SandboxConfig<T> {
    fn clone(&self) -> Self {
        SandboxConfig {
            host_fns: self.host_fns.clone(),
            on_log: self.on_log.clone(),
            call_timeout: self.call_timeout,
            limits: self.limits,
            unknown_imports_as_traps: self.unknown_imports_as_traps,
            msr_filter: self.msr_filter,
            core_dumps: self.core_dumps.clone(),
        }
    }
}

impl<T> Default for SandboxConfig<T> {
    fn default() -> Self {
        SandboxConfig {
            host_fns: HostFunctions::default(),
            on_log: None,
            call_timeout: Some(DEFAULT_CALL_TIMEOUT),
            limits: Limits::default(),
            unknown_imports_as_traps: false,
            msr_filter: MsrFilter::Off,
            core_dumps: None,
        }
    }
}
