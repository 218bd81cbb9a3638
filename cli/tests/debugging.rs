//! `glint run --core-dump` and `glint run --gdb`, with a real gdb.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const TESTGUEST: &str = glint_guest_artifacts::TESTGUEST;

fn glint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glint"))
}

#[test]
fn run_with_core_dump_writes_a_core_gdb_opens_and_says_where() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    // The directory is created when missing.
    let dir = common::temp_dir("cli-cores").join("nested");
    let out = glint().args(["run", "--core-dump", dir.to_str().unwrap(), TESTGUEST, "divide_error"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let core = dir.join("glint-0.core");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("core dumped to {}", core.display())), "{stderr}");
    let gdb =
        Command::new("gdb").args(["-batch", "-nx", "-ex", "bt", TESTGUEST, core.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&gdb.stdout);
    assert!(text.contains("divide_error () at test/testguest/src/main.rs"), "{text}");
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn core_dumps_stop_at_max_files() {
    require_kvm!();
    let dir = common::temp_dir("cli-cores");
    for _ in 0..4 {
        let out = glint()
            .args(["run", "--core-dump", dir.to_str().unwrap(), "--core-dump-max-files", "2", TESTGUEST, "ud2"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["glint-0.core", "glint-1.core"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `glint run --gdb 127.0.0.1:0 ...` and gdb with `commands` against it; returns glint's
/// exit status, stdout and stderr, and gdb's output.
fn run_under_gdb(args: &[&str], commands: &[&str]) -> (Option<i32>, String, String, String) {
    let mut glint = glint()
        .args(["run", "--gdb", "127.0.0.1:0", "--timeout-ms", "60000", TESTGUEST])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(glint.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .strip_prefix("note: waiting for gdb on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address announced: {first:?}"))
        .to_owned();
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"]);
    gdb.args(["-ex", &format!("target remote {addr}")]);
    for c in commands {
        gdb.args(["-ex", c]);
    }
    let gdb = gdb.arg(TESTGUEST).output().unwrap();
    let gdb_out = format!("{}\n{}", String::from_utf8_lossy(&gdb.stdout), String::from_utf8_lossy(&gdb.stderr));
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let mut stdout = String::new();
    glint.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = glint.wait().unwrap();
    eprintln!("gdb said:\n{gdb_out}\nglint said:\n{first}{rest}");
    (status.code(), stdout, format!("{first}{rest}"), gdb_out)
}

#[test]
fn run_with_gdb_breaks_reads_steps_and_gives_the_right_result() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let (status, stdout, _, gdb) = run_under_gdb(
        &["debug_add", "2", "3"],
        &[
            "break debug_add_into",
            "continue",
            "p $edi",
            "p $esi",
            "set language c",
            "set $sum = (int *) $rdx",
            "stepi",
            "finish",
            "p *$sum",
            "continue",
        ],
    );
    assert!(gdb.contains("Breakpoint 1, debug_add_into ()"), "{gdb}");
    assert!(gdb.contains("$1 = 2\n") && gdb.contains("$2 = 3\n") && gdb.contains("$3 = 5\n"), "{gdb}");
    assert!(gdb.contains("exited normally"), "{gdb}");
    assert_eq!((status, stdout.as_str()), (Some(0), "5\n"));
}

#[test]
fn run_with_gdb_survives_gdb_dying_mid_session() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let (status, stdout, _, gdb) = run_under_gdb(
        &["debug_add", "20", "22"],
        &["set breakpoint always-inserted on", "break debug_add_into", "continue", "shell kill -9 $PPID"],
    );
    assert!(gdb.contains("Breakpoint 1, debug_add_into ()"), "{gdb}");
    assert_eq!((status, stdout.as_str()), (Some(0), "42\n"));
}

#[test]
fn run_with_gdb_refuses_addresses_beyond_loopback() {
    let out = glint().args(["run", "--gdb", "0.0.0.0:0", TESTGUEST, "debug_add", "1", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("loopback addresses only"), "{stderr}");
}
