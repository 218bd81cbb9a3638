//! The guest side of glint: write `#![no_std]` functions, export them, call the host.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! extern crate alloc;
//! use alloc::{format, string::String};
//!
//! glint_guest::imports! {
//!     /// Registered by the embedder as "greeting".
//!     fn greeting(name: &str) -> String;
//! }
//!
//! fn add(a: i32, b: i32) -> i32 { a + b }
//! fn greet(name: String) -> Result<String, glint_guest::HostCallError> {
//!     Ok(format!("{}!", greeting(&name)?))
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

pub use export::{Handler, Import, ImportBlock, IntoResult, Registry};
pub use glint_abi as abi;
pub use glint_abi::convert::{FromWire, ToWire};
pub use glint_abi::ValueType;
pub use host::HostCallError;

#[doc(hidden)]
pub mod __private {
    #[cfg(target_os = "none")]
    pub use crate::rt::start;
    pub use alloc::string::String;
    pub use alloc::vec::Vec;
    pub use core::arch::global_asm;
}

/// Declares the standard capabilities this guest uses (`clock`, `random`, `variables`, `kv`,
/// `http`; see [`caps`] and docs/CAPABILITIES.md), so the host sees them among its imports: a
/// server refuses to start a function that declares a capability its manifest does not grant,
/// naming the function, the import and the manifest key that would grant it, and an embedder's
/// `init()` refuses a sandbox that lacks one. Use it once, listing every capability whose
/// wrappers the guest calls: `glint_guest::capabilities!(clock, kv);`
#[macro_export]
macro_rules! capabilities {
    ($($cap:ident),* $(,)?) => {
        $( $crate::__capability_imports!($cap); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __capability_imports {
    (clock) => {
        $crate::imports! {
            fn __glint_clock_wall() -> u64 = "glint:clock/wall@1";
            fn __glint_clock_monotonic() -> u64 = "glint:clock/monotonic@1";
        }
    };
    (random) => {
        $crate::imports! {
            fn __glint_random_bytes(n: u32) -> $crate::__private::Vec<u8> = "glint:random/bytes@1";
        }
    };
    (variables) => {
        $crate::imports! {
            fn __glint_variables_get(name: &str) -> $crate::__private::String = "glint:variables/get@1";
        }
    };
    (kv) => {
        $crate::imports! {
            fn __glint_kv_get(store: &str, key: &str) -> $crate::__private::Vec<u8> = "glint:kv/get@1";
            fn __glint_kv_set(store: &str, key: &str, value: &[u8]) = "glint:kv/set@1";
            fn __glint_kv_delete(store: &str, key: &str) -> bool = "glint:kv/delete@1";
            fn __glint_kv_list(store: &str, prefix: &str, after: &str, max: u32) -> $crate::__private::Vec<u8> = "glint:kv/list@1";
        }
    };
    (http) => {
        $crate::imports! {
            fn __glint_http_send(request: &[u8]) -> $crate::__private::Vec<u8> = "glint:http/send@1";
        }
    };
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

/// Declares host functions this guest imports and generates a typed wrapper for each.
///
/// ```ignore
/// glint_guest::imports! {
///     /// The embedder's "greeting".
///     pub fn greeting(name: &str) -> String;
///     fn nop();
///     /// A name that is not a Rust identifier.
///     fn kv_get(store: &str, key: &str) -> Vec<u8> = "glint:kv/get@1";
/// }
/// ```
///
/// Each wrapper returns `Result<R, HostCallError>`. The declarations travel to the host with the
/// exports at initialisation, and the host refuses to initialise a guest whose imports it does
/// not provide with exactly these types, naming each one. A guest may have several blocks.
#[macro_export]
macro_rules! imports {
    ($($(#[$meta:meta])* $vis:vis fn $f:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $(= $name:literal)?;)*) => {
        $(
            $(#[$meta])*
            #[allow(dead_code, reason = "a declared import need not be called")]
            $vis fn $f($($arg: $ty),*) -> ::core::result::Result<$crate::__ret!($($ret)?), $crate::HostCallError> {
                #[cfg(target_os = "none")]
                { $crate::host::call($crate::__import_name!($f $($name)?), ($($arg,)*)) }
                #[cfg(not(target_os = "none"))]
                { $(let _ = $arg;)* ::core::unimplemented!("host calls exist only on the bare-metal target") }
            }
        )*
        const _: () = {
            #[used]
            #[link_section = "glint_imports"]
            static IMPORTS: $crate::ImportBlock = $crate::ImportBlock::new(&[$(
                $crate::Import {
                    name: $crate::__import_name!($f $($name)?),
                    params: <($($ty,)*) as $crate::abi::convert::ParamTypes>::TYPES,
                    result: <$crate::__ret!($($ret)?) as $crate::abi::convert::WireType>::TYPE,
                },
            )*]);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ret {
    () => {
        ()
    };
    ($t:ty) => {
        $t
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __import_name {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident $name:literal) => {
        $name
    };
}

/// Prints a line through the host's log crossing (level info).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::host::log($crate::abi::code::LogLevel::Info, format_args!($($arg)*))
    };
}
