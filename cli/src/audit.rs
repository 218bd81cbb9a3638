//! Audit events: one JSON object per line, to a file or stdout, and the same as `tracing` events
//! (target `glint::audit`), each also counted in `glint_audit_events_total{event, function}`.
//!
//! # Schema (stable)
//!
//! Every line is one JSON object with exactly these keys (absent values are `null`):
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `time` | string | RFC 3339 UTC with milliseconds, e.g. `2026-12-01T19:35:33.123Z` |
//! | `event` | string | one of the [`AuditKind`] names below |
//! | `function` | string or null | the manifest function concerned |
//! | `image_digest` | string or null | `sha256:<hex>` of the function's guest image |
//! | `request_id` | string or null | the request's id (as in the response body and the request span) |
//! | `rule` | string or null | the rule, quota or capability that decided (`require_signatures`, `max_host_calls`, `outbound_http`, ...) |
//! | `detail` | string | a human-readable sentence; never a secret value |
//!
//! `event` is one of `image_verified`, `image_refused`, `policy_denied` (a deployment refused by
//! `glint policy check` / at `glint serve` start), `quota_exceeded`, `capability_denied`,
//! `guest_fault`, `timeout`, `kill`, `overload`. New keys or event names may be added in later
//! versions; existing ones keep their meaning.
//!
//! Secret values (the manifest's secret variables) given to [`AuditLog::redacting`] are replaced
//! by `[redacted]` wherever they appear in a field, before the event is written, logged or counted.

use serde::Serialize;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The counter every event increments, labelled `event` and `function` (`-` when none).
pub const AUDIT_EVENTS: &str = "glint_audit_events_total";

/// Every metric this module emits.
pub const METRIC_NAMES: &[&str] = &[AUDIT_EVENTS];

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// An image passed its trust policy (digest, signature) and loaded.
    ImageVerified,
    /// An image failed its trust policy or could not be loaded.
    ImageRefused,
    /// A deployment broke a policy rule.
    PolicyDenied,
    /// A request exceeded a per-function quota.
    QuotaExceeded,
    /// A guest used a capability it was not granted (or outside its grant).
    CapabilityDenied,
    /// A guest call faulted (CPU exception, crash, panic).
    GuestFault,
    /// A guest call ran past its deadline.
    Timeout,
    /// A guest call was killed (client gone, shutdown).
    Kill,
    /// A request was shed because the function was at its concurrency and queue limits.
    Overload,
}

impl AuditKind {
    /// Every kind, in schema order.
    pub const ALL: [AuditKind; 9] = [
        AuditKind::ImageVerified,
        AuditKind::ImageRefused,
        AuditKind::PolicyDenied,
        AuditKind::QuotaExceeded,
        AuditKind::CapabilityDenied,
        AuditKind::GuestFault,
        AuditKind::Timeout,
        AuditKind::Kill,
        AuditKind::Overload,
    ];

    /// The `event` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ImageVerified => "image_verified",
            AuditKind::ImageRefused => "image_refused",
            AuditKind::PolicyDenied => "policy_denied",
            AuditKind::QuotaExceeded => "quota_exceeded",
            AuditKind::CapabilityDenied => "capability_denied",
            AuditKind::GuestFault => "guest_fault",
            AuditKind::Timeout => "timeout",
            AuditKind::Kill => "kill",
            AuditKind::Overload => "overload",
        }
    }
}

/// One audit event, built with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// The function, if one is concerned.
    pub function: Option<String>,
    /// Its image digest (`sha256:...`).
    pub image_digest: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The deciding rule.
    pub rule: Option<String>,
    /// What happened, in words.
    pub detail: String,
}

impl AuditEvent {
    /// An event of `kind` with `detail`.
    pub fn new(kind: AuditKind, detail: impl Into<String>) -> AuditEvent {
        AuditEvent { kind, function: None, image_digest: None, request_id: None, rule: None, detail: detail.into() }
    }

    /// Sets the function.
    pub fn function(mut self, f: impl Into<String>) -> AuditEvent {
        self.function = Some(f.into());
        self
    }

