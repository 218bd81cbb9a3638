//! The typed face of the boundary: host functions (with an optional per-sandbox context), typed
//! handles to guest functions, and signatures. The Rust type <-> wire value mapping itself is
//! `glint_abi::convert`, shared with the guest library.

pub(crate) mod host;
mod signature;
pub(crate) mod typed;

pub use host::{BoxError, Caller, HostFunction, HostParam, HostResult};
pub use signature::Signature;
pub use typed::TypedFn;
