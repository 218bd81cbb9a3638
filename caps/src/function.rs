//! One function's capabilities: its grants resolved against the shared context, the operations
//! the host functions run, and their registration on a `SandboxBuilder`.

use crate::config::{Grants, Redactor, Resolved, Variables, DEFAULT_MAX_OUTBOUND_REQUESTS};
use crate::context::{CapsContext, Denial};
use crate::error::{CapsError, CapsErrorKind, Quota};
use crate::kv::Store;
use crate::names::{self, Capability};
use crate::outbound::{self, AllowList};
use crate::scope::{self, RequestState};
use glint::SandboxBuilder;
use glint_abi::caps as abi;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The origin of `glint:clock/monotonic@1`: the first time any function asks.
static MONOTONIC_ORIGIN: OnceLock<Instant> = OnceLock::new();

/// One function's capabilities: what its grants allow, ready to register on its builder.
///
/// The methods are the operations behind the host functions, callable from Rust as well (they
/// report denials and count usage the same way).
#[derive(Clone)]
pub struct FunctionCaps {
    inner: Arc<Inner>,
}

struct Inner {
    function: Arc<str>,
    ctx: CapsContext,
    grants: Grants,
    variables: BTreeMap<String, Resolved>,
    has_variables: bool,
    stores: BTreeMap<String, Store>,
    allow: AllowList,
    outbound_timeout: Duration,
    outbound_max_response_bytes: u64,
    max_outbound_requests: u32,
    ambient: Mutex<RequestState>,
    redactor: Redactor,
}

impl std::fmt::Debug for FunctionCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.inner;
        f.debug_struct("FunctionCaps")
            .field("function", &i.function)
            .field("clock", &i.grants.clock)
            .field("random", &i.grants.random)
            .field("variables", &i.variables)
            .field("stores", &i.stores.values().collect::<Vec<_>>())
            .field("allow", &i.allow)
            .finish_non_exhaustive()
    }
}

impl FunctionCaps {
    /// Resolves `grants` and `vars` for `function` against `ctx`: parses the allow-list, reads
    /// the variables (environment ones too), opens the granted stores (the database, on first use).
    ///
    /// # Errors
    /// A grant that does not parse (the error names its key), a variable whose environment
    /// variable is not set, a store granted without a data directory, a database that does not open.
    pub fn new(
        function: &str,
        grants: &Grants,
        vars: &Variables,
        ctx: &CapsContext,
    ) -> Result<FunctionCaps, CapsError> {
        let allow = AllowList::parse(&grants.allowed_outbound_hosts)?;
        let variables = vars.resolve()?;
        let mut stores = BTreeMap::new();
        for name in &grants.key_value_stores {
            if !abi::is_store_name(name) {
                return Err(CapsError::grant(
                    "key_value_stores",
                    format!("store {name:?}: a store name is 1 to 64 characters of A-Z a-z 0-9 _ . -"),
                ));
            }
            let db = ctx.kv_database(name)?;
            stores.insert(name.clone(), db.store(name, ctx.config().quota(name))?);
        }
        let outbound_timeout = grants.outbound_timeout(ctx.config());
        if outbound_timeout.is_zero() {
            return Err(CapsError::grant("outbound_timeout_ms", "must be at least 1"));
        }
        let redactor = Redactor::new(variables.values().filter(|r| r.secret).map(|r| r.value.clone()));
        Ok(FunctionCaps {
            inner: Arc::new(Inner {
                function: function.into(),
                ctx: ctx.clone(),
                grants: grants.clone(),
                has_variables: !variables.is_empty(),
                variables,
                stores,
                allow,
                outbound_timeout,
                outbound_max_response_bytes: grants.outbound_max_response_bytes(ctx.config()),
                max_outbound_requests: grants.max_outbound_requests.unwrap_or(DEFAULT_MAX_OUTBOUND_REQUESTS),
                ambient: Mutex::new(RequestState::default()),
                redactor,
            }),
        })
    }

