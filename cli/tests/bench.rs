//! `glint bench --json`: one run prints every key of the contract (issue 13's cold-start keys
//! included) with a finite, positive figure, each floor key beside the figure compared with it.
//! No timing is asserted: the figures are only checked to exist and to be measurements.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

/// Keys scripts read, each with a number in every run.
const NUMBERS: &[&str] = &[
    // Existing keys (a contract: never renamed).
    "floor_cold_us",
    "floor_call_us",
    "floor_restore_us",
    "cold_start_us",
    "sandbox_from_template_us",
    "warm_call_us",
    "fresh_call_us",
    "fresh_calls_per_sec_1_thread",
    "fresh_calls_per_sec_2_threads",
    // Issue 13, each next to its floor.
    "floor_cold_not_deferred_us",
    "cold_start_deferred_us",
    "cold_start_churn_us",
    "floor_cold_churn_us",
    "cold_start_worst_cpu_us",
    "floor_cold_worst_cpu_us",
    "init_us",
    "snapshot_start_us",
    "snapshot_load_us",
    "process_snapshot_start_us",
    "floor_process_us",
    "snapshot_file_kib",
    "pool_refill_per_sec",
    "echo_1mib_us",
    "memcpy_1mib_us",
];

#[test]
fn bench_json_has_every_cold_start_key_with_its_floor() {
    require_kvm!();
    let out = Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(["bench", glint_guest_artifacts::BENCHGUEST, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in NUMBERS {
        let v = json[key].as_f64().unwrap_or_else(|| panic!("{key} is {:?}", json[key]));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    // Per-CPU figures: one per CPU this process may run on, and the worst is one of them.
    let cpus = glint_bench::cold::allowed_cpus().unwrap().len();
    for (map, worst, pick) in [
        ("cold_start_by_cpu_us", "cold_start_worst_cpu_us", f64::max as fn(f64, f64) -> f64),
        ("floor_cold_by_cpu_us", "floor_cold_worst_cpu_us", f64::max),
        ("pool_refill_by_cpu_per_sec", "pool_refill_per_sec", f64::min),
    ] {
        let by_cpu = json[map].as_object().unwrap_or_else(|| panic!("{map}: {:?}", json[map]));
        assert_eq!(by_cpu.len(), cpus, "{map}: {by_cpu:?}");
        let values: Vec<f64> = by_cpu.values().map(|v| v.as_f64().unwrap()).collect();
        let folded = values.iter().copied().reduce(pick).unwrap();
        assert_eq!(folded, json[worst].as_f64().unwrap(), "{worst} is the extreme of {map}");
    }
}
