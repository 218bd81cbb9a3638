//! What a call did, and what a guest logged: the records a sandbox hands its embedder.

/// What the last call did, for metrics and for spotting exit storms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// VM exits, the final one included.
    pub exits: u64,
    /// Host calls the guest made.
    pub host_calls: u64,
    /// Log lines the guest wrote.
    pub log_lines: u64,
    /// Bytes of log text the guest wrote (kept or dropped).
    pub log_bytes: u64,
    /// Log lines dropped because the call exceeded its log budget (with
    /// [`LogOverflow::EndCall`](crate::LogOverflow::EndCall): the one line that ended the call).
    pub log_lines_dropped: u64,
}

/// A line the guest logged.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Level, as the guest chose it.
    pub level: tracing::Level,
    /// The text, sanitised (control characters escaped) and capped.
    pub message: String,
}
