//! The run-time quotas of a function, by the manifest key that sets each, and the typed error a
//! request that runs into one gets.
//!
//! | quota | manifest key | enforced by | the request's answer |
//! | --- | --- | --- | --- |
//! | call time | `timeout_ms` | the sandbox's deadline (`glint::Error::Timeout`) | 504 `timeout` |
//! | memory | `memory_mib` | the guest's heap: an allocation it cannot satisfy ends the call | 500 `quota_exceeded` |
//! | host calls per request | `max_host_calls` | `glint::Limits` (`LimitExceeded { HostCalls }`) | 500 `quota_exceeded` |
//! | log bytes per request | `max_log_bytes` | `glint::Limits` (`LimitExceeded { LogBytes }` with `log_overflow = "fail"`; lines dropped with `"drop"`, the default) | 500 `quota_exceeded` (`fail`), the normal answer (`drop`) |
//! | response size | `max_response_bytes` | the server, on the guest's result | 500 `response_too_large` |
//! | key-value bytes per store | `kv_stores.<store>.quota_bytes` / `kv_default_quota_bytes` | glint-caps (`CapsError::QuotaExceeded`) | the guest gets the error (kind `quota_exceeded`) and answers |
//! | outbound requests per request | `max_outbound_requests` | glint-caps (`CapsError::QuotaExceeded`) | the guest gets the error and answers |
//!
//! Every one leaves one audit event with `rule` = the manifest key (`quota_exceeded`, or
//! `timeout` for the call time) and counts once in `glint_quota_exceeded_total{function, quota}`.

use std::fmt;

/// A run-time quota of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quota {
    /// `timeout_ms`: how long one call may run.
    CallTime,
    /// `memory_mib`: the guest's memory.
    Memory,
    /// `max_host_calls`: host calls one request may make.
    HostCalls,
    /// `max_log_bytes`: log text one request may write.
    LogBytes,
    /// `max_response_bytes`: the largest response body or typed result.
    ResponseBytes,
    /// Key-value bytes of one store; `key` is `kv_stores.<store>.quota_bytes` or
    /// `kv_default_quota_bytes`.
    KvBytes {
        /// The manifest key that sets it.
        key: String,
    },
    /// `max_outbound_requests`: outbound HTTP requests one request may make.
    OutboundRequests,
}

