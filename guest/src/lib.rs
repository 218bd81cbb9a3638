//! The guest side of glint: write `#![no_std]` functions, export them, call the host.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! extern crate alloc;
//! use alloc::string::String;
//!
//! fn add(a: i32, b: i32) -> i32 { a + b }
//! fn greet(name: String) -> Result<String, glint_guest::HostCallError> {
//!     glint_guest::host::call("prefix", (name,))
//! }
//! glint_guest::exports!(add, greet);
//! ```
//!
//! The library provides the entry point, the call dispatcher, a heap allocator over the memory
//! the host reserves, a panic handler that reports the message to the host, and [`println!`]
//! through the host's log crossing. Exported functions take and return the types of
//! [`ValueType`]; returning `Result<T, E: Display>` reports `E` to the caller as an error.
//!
//! The runtime (entry, allocator, panic handler, port I/O) exists only on the bare-metal target
//! (`target_os = "none"`); on other targets the crate builds so its encoding logic can be tested.
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(
    not(target_os = "none"),
    allow(dead_code, unused_imports, reason = "the runtime that uses these exists only on the bare-metal target")
)]

extern crate alloc;

pub mod caps;
mod export;
pub mod host;
pub mod http;
mod io;
#[cfg(target_os = "none")]
mod rt;
mod types;

pub use export::{Handler, Registry};
pub use glint_abi as abi;
pub use glint_abi::ValueType;
pub use host::HostCallError;
pub use types::{FromValue, IntoResult, ToValue};

#[doc(hidden)]
pub mod __private {
    #[cfg(target_os = "none")]
    pub use crate::rt::start;
    pub use core::arch::global_asm;
}

/// Declares the functions this guest exports, by name, and provides its entry point.
///
/// Each argument is the path of a function (or a `"name" => path` pair to export under another
/// name). Parameters and results must be among [`ValueType`]'s types.
#[macro_export]
macro_rules! exports {
    ($($f:ident),* $(,)?) => {
        $crate::exports!($(stringify!($f) => $f),*);
    };
    ($($name:expr => $f:path),* $(,)?) => {
        /// Called once by the glint runtime at initialisation to learn the exports.
        #[no_mangle]
        pub fn __glint_exports(registry: &mut $crate::Registry) {
            $( registry.export($name, $f); )*
        }

        // The entry point: a fresh stack from the host, aligned, no frame to return to.
        #[cfg(target_os = "none")]
        $crate::__private::global_asm!(
            ".globl _start",
            ".type _start,@function",
            "_start:",
            "xor ebp, ebp",
            "and rsp, -16",
            "call {start}",
            "ud2",
            start = sym $crate::__private::start,
        );
    };
}

/// Prints a line through the host's log crossing (level info).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::host::log($crate::abi::code::log_level::INFO, format_args!($($arg)*))
    };
}
