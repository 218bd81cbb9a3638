//! The standard capabilities of glint guests, as host functions: clock, random bytes, variables,
//! a persistent key-value store and outbound HTTP with an allow-list.
//!
//! Deny by default: [`register`] adds the host functions of the capabilities a function is
//! granted and nothing else. `glint serve` grants them from its manifest; an embedder can
//! register them on its own [`SandboxBuilder`]:
//!
//! ```no_run
//! use glint::{GuestImage, PoolConfig, SandboxBuilder, SandboxPool, Value};
//! use glint_caps::{CapsConfig, CapsContext, Grants, RequestContext, RequestState, Variable, Variables};
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
//! // Each sandbox carries a RequestState: the host functions count each request's quotas and
//! // usage in it, through `glint::Caller`.
//! let builder = SandboxBuilder::<RequestState>::with_data();
//! let builder = glint_caps::register(builder, "hello", &grants, &vars, &ctx)?;
//! let pool = SandboxPool::new(&builder, &GuestImage::from_file("guest")?, PoolConfig::default())?;
//! // A checkout's data is fresh (nothing used); say which request it serves.
//! let mut sandbox = pool.take()?;
//! sandbox.data_mut().begin(RequestContext { request_id: "1".into(), function: "hello".into() });
//! sandbox.call("handle", &[Value::Bytes(vec![])])?;
//! println!("{:?}", sandbox.data().usage());
//! # Ok(()) }
//! ```
//!
//! An embedder with data of its own keeps a [`RequestState`] in it and implements
//! [`RequestData`] to say where. `SandboxBuilder::new()` (data `()`) works too: its calls count
//! against one counter of the registration instead of per request.
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
mod request;

pub use config::{
    CapsConfig, Grants, Redactor, StoreConfig, Variable, Variables, DEFAULT_KV_QUOTA_BYTES,
    DEFAULT_MAX_OUTBOUND_REQUESTS, DEFAULT_OUTBOUND_MAX_RESPONSE_BYTES, DEFAULT_OUTBOUND_TIMEOUT_MS,
};
pub use context::{CapsContext, Denial, QuotaHit};
pub use error::{CapsError, CapsErrorKind, Quota};
pub use function::{FunctionCaps, RequestCaps};
pub use names::{lookup, Capability, CapabilityImport, IMPORTS};
pub use outbound::{AllowList, HostPattern};
pub use request::{RequestContext, RequestData, RequestState, RequestUsage};

use glint::SandboxBuilder;

/// Registers on `builder` the host functions of the capabilities `grants` and `vars` give
/// `function` (see [`FunctionCaps::new`] and [`FunctionCaps::register`]). `T` is the sandboxes'
/// data: a [`RequestState`], an embedder's type holding one ([`RequestData`]), or `()`.
///
/// # Errors
/// A grant that does not parse (the error names its manifest key), a variable read from an
/// unset environment variable, a store granted without a data directory, a database that does
/// not open.
pub fn register<T: RequestData>(
    builder: SandboxBuilder<T>,
    function: &str,
    grants: &Grants,
    vars: &Variables,
    ctx: &CapsContext,
) -> Result<SandboxBuilder<T>, CapsError> {
    Ok(FunctionCaps::new(function, grants, vars, ctx)?.register(builder))
}

/// Registers refusing stubs for the capabilities `function` is NOT granted (see
/// [`FunctionCaps::register_denials`]), so an ungranted call fails naming the grant it lacks.
///
/// # Errors
/// As [`register`].
pub fn register_denials<T: RequestData>(
    builder: SandboxBuilder<T>,
    function: &str,
    grants: &Grants,
    vars: &Variables,
    ctx: &CapsContext,
) -> Result<SandboxBuilder<T>, CapsError> {
    Ok(FunctionCaps::new(function, grants, vars, ctx)?.register_denials(builder))
}
