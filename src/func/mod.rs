//! Values, signatures, host functions and typed guest calls: the typed face of the boundary.

pub mod host;
pub(crate) mod typed;
pub(crate) mod value;

pub use host::{HostFunction, HostResult};
pub use typed::TypedFn;
pub use value::{GuestParams, GuestValue, Signature};
