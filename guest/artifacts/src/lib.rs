//! Paths of the guest programs built from `guest/bins`, for glint's tests, examples and benches.
//!
//! A dev-dependency only: building this crate builds the guests (see `build.rs`).

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
