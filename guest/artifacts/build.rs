//! Builds every guest program once and exports its path to the host's tests, examples and benches
//! (the pattern of wasmtime's test-programs):
//!
//! - the Rust guests: every binary of the workspace in `guest/bins`, for `x86_64-unknown-none`, as
//!   cargo reports them (so a new member of `guest/bins/Cargo.toml` needs no edit here);
//! - the C guests: every directory under `guest/c/examples` and `guest/c/test` that holds `.c`
//!   files, compiled with the runtime `guest/c/glint.c` and the flags of `guest/c/glint.mk`.
//!
//! Each guest's path becomes a constant named after it in upper case (`hello` → `HELLO`,
//! `hello_c` → `HELLO_C`, `my-guest` → `MY_GUEST`), and `GUESTS` lists them all.
//!
//! A fresh machine lacks the bare-metal target: we install it with rustup when rustup is there,
//! and otherwise stop with the exact command to run. Without a C compiler we stop and say what to
//! install.

use std::collections::BTreeMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const TARGET: &str = "x86_64-unknown-none";
/// Where the C guests live, below `guest/c`.
const C_GUEST_DIRS: &[&str] = &["examples", "test"];

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
    let root = guest.parent().ok_or("no workspace root")?.to_path_buf();
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("guests");

    for path in ["bins", "c", "src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("abi/src").display());
    println!("cargo:rerun-if-changed={}", root.join("abi/Cargo.toml").display());
    println!("cargo:rerun-if-env-changed=CC");

    let mut guests = BTreeMap::new();
    for (name, path) in build_rust(&guest.join("bins"), &target_dir)? {
        add(&mut guests, name, path)?;
    }
    for (name, path) in build_c(&guest.join("c"), &target_dir.join("c"))? {
        add(&mut guests, name, path)?;
    }

    let mut consts = String::new();
    for (constant, (name, path)) in &guests {
        consts.push_str(&format!(
            "/// Path of the `{name}` guest.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    consts.push_str("/// Every guest: its name and its path.\npub const GUESTS: &[(&str, &str)] = &[\n");
    for (name, path) in guests.values() {
        consts.push_str(&format!("    ({name:?}, {:?}),\n", path.display().to_string()));
    }
    consts.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    std::fs::write(out_dir.join("paths.rs"), consts).map_err(|e| e.to_string())
}

/// Records a guest under its constant name; two guests with one constant are an error.
fn add(guests: &mut BTreeMap<String, (String, PathBuf)>, name: String, path: PathBuf) -> Result<(), String> {
    let constant: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if constant.is_empty() || constant.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("guest `{name}` has no name a Rust constant can be made of"));
    }
    if let Some((other, _)) = guests.get(&constant) {
        return Err(format!("guests `{other}` and `{name}` would both be exported as `{constant}`; rename one"));
    }
    guests.insert(constant, (name, path));
    Ok(())
}

/// Builds the workspace in `bins` and returns each binary it produced, by target name.
fn build_rust(bins: &Path, target_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    ensure_target()?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(bins)
        .args(["build", "--release", "--locked", "--target", TARGET, "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_DIR", target_dir)
        .stdout(Stdio::piped());
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
    let out = cmd.output().map_err(|e| format!("could not run cargo to build the guests: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the guests in {} failed ({}); see the output above", bins.display(), out.status));
    }
    // One JSON message per line; the artifacts of binaries carry their executable's path.
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (message["target"]["name"].as_str(), message["executable"].as_str()) else {
            continue;
        };
        found.push((name.to_owned(), PathBuf::from(exe)));
    }
    if found.is_empty() {
        return Err(format!("building the guests in {} produced no program", bins.display()));
    }
    Ok(found)
}

/// Builds every C guest below `c` (see [`C_GUEST_DIRS`]) into `out`.
fn build_c(c: &Path, out: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut dirs = Vec::new();
    for group in C_GUEST_DIRS {
        let Ok(entries) = std::fs::read_dir(c.join(group)) else { continue };
        for entry in entries.flatten() {
            let sources = c_sources(&entry.path());
            if !sources.is_empty() {
                dirs.push((entry.file_name().to_string_lossy().into_owned(), sources));
            }
        }
    }
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    dirs.sort();
    let flags = Flags::read(&c.join("glint.mk"))?;
    let cc = c_compiler()?;
    let (program, cc_args) = cc.split_first().ok_or("no C compiler")?;
    let cc = cc.join(" ");
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut built = Vec::new();
    for (name, sources) in dirs {
        let exe = out.join(&name);
        let status = Command::new(program)
            .args(cc_args)
            .args(&flags.cflags)
            .arg("-I")
            .arg(c)
            .arg("-o")
            .arg(&exe)
            .args(&sources)
            .arg(c.join("glint.c"))
            .args(&flags.ldflags)
            .args(&flags.ldlibs)
            .status()
            .map_err(|e| format!("could not run the C compiler `{cc}`: {e}"))?;
        if !status.success() {
            return Err(format!("compiling the C guest `{name}` with `{cc}` failed ({status}); see the output above"));
        }
        built.push((name, exe));
    }
    Ok(built)
}

/// The `.c` files directly in `dir`, sorted.
fn c_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "c")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The three flag lists of `glint.mk`.
struct Flags {
    cflags: Vec<String>,
    ldflags: Vec<String>,
    ldlibs: Vec<String>,
}

impl Flags {
    /// Reads `NAME = words` assignments (with `\` continuations) of `GLINT_CFLAGS`,
    /// `GLINT_LDFLAGS` and `GLINT_LDLIBS`.
    fn read(path: &Path) -> Result<Flags, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let joined = text.replace("\\\n", " ");
        let get = |name: &str| -> Result<Vec<String>, String> {
            joined
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim_start().strip_prefix('=')))
                .map(|words| words.split_whitespace().map(str::to_owned).collect())
                .ok_or_else(|| format!("{} does not set {name}", path.display()))
        };
        Ok(Flags { cflags: get("GLINT_CFLAGS")?, ldflags: get("GLINT_LDFLAGS")?, ldlibs: get("GLINT_LDLIBS")? })
    }
}

/// `$CC` (a program and its arguments, e.g. `ccache gcc`), or the first of `cc`, `gcc` and
/// `clang` that runs.
fn c_compiler() -> Result<Vec<String>, String> {
    if let Ok(cc) = env::var("CC") {
        let words: Vec<String> = cc.split_whitespace().map(str::to_owned).collect();
        if !words.is_empty() {
            return Ok(words);
        }
    }
    for cc in ["cc", "gcc", "clang"] {
        let runs = Command::new(cc).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if matches!(runs, Ok(s) if s.success()) {
            return Ok(vec![cc.to_owned()]);
        }
    }
    Err("no C compiler found (tried $CC, cc, gcc and clang) to build the C guests in guest/c; install gcc or \
         clang (Debian and Ubuntu: `apt-get install gcc`; Fedora: `dnf install gcc`) or set CC"
        .to_owned())
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
