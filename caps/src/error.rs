//! The one error type of the capabilities, and its stable classification.
//!
//! A capability's error reaches the guest as the message of a failed host call, so every
//! run-time message starts with its kind (`quota_exceeded: ...`, see [`CapsErrorKind`]) and never
//! holds a variable's value, a URL's path or query, a header or a body: only names, origins
//! (`scheme://host:port`) and numbers. Start-time errors (a bad grant, a database that does not
//! open) name the manifest key at fault.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which quota a call ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quota {
    /// The bytes a key-value store may hold (keys plus values).
    KvBytes {
        /// The store.
        store: String,
    },
    /// Outbound HTTP requests one request (one guest call) may make.
    OutboundRequests,
    /// The same limit, counted for calls made outside any
    /// [`enter_request`](crate::enter_request): since the function was registered.
    OutboundRequestsUnscoped,
}

impl Quota {
    /// The rule's stable name, for denials, audit events and metrics labels.
    pub fn rule(&self) -> &'static str {
        match self {
            Quota::KvBytes { .. } => "quota.kv_bytes",
            Quota::OutboundRequests | Quota::OutboundRequestsUnscoped => "quota.outbound_requests",
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quota::KvBytes { store } => write!(f, "key-value bytes of store {store:?}"),
            Quota::OutboundRequests => f.write_str("outbound requests per request"),
            Quota::OutboundRequestsUnscoped => {
                f.write_str("outbound requests outside a request scope (counted since registration)")
            }
        }
    }
}

/// The stable classification of a [`CapsError`]: the prefix of the message the guest receives
/// (`glint_guest::caps::ErrorKind` reads it back) and a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CapsErrorKind {
    /// Not allowed by the grant.
    Denied,
    /// A quota was reached.
    QuotaExceeded,
    /// An outbound request ran past its timeout.
    Timeout,
    /// A response or value above its size limit.
    TooLarge,
    /// A store that is not granted.
    UnknownStore,
    /// A variable that is not granted.
    UnknownVariable,
    /// An argument the capability refuses.
    Invalid,
    /// The database, the network or the OS failed.
    Unavailable,
    /// The call was stopped, or something else failed.
    Failed,
    /// A configuration or grant refused at start (never seen by a guest).
    Config,
}

