//! Prometheus metrics through the `metrics` facade, rendered at `/metrics` by
//! metrics-exporter-prometheus (recorder only: the server serves the text itself).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `glint_requests_total` | counter | `function` (`-` when no route matched), `status` |
//! | `glint_request_duration_seconds` | histogram | `function` |
//! | `glint_requests_in_flight` | gauge | `function` (admitted: running or waiting) |
//! | `glint_sandboxes` | gauge | `function`, `state` (`ready`, `busy`, `creating`) |
//! | `glint_guest_faults_total` | counter | `function`, `kind` (the `glint::ErrorKind` of a failed call) |
//! | `glint_timeouts_total` | counter | `function` |
//! | `glint_overload_rejections_total` | counter | `function` |
//! | `glint_capability_denials_total` | counter | `function`, `capability` |
//! | `glint_calls_cancelled_total` | counter | `function` (the client went away; the call was stopped) |
//! | `glint_connections_open` | gauge | |
//! | `glint_connections_rejected_total` | counter | (over `max_connections`) |
//! | `glint_guest_log_lines_dropped_total` | counter | `function` (over the per-request log budget) |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REQUESTS: &str = "glint_requests_total";
pub const DURATION: &str = "glint_request_duration_seconds";
pub const SANDBOXES: &str = "glint_sandboxes";
pub const IN_FLIGHT: &str = "glint_requests_in_flight";
pub const GUEST_FAULTS: &str = "glint_guest_faults_total";
pub const TIMEOUTS: &str = "glint_timeouts_total";
pub const OVERLOADED: &str = "glint_overload_rejections_total";
pub const DENIALS: &str = "glint_capability_denials_total";
pub const CANCELLED: &str = "glint_calls_cancelled_total";
pub const CONNECTIONS_OPEN: &str = "glint_connections_open";
pub const CONNECTIONS_REJECTED: &str = "glint_connections_rejected_total";
pub const LOG_DROPPED: &str = "glint_guest_log_lines_dropped_total";

/// Every metric name above plus the audit counter, for tests that check names used elsewhere
/// (deploy/prometheus/alerts.yml).
#[cfg(test)]
pub const ALL: &[&str] = &[
    REQUESTS,
    DURATION,
    SANDBOXES,
    IN_FLIGHT,
    GUEST_FAULTS,
    TIMEOUTS,
    OVERLOADED,
    DENIALS,
    CANCELLED,
    CONNECTIONS_OPEN,
    CONNECTIONS_REJECTED,
    LOG_DROPPED,
    crate::audit::AUDIT_EVENTS,
];

/// Request-duration buckets, in seconds: 50 us to 10 s.
const BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (`None` if another recorder
/// was installed first, in which case `/metrics` answers 503).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Full(DURATION.into()), BUCKETS);
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::error!("cannot install the metrics recorder: {e}");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Requests answered, by function and HTTP status.");
    describe_histogram!(DURATION, Unit::Seconds, "Time from the complete request head to the response.");
    describe_gauge!(SANDBOXES, "Sandboxes of each function's pool, by state.");
    describe_gauge!(IN_FLIGHT, "Requests admitted to each function: running or waiting.");
    describe_counter!(GUEST_FAULTS, "Guest calls that failed, by glint error kind.");
    describe_counter!(TIMEOUTS, "Guest calls stopped at their deadline.");
    describe_counter!(OVERLOADED, "Requests refused with 503 because the function was full.");
    describe_counter!(DENIALS, "Capability uses refused at run time.");
    describe_counter!(CANCELLED, "Guest calls stopped because their client went away.");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open.");
    describe_counter!(CONNECTIONS_REJECTED, "Connections refused over max_connections.");
    describe_counter!(LOG_DROPPED, "Guest log lines dropped over the per-request log budget.");
    describe_counter!(crate::audit::AUDIT_EVENTS, "Audit events, by event and function (schema: cli/src/audit.rs).");
}