    /// The function's name.
    pub fn function(&self) -> &str {
        &self.inner.function
    }

    /// Hides this function's secret variable values in text a guest wrote (log lines, error messages).
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Whether `capability` is granted.
    pub fn grants(&self, capability: Capability) -> bool {
        let i = &self.inner;
        match capability {
            Capability::Clock => i.grants.clock,
            Capability::Random => i.grants.random,
            Capability::Variables => i.has_variables,
            Capability::Kv => !i.stores.is_empty(),
            Capability::Http => !i.allow.patterns().is_empty(),
        }
    }

    /// The host-function names [`register`](Self::register) adds, in catalogue order.
    pub fn imports(&self) -> Vec<&'static str> {
        names::IMPORTS.iter().filter(|i| self.grants(i.capability)).map(|i| i.name).collect()
    }

    /// The granted stores, by name.
    pub fn store(&self, name: &str) -> Option<&Store> {
        self.inner.stores.get(name)
    }

    /// Records a refusal (denial hook, usage) and passes the result on.
    fn observe<T>(&self, capability: &'static str, result: Result<T, CapsError>) -> Result<T, CapsError> {
        if let Err(e) = &result {
            let kind = e.kind();
            if let Some(rule) = e.rule() {
                let context = scope::with_request(&self.inner.ambient, |s| {
                    s.usage.denials = s.usage.denials.saturating_add(1);
                    s.context.clone()
                });
                let denial = Denial {
                    function: Arc::clone(&self.inner.function),
                    request_id: context.map(|c| c.request_id),
                    capability,
                    kind,
                    rule,
                    detail: e.to_string(),
                };
                tracing::debug!(
                    target: "glint_caps",
                    function = %denial.function,
                    request_id = denial.request_id.as_deref(),
                    capability,
                    rule,
                    "capability call refused: {}",
                    denial.detail
                );
                self.inner.ctx.report(&denial);
            } else if kind != CapsErrorKind::Invalid {
                tracing::debug!(target: "glint_caps", function = %self.inner.function, capability, "capability call failed: {e}");
            }
        }
        result
    }

    fn usage(&self, f: impl FnOnce(&mut crate::RequestUsage)) {
        scope::with_request(&self.inner.ambient, |s| f(&mut s.usage));
    }

    /// `glint:clock/wall@1`: nanoseconds since the Unix epoch.
    ///
    /// # Errors
    /// The clock reads before 1970.
    pub fn wall_ns(&self) -> Result<u64, CapsError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| CapsError::ClockBeforeEpoch);
        self.observe(abi::CLOCK_WALL, now.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// `glint:clock/monotonic@1`: nanoseconds since an origin fixed for the process.
    pub fn monotonic_ns(&self) -> u64 {
        let origin = *MONOTONIC_ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `glint:random/bytes@1`: `n` bytes from the OS.
    ///
    /// # Errors
    /// `n` above [`abi::MAX_RANDOM_BYTES`]; the OS source failed.
    pub fn random_bytes(&self, n: u32) -> Result<Vec<u8>, CapsError> {
        let result = (|| {
            if n > abi::MAX_RANDOM_BYTES {
                return Err(CapsError::invalid("n", format!("{n} bytes exceeds {}", abi::MAX_RANDOM_BYTES)));
            }
            let mut buf = vec![0u8; n as usize];
            getrandom::fill(&mut buf).map_err(CapsError::Random)?;
            Ok(buf)
        })();
        self.observe(abi::RANDOM_BYTES, result)
    }

    /// `glint:variables/get@1`: the value of variable `name`.
    ///
    /// # Errors
    /// The variable is not granted.
    pub fn variable(&self, name: &str) -> Result<String, CapsError> {
        let result = self
            .inner
            .variables
            .get(name)
            .map(|r| r.value.clone())
            .ok_or_else(|| CapsError::UnknownVariable { name: self.inner.redactor.redact(name).into_owned() });
        self.observe(abi::VARIABLES_GET, result)
    }

    fn granted_store(&self, store: &str) -> Result<&Store, CapsError> {
        // The names are the guest's: one may hold a secret it read, so they are redacted too.
        self.inner
            .stores
            .get(store)
            .ok_or_else(|| CapsError::UnknownStore { store: self.inner.redactor.redact(store).into_owned() })
    }

    /// `glint:kv/get@1`.
    ///
    /// # Errors
    /// The store is not granted, the key is empty or too long, the database failed.
    pub fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, CapsError> {
        let result = self.granted_store(store).and_then(|s| s.get(key));
        self.usage(|u| u.kv_reads = u.kv_reads.saturating_add(1));
        self.observe(abi::KV_GET, result)
    }

    /// `glint:kv/set@1`; returns the commit's sequence number in the store.
    ///
    /// # Errors
    /// As [`kv_get`](Self::kv_get), and the store's byte quota.
    pub fn kv_set(&self, store: &str, key: &str, value: &[u8]) -> Result<u64, CapsError> {
        let result = self.granted_store(store).and_then(|s| s.set(key, value));
        if result.is_ok() {
            let bytes = (key.len() as u64).saturating_add(value.len() as u64);
            self.usage(|u| {
                u.kv_writes = u.kv_writes.saturating_add(1);
                u.kv_bytes_written = u.kv_bytes_written.saturating_add(bytes);
            });
        }
        self.observe(abi::KV_SET, result)
    }

    /// `glint:kv/delete@1`: whether the key existed.
    ///
    /// # Errors
    /// As [`kv_get`](Self::kv_get).
    pub fn kv_delete(&self, store: &str, key: &str) -> Result<bool, CapsError> {
        let result = self.granted_store(store).and_then(|s| s.delete(key));
        self.usage(|u| u.kv_writes = u.kv_writes.saturating_add(1));
        self.observe(abi::KV_DELETE, result)
    }

    /// `glint:kv/list@1`: a page of keys and whether more follow.
    ///
    /// # Errors
    /// The store is not granted, the database failed.
    pub fn kv_list(&self, store: &str, prefix: &str, after: &str, max: u32) -> Result<(Vec<String>, bool), CapsError> {
        let result = self.granted_store(store).and_then(|s| s.list(prefix, after, max));
        self.usage(|u| u.kv_reads = u.kv_reads.saturating_add(1));
        self.observe(abi::KV_LIST, result)
    }

    /// `glint:http/send@1`: sends an encoded request (`glint_abi::http`), returns the encoded
    /// response.
    ///
    /// # Errors
    /// A malformed request, a host outside the allow-list, the per-request limit, the timeout,
    /// the response cap, a connection failure, the guest call stopped meanwhile.
    pub fn http_send(&self, request: &[u8]) -> Result<Vec<u8>, CapsError> {
        let result = self.http_send_inner(request);
        self.observe(abi::HTTP_SEND, result)
    }

    fn http_send_inner(&self, request: &[u8]) -> Result<Vec<u8>, CapsError> {
        let i = &self.inner;
        let decoded = glint_abi::http::read_request(request).map_err(CapsError::InvalidRequest)?;
        let checked = outbound::check(&decoded, &i.allow)?;
        let limit = i.max_outbound_requests;
        scope::with_request(&i.ambient, |s| {
            if s.usage.outbound_requests >= limit {
                let quota = if s.context.is_some() { Quota::OutboundRequests } else { Quota::OutboundRequestsUnscoped };
                return Err(CapsError::QuotaExceeded { quota, limit: u64::from(limit), needed: None });
            }
            s.usage.outbound_requests = s.usage.outbound_requests.saturating_add(1);
            Ok(())
        })?;
        let origin = checked.origin.to_string();
        let received = i.ctx.client().send(checked, i.outbound_timeout, i.outbound_max_response_bytes)?;
        let mut out = Vec::with_capacity(received.body.len().saturating_add(256));
        let headers = received.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        glint_abi::http::put_response(&mut out, received.status, headers, &received.body)
            .map_err(|reason| CapsError::EncodeResponse { origin, reason })?;
        Ok(out)
    }

    /// Registers the host function of every granted capability on `builder` (and nothing else:
    /// what is not granted stays unregistered, so the guest's call finds no such function).
    pub fn register(&self, builder: SandboxBuilder) -> SandboxBuilder {
        let mut b = builder;
        if self.grants(Capability::Clock) {
            let c = self.clone();
            b = b.host_fn(abi::CLOCK_WALL, move || c.wall_ns());
            let c = self.clone();
            b = b.host_fn(abi::CLOCK_MONOTONIC, move || c.monotonic_ns());
        }
        if self.grants(Capability::Random) {
            let c = self.clone();
            b = b.host_fn(abi::RANDOM_BYTES, move |n: u32| c.random_bytes(n));
        }
        if self.grants(Capability::Variables) {
            let c = self.clone();
            b = b.host_fn(abi::VARIABLES_GET, move |name: String| c.variable(&name));
        }
        if self.grants(Capability::Kv) {
            let c = self.clone();
            b = b.host_fn(abi::KV_GET, move |store: String, key: String| -> Result<Vec<u8>, CapsError> {
                let value = c.kv_get(&store, &key)?;
                let mut out = Vec::with_capacity(value.as_ref().map_or(1, |v| v.len().saturating_add(1)));
                // A Vec never fills.
                let _ = abi::put_option(&mut out, value.as_deref());
                Ok(out)
            });
            let c = self.clone();
            b = b.host_fn(abi::KV_SET, move |store: String, key: String, value: Vec<u8>| {
                c.kv_set(&store, &key, &value).map(drop)
            });
            let c = self.clone();
            b = b.host_fn(abi::KV_DELETE, move |store: String, key: String| c.kv_delete(&store, &key));
            let c = self.clone();
            b = b.host_fn(
                abi::KV_LIST,
                move |store: String, prefix: String, after: String, max: u32| -> Result<Vec<u8>, CapsError> {
                    let (keys, more) = c.kv_list(&store, &prefix, &after, max)?;
                    let mut out = Vec::new();
                    // A Vec never fills.
                    let _ = abi::put_key_page_head(&mut out, keys.len());
                    for k in &keys {
                        let _ = abi::put_key(&mut out, k);
                    }
                    let _ = abi::put_key_page_end(&mut out, more);
                    Ok(out)
                },
            );
        }
        if self.grants(Capability::Http) {
            let c = self.clone();
            b = b.host_fn(abi::HTTP_SEND, move |request: Vec<u8>| c.http_send(&request));
        }
        b
    }

    /// Registers, for every capability host function that is NOT granted, a stub that refuses
    /// the call naming the manifest entry that would grant it (and reports a [`Denial`]).
    ///
    /// A stop-gap until the core checks declared imports at `init`: with that check, stubs would
    /// satisfy it and hide the refusal at start, so drop this call then.
    pub fn register_denials(&self, builder: SandboxBuilder) -> SandboxBuilder {
        let mut b = builder;
        for import in names::IMPORTS.iter().filter(|i| !self.grants(i.capability)) {
            let c = self.clone();
            let name = import.name;
            let hint = import.grant_hint;
            let refuse = move || c.observe::<()>(name, Err(CapsError::NotGranted { import: name, grant_hint: hint }));
            b = match name {
                abi::CLOCK_WALL | abi::CLOCK_MONOTONIC => b.host_fn(name, move || refuse().map(|()| 0u64)),
                abi::RANDOM_BYTES => b.host_fn(name, move |_: u32| refuse().map(|()| Vec::<u8>::new())),
                abi::VARIABLES_GET => b.host_fn(name, move |_: String| refuse().map(|()| String::new())),
                abi::KV_GET => b.host_fn(name, move |_: String, _: String| refuse().map(|()| Vec::<u8>::new())),
                abi::KV_SET => b.host_fn(name, move |_: String, _: String, _: Vec<u8>| refuse()),
                abi::KV_DELETE => b.host_fn(name, move |_: String, _: String| refuse().map(|()| false)),
                abi::KV_LIST => {
                    b.host_fn(name, move |_: String, _: String, _: String, _: u32| refuse().map(|()| Vec::<u8>::new()))
                }
                abi::HTTP_SEND => b.host_fn(name, move |_: Vec<u8>| refuse().map(|()| Vec::<u8>::new())),
                _ => b,
            };
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CapsConfig, Variable};

    fn caps(grants: Grants, vars: Variables) -> FunctionCaps {
        let ctx = CapsContext::new(&CapsConfig::default(), None).unwrap();
        FunctionCaps::new("f", &grants, &vars, &ctx).unwrap()
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let c = caps(Grants::default(), Variables::new());
        assert!(c.imports().is_empty());
    }

    #[test]
    fn clock_and_random_work() {
        let c = caps(Grants { clock: true, random: true, ..Grants::default() }, Variables::new());
        assert_eq!(c.imports(), [abi::CLOCK_WALL, abi::CLOCK_MONOTONIC, abi::RANDOM_BYTES]);
        // 2020-01-01 in ns: a clock that reads earlier is broken.
        assert!(c.wall_ns().unwrap() > 1_577_836_800_000_000_000);
        let (a, b) = (c.monotonic_ns(), c.monotonic_ns());
        assert!(b >= a);
        let r = c.random_bytes(64).unwrap();
        assert_eq!(r.len(), 64);
        assert_ne!(r, c.random_bytes(64).unwrap(), "two draws of 512 bits collided");
        assert_eq!(c.random_bytes(abi::MAX_RANDOM_BYTES + 1).unwrap_err().kind(), CapsErrorKind::Invalid);
        assert!(c.random_bytes(0).unwrap().is_empty());
    }

    #[test]
    fn variables_and_their_secrets() {
        let vars = Variables::new().with("greeting", Variable::plain("hi")).with("token", Variable::secret("hunter2"));
        let c = caps(Grants::default(), vars);
        assert_eq!(c.imports(), [abi::VARIABLES_GET]);
        assert_eq!(c.variable("token").unwrap(), "hunter2");
        let e = c.variable("nope").unwrap_err();
        assert_eq!(e.kind(), CapsErrorKind::UnknownVariable);
        let debug = format!("{c:?} {e:?} {e}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(c.redactor().redact("the token is hunter2"), "the token is <secret>");
    }

    #[test]
    fn stores_need_a_data_dir() {
        let ctx = CapsContext::new(&CapsConfig::default(), None).unwrap();
        let grants = Grants { key_value_stores: vec!["default".into()], ..Grants::default() };
        let e = FunctionCaps::new("f", &grants, &Variables::new(), &ctx).unwrap_err();
        assert!(matches!(e, CapsError::NoDataDir { .. }), "{e}");
        let bad = Grants { key_value_stores: vec!["no/slash".into()], ..Grants::default() };
        let e = FunctionCaps::new("f", &bad, &Variables::new(), &ctx).unwrap_err();
        assert!(e.to_string().contains("key_value_stores"), "{e}");
    }

    #[test]
    fn denials_reach_the_hook_with_the_request() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let ctx = CapsContext::new(&CapsConfig::default(), None)
            .unwrap()
            .on_denial(move |d: &Denial| sink.lock().unwrap().push(d.clone()));
        let vars = Variables::new().with("a", Variable::plain("b"));
        let c = FunctionCaps::new("fn-a", &Grants::default(), &vars, &ctx).unwrap();
        let guard = crate::enter_request(crate::RequestContext { request_id: "req-1".into(), function: "fn-a".into() });
        assert!(c.variable("missing").is_err());
        assert_eq!(guard.finish().denials, 1);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(
            (seen[0].capability, seen[0].rule, seen[0].kind),
            (abi::VARIABLES_GET, "variables", CapsErrorKind::UnknownVariable)
        );
    }
}