    /// Sets the image digest.
    pub fn image_digest(mut self, d: impl ToString) -> AuditEvent {
        self.image_digest = Some(d.to_string());
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<String>) -> AuditEvent {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the rule.
    pub fn rule(mut self, r: impl Into<String>) -> AuditEvent {
        self.rule = Some(r.into());
        self
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: AuditKind,
    function: Option<&'a str>,
    image_digest: Option<&'a str>,
    request_id: Option<&'a str>,
    rule: Option<&'a str>,
    detail: &'a str,
}

/// Where events are written, besides tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Only tracing events and counters.
    None,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to this file.
    File(PathBuf),
}

impl AuditSink {
    /// The manifest's `audit_log` value: `-` is stdout, anything else a path relative to `dir`.
    pub fn from_setting(value: Option<&str>, dir: &Path) -> AuditSink {
        match value {
            None => AuditSink::None,
            Some("-") => AuditSink::Stdout,
            Some(p) => AuditSink::File(dir.join(p)),
        }
    }
}

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} the audit log {}", path.display())]
pub struct AuditError {
    /// `open` or `write`.
    pub op: &'static str,
    /// The file (`-` for stdout).
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

enum Writer {
    None,
    Stdout,
    File(File),
}

/// The audit log. Cheap to clone; all clones write to the same destination, one whole line per
/// event (a mutex serialises writers; the file is opened in append mode).
#[derive(Clone)]
pub struct AuditLog {
    writer: Arc<Mutex<Writer>>,
    path: PathBuf,
    secrets: Arc<[String]>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("AuditLog").field("path", &self.path).field("secrets", &self.secrets.len()).finish()
    }
}

