//! The hostile-guest catalogue (HOSTILE-GUESTS.md, summarised in docs/SECURITY.md), one test per
//! row that applies, named `row_NN_<behaviour>`.
//!
//! Every test asserts the exact typed error, checks that the same sandbox works again after
//! `reset()` ([`hostile`]), and runs a bystander sandbox on another thread that calls all the
//! while and must never be disturbed ([`Bystander`]). The hostile code is either a function of the
//! test guest (`guest/bins/test/testguest`) or a few hand-assembled bytes behind [`RAW_PRELUDE`],
//! for what no compiler emits. Every guest call here runs under a deadline, and every loop is
//! bounded, so a regression fails a test instead of hanging it.
//!
//! One module per section of the catalogue; the harness is `tests/common/hostile.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod boundary;
mod cpu;
mod elf;
mod host_api;
mod reuse;
