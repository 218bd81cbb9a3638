//! What the manifest (or an embedder) says: server-wide settings, per-function grants, variables.
//!
//! All three deserialise with serde and refuse unknown keys, so a manifest typo is an error at
//! start, not a capability silently missing.

use crate::error::CapsError;
use crate::names;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Default quota of a store the configuration does not list: 16 MiB.
pub const DEFAULT_KV_QUOTA_BYTES: u64 = 16 << 20;
/// Default timeout of one outbound request: 10 s.
pub const DEFAULT_OUTBOUND_TIMEOUT_MS: u64 = 10_000;
/// Default cap on an outbound response body: 1 MiB.
pub const DEFAULT_OUTBOUND_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Default number of outbound requests one request may make.
pub const DEFAULT_MAX_OUTBOUND_REQUESTS: u32 = 16;

/// Server-wide settings (the manifest's top-level `[capabilities]` table).
///
/// ```toml
/// [capabilities]
/// kv_default_quota_bytes = 16777216     # stores not listed below
/// outbound_timeout_ms = 10000           # functions may set their own
/// outbound_max_response_bytes = 1048576
/// [capabilities.kv_stores.default]
/// quota_bytes = 1048576
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsConfig {
    /// Quota of a granted store that `kv_stores` does not list.
    pub kv_default_quota_bytes: u64,
    /// Timeout of an outbound request, for functions that do not set one.
    pub outbound_timeout_ms: u64,
    /// Cap on an outbound response body, for functions that do not set one.
    pub outbound_max_response_bytes: u64,
    /// Stores with their own settings, by name.
    pub kv_stores: BTreeMap<String, StoreConfig>,
}

impl Default for CapsConfig {
    fn default() -> Self {
        CapsConfig {
            kv_default_quota_bytes: DEFAULT_KV_QUOTA_BYTES,
            outbound_timeout_ms: DEFAULT_OUTBOUND_TIMEOUT_MS,
            outbound_max_response_bytes: DEFAULT_OUTBOUND_MAX_RESPONSE_BYTES,
            kv_stores: BTreeMap::new(),
        }
    }
}

/// One store's settings (`[capabilities.kv_stores.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Bytes the store may hold: the sum of its keys' and values' lengths.
    pub quota_bytes: u64,
}

