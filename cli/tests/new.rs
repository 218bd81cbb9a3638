//! `glint new`: projects created in a temporary directory outside the repository, built with
//! their usual command (`cargo build --release`, `make`), run with `glint run` and through the
//! library with the host function they import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn glint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args).output().unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("glint-new-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        assert!(!dir.starts_with(repo().canonicalize().unwrap()), "{} lies inside the repository", dir.display());
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `tool` runs. Under `CI=true` a missing tool fails the test instead of skipping it.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "`{tool}` is not installed but CI=true");
        eprintln!("note: `{tool}` is not installed; skipping");
    }
    ok
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `hello Ada` with `glint run` (which stubs the import) and through the library with a
/// real `greeting`; both must give the guest's answer.
fn run_hello(exe: &Path) {
    let out = glint(&["run", exe.to_str().unwrap(), "hello", "Ada"]);
    check(&out, "glint run");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Hello, Ada! (the host says: no host function named `greeting`)\n"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("guest: hello(Ada)\n"), "the log line reaches stderr: {stderr}");
    assert!(stderr.contains("note: the guest imports `greeting(String) -> String`"), "{stderr}");

    let out = glint(&["inspect", exe.to_str().unwrap()]);
    check(&out, "glint inspect");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  hello(String) -> String\n") && text.contains("  greeting(String) -> String\n"), "{text}");

    let image = glint::GuestImage::from_file(exe).unwrap();
    let mut sb = glint::SandboxBuilder::new()
        .host_fn("greeting", |name: String| format!("Howdy, {name}"))
        .build(&image)
        .unwrap()
        .init()
        .unwrap();
    let imports: Vec<String> = sb.imports().iter().map(|i| format!("{}{}", i.name, i.signature)).collect();
    assert_eq!(imports, ["greeting(String) -> String"]);
    let hello = sb.typed_fn::<(String,), String>("hello").unwrap();
    assert_eq!(hello.call(&mut sb, ("Ada".into(),)).unwrap(), "Howdy, Ada, Ada!");
    // Without the host function the guest is refused at init, naming it.
    match glint::SandboxBuilder::new().build(&image).unwrap().init() {
        Err(glint::Error::Imports(e)) => assert!(e.to_string().contains("greeting"), "{e}"),
        other => panic!("expected the import check to refuse the guest, got {other:?}"),
    }
}

#[test]
fn a_rust_project_builds_with_cargo_and_runs() {
    require_kvm!();
    let tmp = TempDir::new("rust");
    let dir = tmp.0.join("my-guest");
    let guest = repo().join("guest");
    let out = glint(&["new", dir.to_str().unwrap(), "--guest-path", guest.to_str().unwrap()]);
    check(&out, "glint new");
    for file in ["Cargo.toml", ".cargo/config.toml", "src/main.rs", "README.md", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{file} is written");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("glint-guest = {{ path = {:?} }}", guest.canonicalize().unwrap())),
        "{manifest}"
    );
    assert!(std::fs::read_to_string(dir.join(".cargo/config.toml"))
        .unwrap()
        .contains("target = \"x86_64-unknown-none\""));

    // The usual command, in the project, with its own target directory.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&dir).args(["build", "--release"]).env("CARGO_TARGET_DIR", dir.join("target"));
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
    {
        build.env_remove(var);
    }
    check(&build.output().unwrap(), "cargo build --release");
    run_hello(&dir.join("target/x86_64-unknown-none/release/my-guest"));
}

#[test]
fn a_rust_project_depends_on_the_published_guest_library_by_default() {
    let tmp = TempDir::new("rust-default");
    let dir = tmp.0.join("g");
    check(&glint(&["new", dir.to_str().unwrap()]), "glint new");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let guest = std::fs::read_to_string(repo().join("guest/Cargo.toml")).unwrap();
    let version = guest.lines().find_map(|l| l.strip_prefix("version = \"")).unwrap().trim_end_matches('"');
    let major_minor: Vec<&str> = version.split('.').take(2).collect();
    assert!(manifest.contains(&format!("glint-guest = \"{}\"\n", major_minor.join("."))), "{manifest}");
    assert!(manifest.contains("name = \"g\"") && manifest.contains("[workspace]"), "{manifest}");
}

#[test]
fn a_c_project_builds_with_make_and_runs() {
    require_kvm!();
    if !have("make") || !have("cc") {
        return;
    }
    let tmp = TempDir::new("c");
    let dir = tmp.0.join("cguest");
    check(&glint(&["new", dir.to_str().unwrap(), "--lang", "c"]), "glint new --lang c");
    // The project carries the repository's runtime, byte for byte.
    for file in ["glint.h", "glint.c", "glint.mk"] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(repo().join("guest/c").join(file)).unwrap(),
            "{file} is guest/c's"
        );
    }
    let mut compilers = vec!["cc"];
    if Command::new("clang").arg("--version").output().is_ok_and(|o| o.status.success()) {
        compilers.push("clang");
    }
    for cc in compilers {
        let out = Command::new("make").current_dir(&dir).args(["-B", &format!("CC={cc}")]).output().unwrap();
        check(&out, &format!("make CC={cc}"));
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!log.contains("warning"), "{cc} warns: {log}");
        run_hello(&dir.join("cguest"));
    }
}

#[test]
fn new_refuses_a_directory_that_is_not_empty_and_bad_options() {
    let tmp = TempDir::new("refuse");
    std::fs::write(tmp.0.join("keep.txt"), "mine").unwrap();
    for lang in ["rust", "c"] {
        let out = glint(&["new", tmp.0.to_str().unwrap(), "--lang", lang, "--name", "x"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the directory is not empty"), "{out:?}");
    }
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1, "nothing was written");
    assert_eq!(std::fs::read_to_string(tmp.0.join("keep.txt")).unwrap(), "mine");

    let p = |name: &str| tmp.0.join(name).to_str().unwrap().to_owned();
    let (file, nine, a, b, c, here) = (p("keep.txt"), p("9lives"), p("a"), p("b"), p("c"), p(""));
    let cases: &[&[&str]] = &[
        &["new", &file, "--name", "x"],
        &["new", &nine],
        &["new", &a, "--lang", "c", "--guest-path", "/"],
        &["new", &b, "--guest-path", &here],
        &["new", &c, "--lang", "cobol"],
        &["new"],
    ];
    for args in cases {
        let out = glint(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("glint: ") || err.starts_with("Usage") || err.contains("Usage:"), "{args:?}: {err}");
    }
    for made in ["9lives", "a", "b", "c"] {
        assert!(!tmp.0.join(made).exists(), "{made} was not created");
    }
}