impl AuditLog {
    /// Opens the sink (creating or appending to a file).
    ///
    /// # Errors
    ///
    /// [`AuditError`] if the file cannot be opened for appending.
    pub fn open(sink: &AuditSink) -> Result<AuditLog, AuditError> {
        let (writer, path) = match sink {
            AuditSink::None => (Writer::None, PathBuf::new()),
            AuditSink::Stdout => (Writer::Stdout, PathBuf::from("-")),
            AuditSink::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError { op: "open", path: path.clone(), source })?;
                (Writer::File(file), path.clone())
            }
        };
        Ok(AuditLog { writer: Arc::new(Mutex::new(writer)), path, secrets: Arc::from(Vec::new()) })
    }

    /// Redacts each of `secrets` (non-empty values) from every field of every event.
    pub fn redacting(mut self, secrets: impl IntoIterator<Item = String>) -> AuditLog {
        let mut all: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is redacted whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets = all.into();
        self
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }

    /// Records `event`: a tracing event, the counter, and a JSON line in the sink.
    ///
    /// # Errors
    ///
    /// [`AuditError`] if the line cannot be written (the tracing event and the counter are
    /// still emitted).
    pub fn emit(&self, event: AuditEvent) -> Result<(), AuditError> {
        let redact = |o: &Option<String>| o.as_deref().map(|s| self.redact(s));
        let function = redact(&event.function);
        let image_digest = redact(&event.image_digest);
        let request_id = redact(&event.request_id);
        let rule = redact(&event.rule);
        let detail = self.redact(&event.detail);
        let kind = event.kind;

        metrics::counter!(AUDIT_EVENTS, "event" => kind.as_str(), "function" => function.clone().unwrap_or_else(|| "-".to_owned()))
            .increment(1);
        match kind {
            AuditKind::ImageVerified => tracing::info!(
                target: "glint::audit", event = kind.as_str(), function, image_digest, request_id, rule, detail
            ),
            _ => tracing::warn!(
                target: "glint::audit", event = kind.as_str(), function, image_digest, request_id, rule, detail
            ),
        }

        let line = Line {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            event: kind,
            function: function.as_deref(),
            image_digest: image_digest.as_deref(),
            request_id: request_id.as_deref(),
            rule: rule.as_deref(),
            detail: &detail,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        let io = |source| AuditError { op: "write", path: self.path.clone(), source };
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *writer {
            Writer::None => Ok(()),
            Writer::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(io)
            }
            Writer::File(f) => f.write_all(text.as_bytes()).map_err(io),
        }
    }

    /// [`emit`](Self::emit), reporting a write failure as a tracing error instead of returning
    /// it (for request paths that must not fail because the audit disk is full).
    pub fn record(&self, event: AuditEvent) {
        if let Err(e) = self.emit(event) {
            tracing::error!(error = %crate::failure::one_line(&e), "audit event not written");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
    use super::*;
    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::collections::BTreeMap;

    /// Counts counter increments by (name, labels).
    #[derive(Default)]
    struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

    struct One(Arc<Mutex<BTreeMap<String, u64>>>, String);

    impl CounterFn for One {
        fn increment(&self, value: u64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Counter::from_arc(Arc::new(One(self.0.clone(), format!("{}{{{}}}", key.name(), labels.join(",")))))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_scripted_sequence_writes_exactly_these_lines_counts_them_and_never_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let secret = "hunter2-very-secret";
        let log = AuditLog::open(&AuditSink::File(path.clone())).unwrap().redacting([secret.to_owned(), String::new()]);
        let digest = glint::ImageDigest::of(b"image").to_string();
        let counts = Counts::default();
        let seen = counts.0.clone();
        metrics::with_local_recorder(&counts, || {
            let events = [
                AuditEvent::new(AuditKind::ImageVerified, "signed by keys/release.pub")
                    .function("hello")
                    .image_digest(&digest),
                AuditEvent::new(AuditKind::ImageRefused, "image digest is sha256:00, the pin expects sha256:11")
                    .function("evil")
                    .rule("digest"),
                AuditEvent::new(AuditKind::PolicyDenied, "memory_mib 512 is above the server maximum 256")
                    .function("big")
                    .rule("max_memory"),
                AuditEvent::new(AuditKind::QuotaExceeded, "host calls per request over 100")
                    .function("hello")
                    .request_id("r1")
                    .rule("max_host_calls"),
                AuditEvent::new(
                    AuditKind::CapabilityDenied,
                    format!("outbound request to https://x/?token={secret} not allowed"),
                )
                .function("hello")
                .request_id("r2")
                .rule("allowed_outbound_hosts"),
                AuditEvent::new(AuditKind::GuestFault, "guest raised a page fault").function("hello").request_id("r3"),
                AuditEvent::new(AuditKind::Timeout, "guest call timed out after 200ms")
                    .function("hello")
                    .request_id("r4"),
                AuditEvent::new(AuditKind::Kill, "client went away").function("hello").request_id("r5"),
                AuditEvent::new(AuditKind::Overload, "4 running, 8 queued").function("hello").request_id("r6"),
                AuditEvent::new(AuditKind::GuestFault, "again").function("hello").request_id("r7"),
            ];
            for e in events {
                log.emit(e).unwrap();
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(secret), "{text}");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "image_verified",
                "image_refused",
                "policy_denied",
                "quota_exceeded",
                "capability_denied",
                "guest_fault",
                "timeout",
                "kill",
                "overload",
                "guest_fault"
            ]
        );
        for l in &lines {
            let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["detail", "event", "function", "image_digest", "request_id", "rule", "time"]);
            let time = l["time"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'), "{time}");
        }
        assert_eq!(lines[0]["image_digest"], digest);
        assert_eq!(lines[1]["request_id"], serde_json::Value::Null);
        assert_eq!(lines[4]["detail"], "outbound request to https://x/?token=[redacted] not allowed");
        let seen = seen.lock().unwrap();
        assert_eq!(seen["glint_audit_events_total{event=guest_fault,function=hello}"], 2);
        assert_eq!(seen["glint_audit_events_total{event=image_refused,function=evil}"], 1);
        assert_eq!(seen.values().sum::<u64>(), 10);
    }

    #[test]
    fn every_kind_has_its_documented_name() {
        for k in AuditKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    /// Whether `tool` runs; under CI=true a missing tool fails the test.
    fn tool(name: &str) -> bool {
        let ok = std::process::Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "`{name}` is missing but CI=true (apt-get install prometheus)"
            );
            eprintln!("note: `{name}` is not installed (Debian package prometheus); skipping");
        }
        ok
    }

    #[test]
    fn alert_rules_pass_promtool_and_name_only_metrics_the_server_exports() {
        if !tool("promtool") {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
        for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
            let out = std::process::Command::new("promtool").args(args).current_dir(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "promtool {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
        let exported: Vec<&str> = crate::serve::metrics::ALL.iter().chain(METRIC_NAMES).copied().collect();
        let mut named = Vec::new();
        for (i, _) in rules.match_indices("glint_") {
            let name: String = rules[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            named.push(name);
        }
        assert!(named.len() >= 4, "{named:?}");
        for name in &named {
            assert!(
                exported.contains(&name.as_str()),
                "alerts.yml names `{name}`, which the server does not export ({exported:?})"
            );
        }
    }

    #[test]
    fn an_unwritable_log_is_a_typed_error() {
        let e = AuditLog::open(&AuditSink::File(PathBuf::from("/nonexistent/dir/audit.jsonl"))).unwrap_err();
        assert_eq!(e.op, "open");
    }
}
