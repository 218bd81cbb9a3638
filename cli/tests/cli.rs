//! The `glint` command line: results on stdout, one line on stderr and a status below 128 for
//! every failure, no hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

fn glint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args).output().unwrap()
}

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("guest: ") && !l.starts_with("note: ")).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("glint: "), "{err}");
    lines[0].to_owned()
}

#[test]
fn run_prints_the_result() {
    require_kvm!();
    let hello = glint_guest_artifacts::HELLO;
    let out = glint(&["run", hello, "add", "2", "3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "5\n");
    let out = glint(&["run", hello, "echo", "00ff10"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "00ff10\n");
    let out = glint(&["run", hello, "add", "-2", "-3", "--json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"function\":\"add\",\"type\":\"i32\",\"result\":-5}\n");
}

#[test]
fn run_unknown_function_is_a_usage_error() {
    require_kvm!();
    let out = glint(&["run", glint_guest_artifacts::HELLO, "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_line(&out), "glint: guest exports no function named `nope`");
}

#[test]
fn run_with_wrong_arguments_is_a_usage_error() {
    require_kvm!();
    let out = glint(&["run", glint_guest_artifacts::HELLO, "add", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("takes 2 argument(s)"));
    let out = glint(&["run", glint_guest_artifacts::HELLO, "add", "2", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("argument 2 `x` is not a valid i32"));
}

#[test]
fn malformed_or_missing_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("glint-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.elf");
    std::fs::write(&bad, b"\x7fELF\x02\x01\x01 truncated").unwrap();
    let out = glint(&["run", bad.to_str().unwrap(), "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_line(&out).starts_with("glint: guest image refused: "));
    let out = glint(&["inspect", dir.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    stderr_line(&out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn guest_failures_exit_with_status_one() {
    require_kvm!();
    let out = glint(&["run", glint_guest_artifacts::HELLO, "fail", "boom"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).starts_with("glint: guest panicked: boom"));
    let out = glint(&["run", glint_guest_artifacts::TESTGUEST, "read_unmapped", "3735879680"]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(line.contains("page fault") && line.contains("rip 0x") && line.contains("address 0xdead0000"), "{line}");
}

#[test]
fn a_looping_guest_is_stopped_by_the_timeout() {
    require_kvm!();
    let start = std::time::Instant::now();
    let out = glint(&["run", glint_guest_artifacts::TESTGUEST, "spin", "--timeout-ms", "200"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr_line(&out), "glint: guest call timed out after 200ms");
    assert!(start.elapsed() < std::time::Duration::from_secs(60), "the CLI hung");
}

#[test]
fn inspect_lists_the_exports() {
    require_kvm!();
    let out = glint(&["inspect", glint_guest_artifacts::HELLO]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  add(i32, i32) -> i32\n"), "{text}");
    assert!(text.contains("  greet(String) -> String\n"), "{text}");
}

#[test]
fn usage_errors() {
    assert_eq!(glint(&[]).status.code(), Some(2));
    assert_eq!(glint(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(glint(&["run", "x", "y", "--timeout-ms", "soon"]).status.code(), Some(2));
    assert!(glint(&["--help"]).status.success());
}

#[test]
fn every_hostile_guest_the_cli_can_express_fails_cleanly() {
    require_kvm!();
    let guest = glint_guest_artifacts::TESTGUEST;
    // (function, arguments): each must end with status 1, one line on stderr, no hang.
    let cases: &[(&str, &[&str])] = &[
        ("panics", &["boom"]),
        ("ud2", &[]),
        ("read_unmapped", &["0"]),
        ("write_code", &[]),
        ("gp_fault", &[]),
        ("privileged", &[]),
        ("divide_error", &[]),
        ("breakpoint", &[]),
        ("exec_heap", &[]),
        ("exec_stack", &[]),
        ("recurse", &["1000000"]),
        ("big_stack_array", &["3"]),
        ("alloc_until_oom", &["4096"]),
        ("wrmsr", &["3221225730", "1"]),
        ("rdmsr", &["3221225730"]),
        ("dr7_write", &["1"]),
        ("swapgs", &[]),
        ("xsetbv", &["7"]),
        ("port_in", &["224"]),
        ("spin", &[]),
        ("log_forever", &[]),
    ];
    for (function, args) in cases {
        let mut argv = vec!["run", guest, function];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--timeout-ms", "300"]);
        let out = glint(&argv);
        if out.status.code() == Some(2) {
            // The function's signature differs from what this table assumed: say which.
            panic!("{function}: usage error {:?}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(out.status.code(), Some(1), "{function}: {out:?}");
        let line = stderr_line(&out);
        assert!(line.len() < 600, "{function}: {line}");
    }
}
