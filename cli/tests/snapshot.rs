//! `glint snapshot` and `glint run --snapshot`: a snapshot file written by one process runs in
//! another, and a bad one is refused with one line and status 3.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn glint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args).output().unwrap()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("glint-cli-snap-{name}-{}", std::process::id()))
}

#[test]
fn a_snapshot_written_by_one_process_runs_in_another() {
    require_kvm!();
    let hello = glint_guest_artifacts::HELLO;
    // Written by the CLI, run by the CLI.
    let file = temp("cli.snap");
    let out = glint(&["snapshot", hello, "-o", file.to_str().unwrap(), "--memory-mib", "8"]);
    assert!(out.status.success(), "{out:?}");
    let out = glint(&["run", "--snapshot", file.to_str().unwrap(), "add", "2", "3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "5\n");
    let out = glint(&["run", "--snapshot", file.to_str().unwrap(), "echo", "00ff10", "--json"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"function\":\"echo\",\"type\":\"Vec<u8>\",\"result\":\"00ff10\"}\n"
    );
    // Written by the CLI, loaded here by the library with the image and the same sizes.
    let image = glint::GuestImage::from_file(hello).unwrap();
    let builder = common::test_builder().memory_mib(8);
    let template = glint::Template::load(&file, &builder, &image).unwrap();
    let mut sb = template.instantiate().unwrap();
    assert_eq!(sb.call("add", &[glint::Value::I32(20), glint::Value::I32(22)]).unwrap(), glint::Value::I32(42));
    // Written here by the library, run by the CLI.
    let mine = temp("lib.snap");
    glint::Template::new(&common::test_builder(), &image).unwrap().save(&mine).unwrap();
    let out = glint(&["run", "--snapshot", mine.to_str().unwrap(), "add", "-2", "-3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "-5\n");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&mine);
}

#[test]
fn a_bad_snapshot_file_is_refused_with_one_line() {
    require_kvm!();
    let file = temp("bad.snap");
    let out = glint(&["snapshot", glint_guest_artifacts::HELLO, "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = glint(&["run", "--snapshot", file.to_str().unwrap(), "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("checksum"), "{err}");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let out = glint(&["run", "--snapshot", file.to_str().unwrap(), "add", "1", "2"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8(out.stderr).unwrap().contains("truncated"));
    let out = glint(&["run", "--snapshot", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "no function: {out:?}");
    // A snapshot file is not a signed image, and its guest has already started: trust options and
    // --gdb are refused with it, before the file is read.
    let digest = format!("sha256:{}", "0".repeat(64));
    for extra in [["--digest", digest.as_str()], ["--gdb", "127.0.0.1:0"]] {
        let mut args = vec!["run", "--snapshot", file.to_str().unwrap(), "add", "1", "2"];
        args.extend(extra);
        let out = glint(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("--snapshot"), "{extra:?}: {err}");
    }
    let _ = std::fs::remove_file(&file);
}
