//! The sandbox lifecycle: [`SandboxBuilder`] → [`UninitSandbox`] (partition built, image
//! mapped, nothing run) → [`Sandbox`] (initialised, ready for calls); snapshots and restore; a
//! [`Template`] to make sandboxes without running the guest again; a [`SandboxPool`] of them.
//!
//! Files, each importing only from the ones above it: `config` and `stats` (plain data),
//! `functions` (the guest's exports and imports), `core` (the state every sandbox carries),
//! `run` (the call cycle and run loop), `debug` (its crash-dump and gdb hooks) and `snapshot`
//! (snapshots, and restore) on the core, then
//! the public types: `ready` (`Sandbox`), `uninit`, `builder`, `template`, `pool`.

mod builder;
mod config;
mod core;
mod debug;
mod file;
mod functions;
#[cfg(feature = "async")]
mod future;
mod pool;
mod ready;
mod run;
mod snapshot;
mod stats;
mod template;
mod uninit;

#[cfg(test)]
mod tests;

pub use builder::SandboxBuilder;
pub use config::{Limits, LogOverflow, DEFAULT_CALL_TIMEOUT};
pub use file::{MemorySizes, SnapshotFileError, SNAPSHOT_FORMAT};
pub use functions::{Export, Import};
#[cfg(feature = "async")]
pub use future::{AsyncPool, CallFuture};
pub use pool::{PoolConfig, PoolStats, PooledSandbox, SandboxPool, WhenEmpty};
pub use ready::Sandbox;
pub use snapshot::Snapshot;
pub use stats::{CallStats, LogRecord};
pub use template::Template;
pub use uninit::UninitSandbox;

/// `Sandbox` and `UninitSandbox` must stay `Send` (checked at compile time).
const _: () = {
    const fn send<T: Send>() {}
    send::<Sandbox>();
    send::<UninitSandbox>();
};
