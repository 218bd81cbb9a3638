//! Paths of the guest programs built from `guest/bins` (Rust) and `guest/c` (C), for glint's tests,
//! examples and benches: one constant per guest, named after it in upper case (`HELLO`, `HELLO_C`),
//! and [`GUESTS`] with all of them.
//!
//! A dev-dependency only: building this crate builds the guests (see `build.rs`).

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
