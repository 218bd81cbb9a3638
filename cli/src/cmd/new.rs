//! `glint new <DIR> [--lang rust|c] [--guest-path PATH] [--name NAME]`: writes a guest project
//! that builds with the usual command (`cargo build --release`, or `make`) and whose output
//! `glint run` accepts.
//!
//! The project stands alone: a Rust one depends on `glint-guest` by version (or by path with
//! `--guest-path`), a C one carries its own copy of the runtime from `guest/c`. Every failure is
//! status 2: the directory or the options given cannot make a project. Nothing is written into a
//! directory that is not empty, and a failure half-way removes what this command wrote.

use crate::failure::Failure;
use std::fmt;
use std::path::{Path, PathBuf};

/// Create a guest project in DIR (which must not exist, or be empty).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to create.
    pub dir: PathBuf,
    /// The language of the guest.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Depend on the glint-guest crate in this directory (e.g. a glint checkout's `guest/`)
    /// instead of the published version (Rust only).
    #[arg(long, value_name = "PATH")]
    pub guest_path: Option<PathBuf>,
    /// The package (Rust) or program (C) name [default: the directory's name].
    #[arg(long)]
    pub name: Option<String>,
}

/// The languages a guest can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A `no_std` Rust program using the `glint-guest` crate.
    Rust,
    /// A freestanding C program with glint's C runtime (`glint.h`, `glint.c`).
    C,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
        })
    }
}

/// The guest library's manifest, for the version a new Rust project depends on.
const GUEST_MANIFEST: &str = include_str!("../../../guest/Cargo.toml");

mod rust {
    pub const CARGO_TOML: &str = include_str!("../../templates/rust/Cargo.toml.in");
    pub const CONFIG_TOML: &str = include_str!("../../templates/rust/config.toml");
    pub const MAIN_RS: &str = include_str!("../../templates/rust/main.rs");
    pub const README: &str = include_str!("../../templates/rust/README.md");
    pub const GITIGNORE: &str = include_str!("../../templates/rust/gitignore");
}

mod c {
    pub const MAKEFILE: &str = include_str!("../../templates/c/Makefile");
    pub const MAIN_C: &str = include_str!("../../templates/c/main.c");
    pub const README: &str = include_str!("../../templates/c/README.md");
    pub const GITIGNORE: &str = include_str!("../../templates/c/gitignore");
    // The runtime, as the repository's own C guests use it.
    pub const GLINT_H: &str = include_str!("../../../guest/c/glint.h");
    pub const GLINT_C: &str = include_str!("../../../guest/c/glint.c");
    pub const GLINT_MK: &str = include_str!("../../../guest/c/glint.mk");
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.guest_path.is_some() && a.lang != Lang::Rust {
        return Err(Failure::usage("--guest-path applies to Rust projects only"));
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => default_name(&a.dir)?,
    };
    check_name(&name)?;
    let files = match a.lang {
        Lang::Rust => rust_files(&name, a.guest_path.as_deref())?,
        Lang::C => c_files(&name),
    };
    write_project(&a.dir, &files)?;
    let dir = a.dir.display();
    match a.lang {
        Lang::Rust => println!(
            "created the Rust guest `{name}` in {dir}\n  cd {dir} && cargo build --release\n  glint run \
             target/x86_64-unknown-none/release/{name} hello Ada"
        ),
        Lang::C => {
            println!("created the C guest `{name}` in {dir}\n  cd {dir} && make\n  glint run ./{name} hello Ada")
        }
    }
    Ok(())
}

/// The last component of `dir` (of the current directory for `.`).
fn default_name(dir: &Path) -> Result<String, Failure> {
    let named = match dir.file_name() {
        Some(n) => PathBuf::from(n),
        None => std::fs::canonicalize(dir)
            .ok()
            .and_then(|d| d.file_name().map(PathBuf::from))
            .ok_or_else(|| Failure::usage(format!("cannot name a project after {}; give --name", dir.display())))?,
    };
    named
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::usage(format!("{} is not UTF-8; give --name", dir.display())))
}

/// A name both a Cargo package and a file can have: ASCII letters, digits, `-` and `_`,
/// starting with a letter, and none that would shadow what a guest uses.
fn check_name(name: &str) -> Result<(), Failure> {
    const TAKEN: &[&str] = &["core", "alloc", "std", "test", "proc_macro", "glint_guest", "glint_abi"];
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(Failure::usage(format!(
            "`{name}` cannot name a guest: use ASCII letters, digits, `-` and `_`, starting with a letter \
             (give --name)"
        )));
    }
    if TAKEN.contains(&name.replace('-', "_").as_str()) {
        return Err(Failure::usage(format!("`{name}` is the name of a crate a guest uses; give another --name")));
    }
    Ok(())
}

