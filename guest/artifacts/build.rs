//! Builds the guest programs in `guest/bins` once, for `x86_64-unknown-none`, and exports their
//! paths to the host's tests, examples and benches (the pattern of wasmtime's test-programs).
//!
//! A fresh machine lacks the bare-metal target: we install it with rustup when rustup is there,
//! and otherwise stop with the exact command to run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "x86_64-unknown-none";
/// The guest programs, by the constant name under which their path is exported.
const GUESTS: &[(&str, &str)] =
    &[("HELLO", "hello"), ("HTTP", "http"), ("TESTGUEST", "testguest"), ("BENCHGUEST", "benchguest")];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let here = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let guest = here.parent().ok_or("no guest directory")?.to_path_buf();
    let bins = guest.join("bins");
    let root = guest.parent().ok_or("no workspace root")?.to_path_buf();
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("guests");

    for path in ["bins/examples", "bins/test", "bins/Cargo.toml", "bins/Cargo.lock", "src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("abi/src").display());
    println!("cargo:rerun-if-changed={}", root.join("abi/Cargo.toml").display());

    ensure_target()?;

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&bins)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir);
    // Flags meant for the host build (coverage, sanitizers, a host target) must not reach the
    // bare-metal build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("could not run cargo to build the guests: {e}"))?;
    if !status.success() {
        return Err(format!("building the guests in {} failed ({status}); see the output above", bins.display()));
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let mut consts = String::new();
    for (name, bin) in GUESTS {
        let path = target_dir.join(TARGET).join("release").join(bin);
        if !path.is_file() {
            return Err(format!("guest `{bin}` was not produced at {}", path.display()));
        }
        consts.push_str(&format!(
            "/// Path of the `{bin}` guest, built for `{TARGET}`.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("paths.rs"), consts).map_err(|e| e.to_string())
}

/// Makes sure the standard library for the bare-metal target is installed.
fn ensure_target() -> Result<(), String> {
    if target_installed() {
        return Ok(());
    }
    println!("cargo:warning=installing the guest target with `rustup target add {TARGET}`");
    let added = Command::new("rustup").args(["target", "add", TARGET]).status();
    if matches!(added, Ok(s) if s.success()) && target_installed() {
        return Ok(());
    }
    Err(format!(
        "the Rust target `{TARGET}` that guests build for is not installed and could not be installed \
         automatically; run `rustup target add {TARGET}` and build again"
    ))
}

fn target_installed() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "target-libdir", "--target", TARGET]).output() else {
        return false;
    };
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    out.status.success() && has_core(Path::new(&dir))
}

fn has_core(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        .unwrap_or(false)
}
