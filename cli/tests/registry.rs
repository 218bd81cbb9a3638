//! `glint push` and `glint pull` against a real registry (Debian's docker-registry) on
//! 127.0.0.1, with keys and signatures made by the openssl command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/registry.rs"]
mod registry;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/signing.rs"]
mod signing;

use registry::Registry;
use signing::{openssl_digest, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs glint with a hang guard: a command still running after 120 s is killed and fails the
/// test (the registry client's own bounds are far shorter).
fn glint(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(args.iter().map(|a| a.as_ref()))
        // No credentials from the machine's docker config.
        .env("DOCKER_CONFIG", "/nonexistent-glint-test")
        .env_remove("GLINT_REGISTRY_USERNAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("glint {:?} hung", args.iter().map(|a| a.as_ref().to_owned()).collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The single stderr line of a failure with `status`.
fn failed(out: &Output, status: i32) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert_eq!(out.status.code(), Some(status), "{out:?}");
    lines[0].to_owned()
}

struct Fixture {
    dir: tempfile::TempDir,
    registry: Registry,
    key: KeyPair,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !signing::tool("openssl", &["version"]) {
            return None;
        }
        let registry = Registry::start()?;
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate(dir.path(), "release");
        Some(Fixture { dir, registry, key })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.addr)
    }

    /// A copy of a built guest in the fixture's directory, and its signature by `key`.
    fn guest(&self, src: &str, name: &str, key: &KeyPair) -> (PathBuf, PathBuf) {
        let file = self.path(name);
        std::fs::copy(src, &file).unwrap();
        let sig = key.sign(&file, &self.path(&format!("{name}.sig")));
        (file, sig)
    }

    fn push(&self, file: &Path, sig: Option<&Path>, reference: &str) -> String {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"push", &file, &reference, &"--insecure-http"];
        if let Some(sig) = &sig {
            args.extend([&"--key" as &dyn AsRef<std::ffi::OsStr>, &self.key.public, &"--signature", sig]);
        }
        ok(glint(&args))
    }
}