impl CapsConfig {
    /// Checks every value; the error names the key.
    ///
    /// # Errors
    /// A store name that is not `[A-Za-z0-9_.-]{1,64}`, a zero timeout.
    pub fn validate(&self) -> Result<(), CapsError> {
        for name in self.kv_stores.keys() {
            if !glint_abi::caps::is_store_name(name) {
                return Err(CapsError::grant(
                    format!("kv_stores.{name}"),
                    "a store name is 1 to 64 characters of A-Z a-z 0-9 _ . -",
                ));
            }
        }
        if self.outbound_timeout_ms == 0 {
            return Err(CapsError::grant("outbound_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// The quota of `store`.
    pub fn quota(&self, store: &str) -> u64 {
        self.kv_stores.get(store).map_or(self.kv_default_quota_bytes, |s| s.quota_bytes)
    }
}

/// What one function is granted (its manifest `[function.capabilities]` table). The default
/// grants nothing.
///
/// ```toml
/// [function.capabilities]
/// clock = true
/// random = true
/// key_value_stores = ["default"]
/// allowed_outbound_hosts = ["http://127.0.0.1:*", "https://*.example.com"]
/// max_outbound_requests = 16            # per request
/// outbound_timeout_ms = 2000            # default: [capabilities] outbound_timeout_ms
/// outbound_max_response_bytes = 65536   # default: [capabilities] outbound_max_response_bytes
/// ```
///
/// Variables are granted by declaring them ([`Variables`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// `glint:clock/wall@1` and `glint:clock/monotonic@1`.
    pub clock: bool,
    /// `glint:random/bytes@1`.
    pub random: bool,
    /// The stores the `glint:kv/*` functions may use, by name.
    pub key_value_stores: Vec<String>,
    /// Patterns `scheme://host[:port]` that `glint:http/send@1` may reach (see
    /// [`HostPattern`](crate::HostPattern)); empty: no outbound HTTP.
    pub allowed_outbound_hosts: Vec<String>,
    /// Outbound requests one request may make (default [`DEFAULT_MAX_OUTBOUND_REQUESTS`]).
    pub max_outbound_requests: Option<u32>,
    /// Timeout of one outbound request, in milliseconds.
    pub outbound_timeout_ms: Option<u64>,
    /// Cap on one outbound response body, in bytes.
    pub outbound_max_response_bytes: Option<u64>,
}

impl Grants {
    /// Whether these grants (with `vars`) allow a guest to import the host function `import`.
    /// Names that are not standard capabilities are not this crate's to allow: `false`.
    pub fn allows(&self, vars: &Variables, import: &str) -> bool {
        match names::capability_of(import) {
            Some(names::Capability::Clock) => self.clock,
            Some(names::Capability::Random) => self.random,
            Some(names::Capability::Variables) => !vars.is_empty(),
            Some(names::Capability::Kv) => !self.key_value_stores.is_empty(),
            Some(names::Capability::Http) => !self.allowed_outbound_hosts.is_empty(),
            None => false,
        }
    }

    /// The outbound timeout, from the grant or `config`.
    pub fn outbound_timeout(&self, config: &CapsConfig) -> Duration {
        Duration::from_millis(self.outbound_timeout_ms.unwrap_or(config.outbound_timeout_ms))
    }

    /// The outbound response cap, from the grant or `config`.
    pub fn outbound_max_response_bytes(&self, config: &CapsConfig) -> u64 {
        self.outbound_max_response_bytes.unwrap_or(config.outbound_max_response_bytes)
    }
}

/// One variable: its value (or where to read it) and whether it is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Variable {
    source: Source,
    secret: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum Source {
    Value(String),
    Env(String),
}

impl Variable {
    /// A plain variable.
    pub fn plain(value: impl Into<String>) -> Self {
        Variable { source: Source::Value(value.into()), secret: false }
    }

    /// A secret variable: its value never appears in Debug output, errors, logs or metrics.
    pub fn secret(value: impl Into<String>) -> Self {
        Variable { source: Source::Value(value.into()), secret: true }
    }

    /// A variable read from the server's environment variable `env` when the function is
    /// registered.
    pub fn from_env(env: impl Into<String>, secret: bool) -> Self {
        Variable { source: Source::Env(env.into()), secret }
    }

    /// Whether it is secret.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    pub(crate) fn resolve(&self, name: &str) -> Result<String, CapsError> {
        match &self.source {
            Source::Value(v) => Ok(v.clone()),
            Source::Env(env) => {
                std::env::var(env).map_err(|_| CapsError::VariableEnv { name: name.to_owned(), env: env.clone() })
            }
        }
    }
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.secret) {
            (Source::Value(_), true) => f.write_str("<secret>"),
            (Source::Value(v), false) => write!(f, "{v:?}"),
            (Source::Env(env), secret) => write!(f, "env({env:?}{})", if secret { ", secret" } else { "" }),
        }
    }
}

impl<'de> Deserialize<'de> for Variable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Variable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, or a table { value = "..." | env = "NAME", secret = true|false }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Variable, E> {
                Ok(Variable::plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Variable, A::Error> {
                let (mut value, mut env, mut secret) = (None::<String>, None::<String>, None::<bool>);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "value" if value.is_none() => value = Some(map.next_value()?),
                        "env" if env.is_none() => env = Some(map.next_value()?),
                        "secret" if secret.is_none() => secret = Some(map.next_value()?),
                        "value" | "env" | "secret" => return Err(de::Error::custom(format!("duplicate key `{key}`"))),
                        other => return Err(de::Error::unknown_field(other, &["value", "env", "secret"])),
                    }
                }
                let secret = secret.unwrap_or(false);
                match (value, env) {
                    (Some(v), None) => Ok(Variable { source: Source::Value(v), secret }),
                    (None, Some(e)) => Ok(Variable { source: Source::Env(e), secret }),
                    _ => Err(de::Error::custom("a variable needs exactly one of `value` or `env`")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The variables of one function (its manifest `[function.variables]` table), by name.
///
/// ```toml
/// [function.variables]
/// greeting = "Hello"
/// api_key = { value = "...", secret = true }
/// token = { env = "HELLO_TOKEN", secret = true }
/// ```
///
/// Debug output shows plain values and the names of environment variables, never a secret value.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Variables {
    map: BTreeMap<String, Variable>,
}

impl Variables {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a variable.
    pub fn with(mut self, name: impl Into<String>, variable: Variable) -> Self {
        self.map.insert(name.into(), variable);
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The variables, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Variable)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks the names and reads the values (environment variables included).
    pub(crate) fn resolve(&self) -> Result<BTreeMap<String, Resolved>, CapsError> {
        let mut out = BTreeMap::new();
        for (name, var) in &self.map {
            if !is_variable_name(name) {
                return Err(CapsError::grant(
                    format!("variables.{name}"),
                    "a variable name is 1 to 255 characters of A-Z a-z 0-9 _ . -",
                ));
            }
            out.insert(name.clone(), Resolved { value: var.resolve(name)?, secret: var.secret });
        }
        Ok(out)
    }

    /// A [`Redactor`] that hides the values of the secret variables.
    ///
    /// # Errors
    /// As registration: a bad name, an environment variable that is not set.
    pub fn redactor(&self) -> Result<Redactor, CapsError> {
        Ok(Redactor::new(self.resolve()?.into_values().filter(|r| r.secret).map(|r| r.value)))
    }
}

impl fmt::Debug for Variables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter()).finish()
    }
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A resolved variable value.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) value: String,
    pub(crate) secret: bool,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<secret>")
        } else {
            write!(f, "{:?}", self.value)
        }
    }
}

