//! The example guest: a few functions of each kind, called by `examples/hello.rs` and the CLI.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use glint_guest::HostCallError;

glint_guest::imports! {
    /// The embedder registers this: it returns a greeting prefix for `name`.
    fn greeting(name: &str) -> String;
}

fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

/// Asks the host for a greeting prefix, so the call crosses the boundary twice.
fn greet(name: String) -> Result<String, HostCallError> {
    let prefix = greeting(&name)?;
    glint_guest::println!("greeting {name}");
    Ok(format!("{prefix}, {name}!"))
}

fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// Floats work: the bare-metal target uses soft float.
fn hypot(a: f64, b: f64) -> f64 {
    // Newton's square root: no libm on bare metal.
    let s = a * a + b * b;
    if s == 0.0 {
        return 0.0;
    }
    let mut x = s;
    for _ in 0..64 {
        x = 0.5 * (x + s / x);
    }
    x
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// State persists across calls on the same sandbox, until it is restored.
fn count() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

fn fail(message: String) -> i32 {
    panic!("{message}")
}

/// Reads the `u64` at `addr`: an address the guest has no page for faults, and the host reports
/// `Error::GuestFault` (the C example guest has the same function).
fn peek(addr: u64) -> u64 {
    // SAFETY: not safe for every `addr`, and that is the point: an unmapped or supervisor page
    // raises #PF, which ends the call on the host's side; the guest never resumes after it. A
    // mapped address is read like any other memory, without creating a reference.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

glint_guest::exports!(add, greet, echo, hypot, count, fail, peek);