#[test]
fn push_then_pull_round_trips_byte_for_byte_with_the_signature() {
    let Some(f) = Fixture::new() else { return };
    let (file, sig) = f.guest(glint_guest_artifacts::HELLO, "hello", &f.key);
    let reference = f.reference("team/hello:1.0");
    let text = f.push(&file, Some(&sig), &reference);
    let digest = openssl_digest(&file);
    assert!(text.starts_with(&format!("pushed {reference} {digest} manifest sha256:")), "{text}");
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(text.contains(&format!("signature {}/team/hello:sha256-{hex}.sig", f.registry.addr)), "{text}");

    let out = f.path("pulled");
    let text = ok(glint(&[
        &"pull",
        &reference,
        &"-o",
        &out,
        &"--key",
        &f.key.public,
        &"--digest",
        &digest,
        &"--insecure-http",
    ]));
    assert!(text.contains(&format!("{digest} signed by {}", f.key.public.display())), "{text}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());
    // The pulled file verifies on its own, with the signature made by openssl.
    ok(glint(&[&"verify", &out, &"--key", &f.key.public, &"--signature", &sig]));

    // By manifest digest, as `push` printed it.
    let manifest = text.split("manifest ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let by_digest = format!("{}/team/hello@{manifest}", f.registry.addr);
    let out2 = f.path("pulled2");
    ok(glint(&[&"pull", &by_digest, &"-o", &out2, &"--key", &f.key.public, &"--insecure-http"]));
    assert_eq!(std::fs::read(&out2).unwrap(), std::fs::read(&file).unwrap());
}

#[test]
fn a_replaced_tag_is_refused_by_the_digest_pin_and_nothing_is_written() {
    let Some(f) = Fixture::new() else { return };
    let (hello, hello_sig) = f.guest(glint_guest_artifacts::HELLO, "hello", &f.key);
    let (other, other_sig) = f.guest(glint_guest_artifacts::TESTGUEST, "testguest", &f.key);
    let reference = f.reference("team/app:stable");
    f.push(&hello, Some(&hello_sig), &reference);
    let pin = openssl_digest(&hello);
    // Someone pushes a different (validly signed) image to the same tag.
    f.push(&other, Some(&other_sig), &reference);
    let out = f.path("app");
    let o = glint(&[&"pull", &reference, &"-o", &out, &"--key", &f.key.public, &"--digest", &pin, &"--insecure-http"]);
    let line = failed(&o, 3);
    assert_eq!(
        line,
        format!(
            "glint: guest image refused by the trust policy: image digest is {}, the pin expects {pin}",
            openssl_digest(&other)
        )
    );
    assert!(!out.exists(), "a refused image must not be written");
    // An existing file is left as it was.
    std::fs::write(&out, b"previous").unwrap();
    let o = glint(&[&"pull", &reference, &"-o", &out, &"--key", &f.key.public, &"--digest", &pin, &"--insecure-http"]);
    failed(&o, 3);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}

#[test]
fn unsigned_and_wrongly_signed_images_are_refused_when_signatures_are_required() {
    let Some(f) = Fixture::new() else { return };
    let (hello, _) = f.guest(glint_guest_artifacts::HELLO, "hello", &f.key);
    let reference = f.reference("team/unsigned:1");
    f.push(&hello, None, &reference);
    let out = f.path("out");
    let o = glint(&[&"pull", &reference, &"-o", &out, &"--key", &f.key.public, &"--insecure-http"]);
    let line = failed(&o, 3);
    assert!(line.ends_with("is unsigned, and the trust policy requires a signature"), "{line}");
    assert!(!out.exists());
    // Without --key nothing is required: the unsigned image is pulled.
    let text = ok(glint(&[&"pull", &reference, &"-o", &out, &"--insecure-http"]));
    assert!(text.contains("(unsigned)"), "{text}");

    // A signature by a key that is not trusted, stored in the registry.
    let mallory = KeyPair::generate(f.dir.path(), "mallory");
    let (evil, evil_sig) = f.guest(glint_guest_artifacts::TESTGUEST, "evil", &mallory);
    let reference = f.reference("team/evil:1");
    ok(glint(&[&"push", &evil, &reference, &"--key", &mallory.public, &"--signature", &evil_sig, &"--insecure-http"]));
    let o = glint(&[&"pull", &reference, &"-o", &f.path("evil-out"), &"--key", &f.key.public, &"--insecure-http"]);
    assert!(failed(&o, 3).contains("was made by none of the 1 trusted key(s)"));
    // push itself refuses to publish an image its own --key does not verify.
    let o =
        glint(&[&"push", &evil, &reference, &"--key", &f.key.public, &"--signature", &evil_sig, &"--insecure-http"]);
    assert!(failed(&o, 3).contains("none of the 1 trusted key(s)"));
}

#[test]
fn missing_tags_non_guests_and_bad_references_fail_clearly() {
    let Some(f) = Fixture::new() else { return };
    let out = f.path("out");
    let o = glint(&[&"pull", &f.reference("team/none:1"), &"-o", &out, &"--insecure-http"]);
    assert_eq!(failed(&o, 5), format!("glint: {}/team/none:1 is not in the registry", f.registry.addr));
    let o = glint(&[&"pull", &"no-registry:1", &"-o", &out]);
    assert!(failed(&o, 2).contains("names no registry"));
    let o = glint(&[&"pull", &f.reference("team/x"), &"-o", &out]);
    assert!(failed(&o, 2).contains("has neither a `:tag` nor an `@sha256:` digest"));
    assert!(!out.exists());
}

#[test]
fn a_registry_that_is_down_fails_quickly_with_a_clear_error() {
    let Some(f) = Fixture::new() else { return };
    let down = format!("127.0.0.1:{}/team/hello:1", registry::free_port());
    let out = f.path("out");
    let o = glint(&[&"pull", &down, &"-o", &out, &"--insecure-http"]);
    let line = failed(&o, 5);
    assert!(line.starts_with(&format!("glint: cannot reach registry {}", down.split('/').next().unwrap())), "{line}");
    let (hello, _) = f.guest(glint_guest_artifacts::HELLO, "hello", &f.key);
    let o = glint(&[&"push", &hello, &down, &"--insecure-http"]);
    assert!(failed(&o, 5).starts_with("glint: cannot reach registry"));
    // The live registry over HTTPS without --insecure-http: refused, with the hint.
    let o = glint(&[&"pull", &f.reference("team/hello:1"), &"-o", &out]);
    let line = failed(&o, 5);
    assert!(line.contains("needs --insecure-http"), "{line}");
}
