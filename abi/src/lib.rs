//! The glint host–guest boundary, written once for both sides.
//!
//! Everything the host and a guest must agree on lives here and nowhere else: the guest memory
//! map ([`layout`]), the I/O ports a guest may use to leave the VM ([`port`]), the byte encoding of
//! values and messages ([`wire`]) and of Rust types ([`convert`]), the status and error codes
//! ([`code`]) and the ABI version
//! carried in every guest image ([`note`]). The crate is `no_std`, has no `unsafe` and no
//! dependencies, so that guests in other languages can be written against `docs/ABI.md`, which
//! describes the same facts in prose.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod caps;
pub mod code;
pub mod convert;
pub mod http;
pub mod layout;
pub mod note;
pub mod port;
pub mod value;
pub mod wire;

#[cfg(feature = "alloc")]
pub use value::Value;
pub use value::{ValueRef, ValueType};

/// The version of this ABI. A host accepts exactly the guests whose note carries this number.
///
/// Bump it on any change a built guest could observe: layout, ports, encoding, codes.
pub const ABI_VERSION: u32 = 2;
