//! The benchmark guest: the smallest functions for each measured path.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::cell::UnsafeCell;

fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// Makes `n` host calls to `nop`; returns how many succeeded.
fn host_calls(n: u32) -> u32 {
    (0..n).filter(|_| glint_guest::host::call::<(), _>("nop", ()).is_ok()).count() as u32
}

const AREA_PAGES: usize = 256;

struct Area(UnsafeCell<[u8; AREA_PAGES * 4096]>);
// SAFETY: the guest is single-threaded.
unsafe impl Sync for Area {}
static AREA: Area = Area(UnsafeCell::new([0; AREA_PAGES * 4096]));

/// Writes one byte in each of the first `pages` pages of a 1 MiB area, so a restore afterwards
/// has exactly that many guest pages to copy back (plus the stack and buffer pages of the call).
fn dirty(pages: u32) -> u32 {
    let n = (pages as usize).min(AREA_PAGES);
    let base = AREA.0.get().cast::<u8>();
    for i in 0..n {
        // SAFETY: `i * 4096` is inside the area; no reference to it exists.
        unsafe { base.add(i * 4096).write_volatile(i as u8 + 1) };
    }
    n as u32
}

fn spin() -> u64 {
    let mut n = 0u64;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

glint_guest::exports!(add, echo, host_calls, dirty, spin);