/// Replaces the values of secret variables in text (a guest's log line, a guest's error message)
/// with `<secret>`, for whoever logs text a guest wrote.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret value replaced by `<secret>`; borrowed when there is none.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), "<secret>"));
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Function {
        #[serde(default)]
        capabilities: Grants,
        #[serde(default)]
        variables: Variables,
    }

    #[test]
    fn manifest_tables_deserialise() {
        let f: Function = toml::from_str(
            r#"
            [capabilities]
            clock = true
            key_value_stores = ["default"]
            allowed_outbound_hosts = ["http://127.0.0.1:*"]
            max_outbound_requests = 2
            [variables]
            greeting = "Hello"
            token = { value = "hunter2", secret = true }
            from_env = { env = "HOME" }
            "#,
        )
        .unwrap();
        assert!(f.capabilities.clock && !f.capabilities.random);
        assert_eq!(f.capabilities.key_value_stores, ["default"]);
        assert_eq!(f.capabilities.max_outbound_requests, Some(2));
        assert!(f.variables.map["token"].is_secret());
        let debug = format!("{:?}", f.variables);
        assert!(debug.contains("Hello") && debug.contains("<secret>") && !debug.contains("hunter2"), "{debug}");

        let config: CapsConfig = toml::from_str("[kv_stores.cache]\nquota_bytes = 10").unwrap();
        assert_eq!((config.quota("cache"), config.quota("other")), (10, DEFAULT_KV_QUOTA_BYTES));
    }

    #[test]
    fn unknown_keys_and_bad_variables_are_refused() {
        let typo = toml::from_str::<Grants>("clocks = true").unwrap_err().to_string();
        assert!(typo.contains("unknown field `clocks`"), "{typo}");
        let both = toml::from_str::<Variables>(r#"x = { value = "a", env = "B" }"#).unwrap_err().to_string();
        assert!(both.contains("exactly one of"), "{both}");
        let extra = toml::from_str::<Variables>(r#"x = { value = "a", secrets = true }"#).unwrap_err().to_string();
        assert!(extra.contains("unknown field `secrets`"), "{extra}");
        assert!(toml::from_str::<CapsConfig>("[kv_stores.a]\nquota = 1").is_err());
    }

    #[test]
    fn grants_allow_only_what_they_grant() {
        let none = Grants::default();
        let vars = Variables::new();
        for name in glint_abi::caps::ALL {
            assert!(!none.allows(&vars, name), "{name}");
        }
        let kv = Grants { key_value_stores: vec!["s".into()], ..Grants::default() };
        assert!(kv.allows(&vars, glint_abi::caps::KV_LIST) && !kv.allows(&vars, glint_abi::caps::HTTP_SEND));
        assert!(none.allows(&Variables::new().with("a", Variable::plain("b")), glint_abi::caps::VARIABLES_GET));
        assert!(!none.allows(&vars, "greeting"));
    }

    #[test]
    fn redactor_hides_every_secret() {
        let vars = Variables::new()
            .with("plain", Variable::plain("visible"))
            .with("a", Variable::secret("s3cr3t"))
            .with("b", Variable::secret("s3cr3t-longer"));
        let r = vars.redactor().unwrap();
        assert_eq!(r.redact("x s3cr3t-longer y s3cr3t visible"), "x <secret> y <secret> visible");
        assert!(matches!(r.redact("nothing here"), std::borrow::Cow::Borrowed(_)));
        let missing = Variables::new().with("t", Variable::from_env("GLINT_CAPS_TEST_SURELY_UNSET", true));
        let e = missing.redactor().unwrap_err().to_string();
        assert!(e.contains("GLINT_CAPS_TEST_SURELY_UNSET"), "{e}");
        let bad = Variables::new().with("a b", Variable::plain("x")).redactor().unwrap_err();
        assert!(bad.to_string().contains("variables.a b"), "{bad}");
    }
}