impl Quota {
    /// The manifest key that sets the quota: the `rule` of its audit event, the `quota` label of
    /// its counter and the `quota` field of the error body.
    pub fn key(&self) -> &str {
        match self {
            Quota::CallTime => "timeout_ms",
            Quota::Memory => "memory_mib",
            Quota::HostCalls => "max_host_calls",
            Quota::LogBytes => "max_log_bytes",
            Quota::ResponseBytes => "max_response_bytes",
            Quota::KvBytes { key } => key,
            Quota::OutboundRequests => "max_outbound_requests",
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A request ran into a quota: which, its value, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota {quota} = {limit} exceeded: {detail}")]
pub struct QuotaExceeded {
    /// The quota.
    pub quota: Quota,
    /// Its value, in the manifest's unit (milliseconds, MiB, calls, bytes, requests).
    pub limit: u64,
    /// What the request did, in the server's words (never guest text).
    pub detail: String,
}

impl QuotaExceeded {
    /// The quota a capability call ran into (`glint_caps::Denial::quota`): outbound requests or
    /// the key-value bytes of a store; `detail` is the error the guest received.
    pub fn of_capability(hit: &glint_caps::QuotaHit, detail: &str) -> QuotaExceeded {
        let quota = if hit.key == Quota::OutboundRequests.key() {
            Quota::OutboundRequests
        } else {
            Quota::KvBytes { key: hit.key.clone() }
        };
        QuotaExceeded { quota, limit: hit.limit, detail: detail.to_owned() }
    }

    /// Its audit event: `timeout` for the call time, `quota_exceeded` for the others; `rule` is
    /// the manifest key, `detail` this error's message.
    pub fn audit_event(&self) -> crate::audit::AuditEvent {
        use crate::audit::{AuditEvent, AuditKind};
        let kind = if self.quota == Quota::CallTime { AuditKind::Timeout } else { AuditKind::QuotaExceeded };
        AuditEvent::new(kind, self.to_string()).rule(self.quota.key())
    }

    /// The quota a failed guest call ran into, if it ran into one: the call time
    /// (`Error::Timeout`), host calls and log bytes (`Error::LimitExceeded`), memory (a guest
    /// panic with the message Rust's allocator gives when the heap cannot satisfy an allocation).
    pub fn of_call(e: &glint::Error, memory_mib: u64) -> Option<QuotaExceeded> {
        match e {
            glint::Error::Timeout(d) => Some(QuotaExceeded {
                quota: Quota::CallTime,
                limit: d.as_millis() as u64,
                detail: format!("the call ran past {} ms and was stopped", d.as_millis()),
            }),
            glint::Error::LimitExceeded { limit: glint::Limit::HostCalls, value } => Some(QuotaExceeded {
                quota: Quota::HostCalls,
                limit: *value,
                detail: format!("the guest's host call {} was refused and the call ended", value.saturating_add(1)),
            }),
            glint::Error::LimitExceeded { limit: glint::Limit::LogBytes, value } => Some(QuotaExceeded {
                quota: Quota::LogBytes,
                limit: *value,
                detail: format!("a log line past {value} bytes ended the call (log_overflow = \"fail\")"),
            }),
            glint::Error::GuestPanic { message } => {
                let size = allocation_failure(message)?;
                Some(QuotaExceeded {
                    quota: Quota::Memory,
                    limit: memory_mib,
                    detail: format!("the guest could not allocate {size} bytes in its {memory_mib} MiB"),
                })
            }
            _ => None,
        }
    }
}

/// The size in `memory allocation of N bytes failed`, the message of Rust's default allocation
/// error handler (what a `glint-guest` program panics with when its heap is exhausted).
fn allocation_failure(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("memory allocation of ")?;
    let (n, rest) = rest.split_once(' ')?;
    rest.starts_with("bytes failed").then_some(())?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_library_limit_maps_to_its_quota_key_and_value() {
        let cases = [
            (glint::Error::Timeout(Duration::from_millis(300)), "timeout_ms", 300),
            (glint::Error::LimitExceeded { limit: glint::Limit::HostCalls, value: 10 }, "max_host_calls", 10),
            (glint::Error::LimitExceeded { limit: glint::Limit::LogBytes, value: 64 }, "max_log_bytes", 64),
            (
                glint::Error::GuestPanic { message: "memory allocation of 67108864 bytes failed (at x.rs:1)".into() },
                "memory_mib",
                16,
            ),
        ];
        for (e, key, limit) in cases {
            let q = QuotaExceeded::of_call(&e, 16).unwrap();
            assert_eq!((q.quota.key(), q.limit), (key, limit), "{e}");
            assert!(q.to_string().starts_with(&format!("quota {key} = {limit} exceeded: ")), "{q}");
        }
        assert_eq!(QuotaExceeded::of_call(&glint::Error::GuestPanic { message: "memory allocation".into() }, 16), None);
        assert_eq!(QuotaExceeded::of_call(&glint::Error::GuestPanic { message: "boom".into() }, 16), None);
        assert_eq!(QuotaExceeded::of_call(&glint::Error::Cancelled, 16), None);
    }

    #[test]
    fn capability_quotas_are_named_by_their_manifest_key() {
        let hit = glint_caps::QuotaHit { key: "kv_stores.default.quota_bytes".into(), limit: 64 };
        let q = QuotaExceeded::of_capability(&hit, "quota_exceeded: ...");
        assert_eq!(q.quota, Quota::KvBytes { key: "kv_stores.default.quota_bytes".into() });
        let event = q.audit_event();
        assert_eq!((event.kind, event.rule.as_deref()), (crate::audit::AuditKind::QuotaExceeded, Some(q.quota.key())));
        assert!(event.detail.starts_with("quota kv_stores.default.quota_bytes = 64 exceeded: "), "{}", event.detail);
        let hit = glint_caps::QuotaHit { key: "max_outbound_requests".into(), limit: 2 };
        assert_eq!(QuotaExceeded::of_capability(&hit, "").quota, Quota::OutboundRequests);
        let timeout = QuotaExceeded::of_call(&glint::Error::Timeout(Duration::from_millis(9)), 16).unwrap();
        assert_eq!(timeout.audit_event().kind, crate::audit::AuditKind::Timeout);
    }
}