/// The version of `glint-guest` this command line was built with (`major.minor`).
fn guest_version() -> String {
    let version = GUEST_MANIFEST
        .lines()
        .find_map(|l| l.trim().strip_prefix("version").map(|v| v.trim_start().trim_start_matches('=').trim()))
        .map(|v| v.trim_matches('"'))
        .unwrap_or(env!("CARGO_PKG_VERSION"));
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn rust_files(name: &str, guest_path: Option<&Path>) -> Result<Vec<(&'static str, String)>, Failure> {
    let dependency = match guest_path {
        None => format!("glint-guest = \"{}\"", guest_version()),
        Some(path) => format!("glint-guest = {{ path = {} }}", toml_string(&guest_crate(path)?)),
    };
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{glint_guest}}", &dependency);
    Ok(vec![
        ("Cargo.toml", fill(rust::CARGO_TOML)),
        (".cargo/config.toml", rust::CONFIG_TOML.to_owned()),
        ("src/main.rs", rust::MAIN_RS.to_owned()),
        ("README.md", fill(rust::README)),
        (".gitignore", rust::GITIGNORE.to_owned()),
    ])
}

fn c_files(name: &str) -> Vec<(&'static str, String)> {
    let fill = |t: &str| t.replace("{{name}}", name);
    vec![
        ("Makefile", fill(c::MAKEFILE)),
        ("main.c", c::MAIN_C.to_owned()),
        ("glint.h", c::GLINT_H.to_owned()),
        ("glint.c", c::GLINT_C.to_owned()),
        ("glint.mk", c::GLINT_MK.to_owned()),
        ("README.md", fill(c::README)),
        (".gitignore", fill(c::GITIGNORE)),
    ]
}

/// The absolute path of the `glint-guest` crate at `path`, checked, as UTF-8.
fn guest_crate(path: &Path) -> Result<String, Failure> {
    let not = |why: &str| Failure::usage(format!("--guest-path {}: {why}", path.display()));
    let dir = std::fs::canonicalize(path).map_err(|e| not(&e.to_string()))?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|_| not("has no Cargo.toml"))?;
    let is_guest = manifest.lines().any(|l| {
        let l = l.trim();
        l.strip_prefix("name").map(|v| v.trim_start().trim_start_matches('=').trim()) == Some("\"glint-guest\"")
    });
    if !is_guest {
        return Err(not("is not the glint-guest crate (a glint checkout's `guest/` directory is)"));
    }
    dir.to_str().map(str::to_owned).ok_or_else(|| not("is not UTF-8"))
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `files` below `dir`, which must not exist or be an empty directory. On failure, what
/// was written is removed again (and `dir`, if this created it).
fn write_project(dir: &Path, files: &[(&str, String)]) -> Result<(), Failure> {
    let fail = |what: String| Failure::usage(format!("cannot create the project in {}: {what}", dir.display()));
    let created = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(fail("the directory is not empty".into()));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            true
        }
        Err(_) if dir.exists() => return Err(fail("it exists and is not a directory".into())),
        Err(e) => return Err(fail(e.to_string())),
    };
    let mut written = Vec::new();
    let result = files.iter().try_for_each(|(rel, text)| {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        written.push(path);
        Ok(())
    });
    if result.is_err() {
        if created {
            let _ = std::fs::remove_dir_all(dir);
        } else {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            for sub in [".cargo", "src"] {
                let _ = std::fs::remove_dir(dir.join(sub));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["hello", "my-guest", "g_2", "A"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2fast", "-x", "a b", "héllo", "a/b", "core", "alloc", "glint-guest", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_dependency_is_the_guest_librarys_version() {
        let v = guest_version();
        assert!(v.split('.').count() == 2 && v.split('.').all(|p| p.parse::<u32>().is_ok()), "{v}");
        let files = rust_files("g", None).unwrap();
        assert!(files[0].1.contains(&format!("glint-guest = \"{v}\"")), "{}", files[0].1);
        assert!(!files.iter().any(|(_, t)| t.contains("{{")), "every placeholder is filled");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }
}