impl CapsErrorKind {
    /// The stable name: `denied`, `quota_exceeded`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CapsErrorKind::Denied => "denied",
            CapsErrorKind::QuotaExceeded => "quota_exceeded",
            CapsErrorKind::Timeout => "timeout",
            CapsErrorKind::TooLarge => "too_large",
            CapsErrorKind::UnknownStore => "unknown_store",
            CapsErrorKind::UnknownVariable => "unknown_variable",
            CapsErrorKind::Invalid => "invalid",
            CapsErrorKind::Unavailable => "unavailable",
            CapsErrorKind::Failed => "failed",
            CapsErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for CapsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a capability can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapsError {
    /// A quota was reached; nothing was changed.
    #[error("quota_exceeded: {quota} is limited to {limit}{}", needed_text(*needed))]
    QuotaExceeded {
        /// Which quota.
        quota: Quota,
        /// Its value.
        limit: u64,
        /// What the call would have brought the total to, when known.
        needed: Option<u64>,
    },
    /// The URL's origin matches no pattern of the allow-list.
    #[error("denied: {origin} matches no pattern of {rule} {allowed:?}")]
    HostDenied {
        /// `scheme://host:port` of the URL (never its path or query).
        origin: String,
        /// The manifest key of the allow-list: `allowed_outbound_hosts`.
        rule: &'static str,
        /// The patterns it holds.
        allowed: Vec<String>,
    },
    /// The capability is not granted to this function (a denial stub answered).
    #[error("denied: {import} is not granted to this function; grant it with {grant_hint}")]
    NotGranted {
        /// The host function the guest called.
        import: &'static str,
        /// The manifest entry that would grant it.
        grant_hint: &'static str,
    },
    /// An outbound request took longer than its timeout.
    #[error("timeout: {origin} did not answer within {timeout:?}")]
    Timeout {
        /// `scheme://host:port`.
        origin: String,
        /// The timeout.
        timeout: Duration,
    },
    /// An outbound response body is above the size cap.
    #[error("too_large: the response of {origin} exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// `scheme://host:port`.
        origin: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// The store is not granted to this function.
    #[error("unknown_store: no store named {store:?} is granted to this function")]
    UnknownStore {
        /// The name the guest asked for (escaped when printed).
        store: String,
    },
    /// The variable is not granted to this function.
    #[error("unknown_variable: no variable named {name:?} is granted to this function")]
    UnknownVariable {
        /// The name the guest asked for (escaped when printed).
        name: String,
    },
    /// An argument is refused.
    #[error("invalid: {what}: {detail}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The outbound request does not decode.
    #[error("invalid: outbound request: {0}")]
    InvalidRequest(glint_abi::http::HttpDecodeError),
    /// The outbound response cannot be encoded for the guest.
    #[error("failed: outbound response from {origin} cannot be encoded: {reason}")]
    EncodeResponse {
        /// `scheme://host:port`.
        origin: String,
        /// Why.
        reason: glint_abi::http::HttpEncodeError,
    },
    /// The remote end could not be reached or broke the protocol.
    #[error("unavailable: request to {origin} failed: {detail}")]
    Outbound {
        /// `scheme://host:port`.
        origin: String,
        /// What failed (no URL, header or body in it).
        detail: String,
        /// The I/O error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Too many outbound requests are in flight in this process.
    #[error("unavailable: {limit} outbound requests are already in flight")]
    Busy {
        /// The process-wide bound.
        limit: usize,
    },
    /// The key-value database failed.
    #[error("unavailable: key-value store {store:?} failed")]
    Storage {
        /// The store.
        store: String,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The OS random source failed.
    #[error("unavailable: the OS random source failed: {0}")]
    Random(getrandom::Error),
    /// The wall clock reads a time before the Unix epoch.
    #[error("unavailable: the wall clock is set before 1970")]
    ClockBeforeEpoch,
    /// The guest call was stopped (killed or past its deadline) while the capability waited.
    #[error("failed: the guest call was stopped while waiting for {origin}")]
    Cancelled {
        /// `scheme://host:port`.
        origin: String,
    },
    /// A helper thread could not be started or died.
    #[error("unavailable: {what}")]
    Thread {
        /// What failed.
        what: &'static str,
        /// The OS error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },

    /// A grant or configuration value is refused (at start).
    #[error("invalid `{key}`: {detail}")]
    InvalidGrant {
        /// The manifest key, e.g. `allowed_outbound_hosts` or `kv_stores.cache.quota_bytes`.
        key: String,
        /// Why.
        detail: String,
    },
    /// A store is granted but the context has no data directory.
    #[error("store {store:?} is granted, but no data directory is configured for the key-value database")]
    NoDataDir {
        /// The store.
        store: String,
    },
    /// The data directory cannot be created.
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key-value database cannot be opened (in use by another process, corrupt, too new).
    #[error("cannot open the key-value database {}", path.display())]
    OpenDatabase {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A variable reads an environment variable that is not set (or not UTF-8).
    #[error("variable {name:?} reads the environment variable {env:?}, which is not set or not UTF-8")]
    VariableEnv {
        /// The variable.
        name: String,
        /// The environment variable.
        env: String,
    },
}

fn needed_text(needed: Option<u64>) -> String {
    needed.map(|n| format!(" (this call needs {n})")).unwrap_or_default()
}

impl CapsError {
    /// The stable classification (exhaustive on purpose: a new variant must decide).
    pub fn kind(&self) -> CapsErrorKind {
        match self {
            CapsError::QuotaExceeded { .. } => CapsErrorKind::QuotaExceeded,
            CapsError::HostDenied { .. } | CapsError::NotGranted { .. } => CapsErrorKind::Denied,
            CapsError::Timeout { .. } => CapsErrorKind::Timeout,
            CapsError::ResponseTooLarge { .. } => CapsErrorKind::TooLarge,
            CapsError::UnknownStore { .. } => CapsErrorKind::UnknownStore,
            CapsError::UnknownVariable { .. } => CapsErrorKind::UnknownVariable,
            CapsError::InvalidArgument { .. } | CapsError::InvalidRequest(_) => CapsErrorKind::Invalid,
            CapsError::Outbound { .. }
            | CapsError::Busy { .. }
            | CapsError::Storage { .. }
            | CapsError::Random(_)
            | CapsError::ClockBeforeEpoch
            | CapsError::Thread { .. } => CapsErrorKind::Unavailable,
            CapsError::EncodeResponse { .. } | CapsError::Cancelled { .. } => CapsErrorKind::Failed,
            CapsError::InvalidGrant { .. }
            | CapsError::NoDataDir { .. }
            | CapsError::DataDir { .. }
            | CapsError::OpenDatabase { .. }
            | CapsError::VariableEnv { .. } => CapsErrorKind::Config,
        }
    }

    /// The rule a denial or quota names (`allowed_outbound_hosts`, `quota.kv_bytes`, ...), for
    /// the ones the server reports as denials.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            CapsError::QuotaExceeded { quota, .. } => Some(quota.rule()),
            CapsError::HostDenied { rule, .. } => Some(rule),
            CapsError::NotGranted { .. } => Some("not_granted"),
            CapsError::UnknownStore { .. } => Some("key_value_stores"),
            CapsError::UnknownVariable { .. } => Some("variables"),
            _ => None,
        }
    }

    /// The capability error behind a glint call error, if there is one: the source of
    /// `Error::HostFunction` when a capability failed and the guest call failed after it.
    pub fn find(error: &glint::Error) -> Option<&CapsError> {
        // A host function's error is shared (`Arc`) in `glint::Error`: downcast it directly, as
        // the `Arc` in the source chain is its own type.
        if let glint::Error::HostFunction { source, .. } = error {
            if let Some(caps) = source.downcast_ref::<CapsError>() {
                return Some(caps);
            }
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(caps) = e.downcast_ref::<CapsError>() {
                return Some(caps);
            }
            source = e.source();
        }
        None
    }

    pub(crate) fn storage(store: &str, source: impl Into<redb::Error>) -> CapsError {
        CapsError::Storage { store: store.to_owned(), source: Box::new(source.into()) }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> CapsError {
        CapsError::InvalidArgument { what, detail: detail.into() }
    }

    pub(crate) fn grant(key: impl Into<String>, detail: impl Into<String>) -> CapsError {
        CapsError::InvalidGrant { key: key.into(), detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_messages_start_with_their_kind() {
        let errors = [
            CapsError::QuotaExceeded { quota: Quota::OutboundRequests, limit: 4, needed: None },
            CapsError::HostDenied { origin: "http://a:80".into(), rule: "allowed_outbound_hosts", allowed: vec![] },
            CapsError::Timeout { origin: "http://a:80".into(), timeout: Duration::from_millis(5) },
            CapsError::ResponseTooLarge { origin: "http://a:80".into(), limit: 9 },
            CapsError::UnknownStore { store: "x".into() },
            CapsError::UnknownVariable { name: "x".into() },
            CapsError::invalid("key", "too long"),
            CapsError::ClockBeforeEpoch,
            CapsError::Cancelled { origin: "http://a:80".into() },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with(&format!("{}: ", e.kind())), "{text}");
        }
    }

    #[test]
    fn quota_messages_name_the_quota_and_its_value() {
        let e = CapsError::QuotaExceeded {
            quota: Quota::KvBytes { store: "default".into() },
            limit: 100,
            needed: Some(120),
        };
        assert_eq!(
            e.to_string(),
            "quota_exceeded: key-value bytes of store \"default\" is limited to 100 (this call needs 120)"
        );
        assert_eq!(e.rule(), Some("quota.kv_bytes"));
    }

    #[test]
    fn guest_supplied_names_are_escaped() {
        let e = CapsError::UnknownStore { store: "a\nforged log line\u{1b}[31m".into() };
        assert!(!e.to_string().contains('\n') && !e.to_string().contains('\u{1b}'), "{e}");
    }
}
