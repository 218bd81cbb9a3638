//! glint runs each function call in its own tiny KVM virtual machine.
//!
//! There is no guest operating system. The host creates a bare VM, maps a small statically
//! linked ELF guest (written with the `glint-guest` crate) into it, sets up 64-bit long mode
//! itself and runs the guest at CPL3. Host and guest talk through a narrow, typed interface:
//! the host calls named guest functions, the guest calls back only the host functions the
//! embedder registered, and any other thing the guest does (a fault, a forbidden instruction,
//! running too long) ends the call with a typed [`Error`].
//!
//! ```no_run
//! use glint::{GuestImage, SandboxBuilder};
//!
//! # fn main() -> Result<(), glint::Error> {
//! let image = GuestImage::from_file("target/guests/x86_64-unknown-none/release/hello")?;
//! let mut sandbox = SandboxBuilder::new()
//!     .memory_mib(16)
//!     .host_fn("greeting", |name: String| format!("Hello from the host, {name}"))
//!     .build(&image)?   // UninitSandbox: VM created, image mapped
//!     .init()?;         // Sandbox: guest initialised, exports known
//! let add = sandbox.typed_fn::<(i32, i32), i32>("add")?; // signature checked once
//! assert_eq!(add.call(&mut sandbox, (2, 3))?, 5);
//! let greeting = sandbox.call("greet", &[glint::Value::String("Ada".into())])?;
//! println!("{greeting}");
//! # Ok(()) }
//! ```
//!
//! Core types: [`GuestImage`] (a checked, shareable ELF), [`SandboxBuilder`] → [`UninitSandbox`]
//! → [`Sandbox`], [`TypedFn`], [`InterruptHandle`], [`Snapshot`] and [`Error`]. For a fresh,
//! isolated sandbox per call, [`SandboxPool`] keeps ready VMs made from a copy-on-write template
//! of the initialised guest.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod debug;
mod error;
mod func;
mod image;
mod mem;
mod sandbox;
mod vmm;

pub use debug::core::CoreDumpLimits;
#[cfg(feature = "gdb")]
pub use debug::gdb::GdbServer;
pub use error::{
    ConfigError, Crash, DebuggerError, Error, ErrorKind, FaultKind, GuestFault, HostError, ImportError, ImportErrors,
    Limit, Message, PanicPayload, PoolEmpty, ProtocolError, SnapshotMismatch,
};
pub use func::{BoxError, Caller, HostFunction, HostParam, HostResult, Signature, TypedFn};
pub use glint_abi::convert::{DecodeParams, EncodeParams, FromWire, ParamTypes, ToWire, WireType};
pub use glint_abi::{Value, ValueType, ABI_VERSION};
pub use image::{
    DigestParseError, GuestImage, ImageDigest, ImageError, ImageSignature, KeyFormatError, SignatureFormatError,
    TrustError, TrustPolicy, TrustedKey, Verification,
};
pub use mem::layout::LayoutError;
#[cfg(feature = "async")]
pub use sandbox::{AsyncPool, CallFuture};
pub use sandbox::{
    CallStats, Export, Import, Limits, LogOverflow, LogRecord, MemorySizes, PoolConfig, PoolStats, PooledSandbox,
    Sandbox, SandboxBuilder, SandboxPool, Snapshot, SnapshotFileError, Template, UninitSandbox, WhenEmpty,
    DEFAULT_CALL_TIMEOUT, SNAPSHOT_FORMAT,
};
pub use vmm::interrupt::{call_cancelled, set_interrupt_signal_offset, InterruptHandle};
pub use vmm::{prepare_vms, vm_factory_stats, Doing, MsrFilter, VmFactoryStats, VmmError};
