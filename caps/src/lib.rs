//! The standard capabilities of glint guests, as host functions: clock, random bytes, variables,
//! a persistent key-value store and outbound HTTP with an allow-list.
//!
//! Deny by default: [`register`] adds the host functions of the capabilities a function is
//! granted and nothing else. `glint serve` grants them from its manifest; an embedder can
//! register them on its own [`SandboxBuilder`]:
//!
//! ```no_run
//! use glint::SandboxBuilder;
//! use glint_caps::{CapsConfig, CapsContext, Grants, Variable, Variables};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = CapsContext::new(&CapsConfig::default(), Some("data".as_ref()))?;
//! let grants = Grants {
//!     clock: true,
//!     key_value_stores: vec!["default".into()],
//!     allowed_outbound_hosts: vec!["http://127.0.0.1:8080".into()],
//!     ..Grants::default()
//! };
//! let vars = Variables::new().with("greeting", Variable::plain("Hello")).with("token", Variable::secret("s3cr3t"));
//! let builder = glint_caps::register(SandboxBuilder::new(), "hello", &grants, &vars, &ctx)?;
//! let mut sandbox = builder.load_file("guest")?.init()?;
//! // Per-request quotas count from here until the guard is dropped, on this thread.
//! let request = glint_caps::enter_request(glint_caps::RequestContext { request_id: "1".into(), function: "hello".into() });
//! sandbox.call("handle", &[glint::Value::Bytes(vec![])])?;
//! println!("{:?}", request.finish());
//! # Ok(()) }
//! ```
//!
//! Names, signatures, errors and limits of every host function: `docs/CAPABILITIES.md` and
//! [`IMPORTS`]. Guests call them through `glint_guest::caps`.
//!
//! Errors are one type, [`CapsError`], classified by [`CapsErrorKind`]; a guest receives the
//! message (which starts with the kind). Secrets (variables marked secret) appear in no error,
//! Debug output or [`Denial`]; [`Redactor`] hides them in text a guest wrote.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod context;
mod error;
mod function;
pub mod kv;
mod names;
pub mod outbound;
mod scope;

pub use config::{
    CapsConfig, Grants, Redactor, StoreConfig, Variable, Variables, DEFAULT_KV_QUOTA_BYTES,
    DEFAULT_MAX_OUTBOUND_REQUESTS, DEFAULT_OUTBOUND_MAX_RESPONSE_BYTES, DEFAULT_OUTBOUND_TIMEOUT_MS,
};
pub use context::{CapsContext, Denial};
pub use error::{CapsError, CapsErrorKind, Quota};
pub use function::FunctionCaps;
pub use names::{lookup, Capability, CapabilityImport, IMPORTS};
pub use outbound::{AllowList, HostPattern};
pub use scope::{enter_request, RequestContext, RequestGuard, RequestUsage};

use glint::SandboxBuilder;

/// Registers on `builder` the host functions of the capabilities `grants` and `vars` give
/// `function` (see [`FunctionCaps::new`] and [`FunctionCaps::register`]).
///
/// # Errors
/// A grant that does not parse (the error names its manifest key), a variable read from an
/// unset environment variable, a store granted without a data directory, a database that does
/// not open.
pub fn register(
    builder: SandboxBuilder,
    function: &str,
    grants: &Grants,
    vars: &Variables,
    ctx: &CapsContext,
) -> Result<SandboxBuilder, CapsError> {
    Ok(FunctionCaps::new(function, grants, vars, ctx)?.register(builder))
}

/// Registers refusing stubs for the capabilities `function` is NOT granted (see
/// [`FunctionCaps::register_denials`]), so an ungranted call fails naming the grant it lacks.
///
/// # Errors
/// As [`register`].
pub fn register_denials(
    builder: SandboxBuilder,
    function: &str,
    grants: &Grants,
    vars: &Variables,
    ctx: &CapsContext,
) -> Result<SandboxBuilder, CapsError> {
    Ok(FunctionCaps::new(function, grants, vars, ctx)?.register_denials(builder))
}
