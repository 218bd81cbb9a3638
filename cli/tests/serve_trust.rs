//! `glint serve` with a trust policy: signed local images verified at load, `oci://` images
//! pulled from a real registry at start, refusals at start, and the audit events they leave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/registry.rs"]
mod registry;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/signing.rs"]
mod signing;
mod support;

use signing::{openssl_digest, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::Server;

fn glint(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint"))
        .args(args.iter().map(|a| a.as_ref()))
        .env("DOCKER_CONFIG", "/nonexistent-glint-test")
        .output()
        .unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    key: KeyPair,
    image: PathBuf,
    sig: PathBuf,
    digest: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("testguest");
        std::fs::copy(glint_guest_artifacts::TESTGUEST, &image).unwrap();
        let key = KeyPair::generate(dir.path(), "release");
        let sig = key.sign(&image, &dir.path().join("testguest.sig"));
        let digest = openssl_digest(&image);
        Fixture { dir, key, image, sig, digest }
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn trust(&self, extra: &str) -> String {
        format!(
            "[trust]\nkeys = [\"{}\"]\naudit_log = \"{}\"\n{extra}\n",
            self.key.public.display(),
            self.audit_path().display()
        )
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn function(name: &str, image: &str, extra: &str) -> String {
    format!("\n[[function]]\nname = \"{name}\"\nimage = \"{image}\"\nroute = \"/{name}\"\nkind = \"typed\"\n{extra}\n")
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("glint.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_signed_pinned_local_image_is_verified_at_load_and_served() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    let extra = format!("signature = \"{}\"\ndigest = \"{}\"", f.sig.display(), f.digest);
    let manifest = f.trust("") + &function("t", f.image.to_str().unwrap(), &extra);
    let mut s = Server::start(&manifest);
    let r = s.post("/t/call/rt_i32", "[41]");
    assert_eq!(r.status, 200, "{}", r.text());
    s.sigterm();
    assert_eq!(s.wait_exit(), Some(0));
    let events = f.audit();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "image_verified");
    assert_eq!(events[0]["function"], "t");
    assert_eq!(events[0]["image_digest"], f.digest.as_str());
    assert!(events[0]["detail"].as_str().unwrap().starts_with(&format!("signed by {}", f.key.public.display())));
}

#[test]
fn quick_mode_takes_the_trust_options() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    let other = KeyPair::generate(f.dir.path(), "other");
    let bad = other.sign(&f.image, &f.dir.path().join("other.sig"));
    let out = glint(&[
        &"serve",
        &"--guest",
        &f.image,
        &"--key",
        &f.key.public,
        &"--signature",
        &bad,
        &"--listen",
        &"127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.lines().any(|l| l.contains("policy `trusted_image` denies function `testguest`")
            && l.contains("none of the 1 trusted key(s)")),
        "{err}"
    );
}

#[test]
fn an_oci_image_is_pulled_at_start_and_a_replaced_one_is_refused() {
    require_kvm!();
    require_openssl!();
    let Some(registry) = registry::Registry::start() else { return };
    let f = Fixture::new();
    let reference = format!("{}/team/testguest:prod", registry.addr);
    let push = |file: &Path, sig: &Path| {
        let out =
            glint(&[&"push", &file, &reference, &"--key", &f.key.public, &"--signature", &sig, &"--insecure-http"]);
        assert!(out.status.success(), "{out:?}");
    };
    push(&f.image, &f.sig);
    let trust = f.trust(&format!("insecure_http_registries = [\"{}\"]", registry.addr));
    let manifest =
        trust.clone() + &function("pulled", &format!("oci://{reference}"), &format!("digest = \"{}\"", f.digest));
    let mut s = Server::start(&manifest);
    let r = s.post("/pulled/call/rt_i32", "[7]");
    assert_eq!(r.status, 200, "{}", r.text());
    s.sigterm();
    assert_eq!(s.wait_exit(), Some(0));
    let events = f.audit();
    assert_eq!(events.last().unwrap()["event"], "image_verified");
    assert_eq!(events.last().unwrap()["image_digest"], f.digest.as_str());

    // Someone pushes another (validly signed) image to the same tag: the pin refuses it at start.
    let other = f.dir.path().join("hello");
    std::fs::copy(glint_guest_artifacts::HELLO, &other).unwrap();
    let other_sig = f.key.sign(&other, &f.dir.path().join("hello.sig"));
    push(&other, &other_sig);
    let path = write(f.dir.path(), &manifest);
    let out = glint(&[&"serve", &path, &"--listen", &"127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let line = err.lines().find(|l| l.starts_with("glint: ")).unwrap();
    assert!(line.contains("function `pulled` (line "), "{line}");
    assert!(
        line.ends_with(&format!("image digest is {}, the pin expects {}", openssl_digest(&other), f.digest)),
        "{line}"
    );
    let last = f.audit().pop().unwrap();
    assert_eq!(last["event"], "image_refused");
    assert_eq!(last["rule"], "digest");
    assert_eq!(last["function"], "pulled");
    assert_eq!(last["image_digest"], openssl_digest(&other).as_str());

    // An image nobody signed, at another tag: refused because [trust] requires signatures.
    let unsigned = f.dir.path().join("unsigned");
    let mut bytes = std::fs::read(&other).unwrap();
    bytes.push(0);
    std::fs::write(&unsigned, bytes).unwrap();
    let unsigned_ref = format!("{}/team/testguest:unsigned", registry.addr);
    let out = glint(&[&"push", &unsigned, &unsigned_ref, &"--insecure-http"]);
    assert!(out.status.success(), "{out:?}");
    // (serve's manifest requires a digest pin on every oci:// image.)
    let pin = format!("digest = \"{}\"", openssl_digest(&unsigned));
    let path = write(f.dir.path(), &(trust + &function("pulled", &format!("oci://{unsigned_ref}"), &pin)));
    let out = glint(&[&"serve", &path, &"--listen", &"127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is unsigned, and the trust policy requires a signature"), "{err}");
    assert_eq!(f.audit().pop().unwrap()["rule"], "signature");
}

#[test]
fn the_audit_log_after_a_scripted_sequence_holds_exactly_the_expected_events_and_no_secret() {
    require_kvm!();
    require_openssl!();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let secret = "s3cr3t-42-value";
    let manifest = [
        format!("[trust]\naudit_log = \"{}\"\n\n", audit.display()),
        support::testguest_fn(
            "t",
            "/t",
            &format!("timeout_ms = 300\nmax_response_bytes = 1024\nvariables = {{ token = {{ value = \"{secret}\", secret = true }} }}"),
        ),
        support::testguest_fn("full", "/full", "max_concurrency = 1\nqueue = 0\ntimeout_ms = 60000"),
    ]
    .concat();
    let mut s = Server::start(&manifest);
    assert_eq!(s.post("/t/call/rt_i32", "[1]").status, 200);
    assert_eq!(s.post("/t/call/ud2", "[]").status, 500);
    assert_eq!(s.post("/t/call/panics", &format!("[\"leaking {secret}\"]")).status, 500);
    assert_eq!(s.post("/t/call/make_bytes", "[2000, 7]").status, 500);
    assert_eq!(s.post("/t/call/spin", "[]").status, 504);
    let n = support::busy_iterations(&s, "/full/call/busy", std::time::Duration::from_secs(3));
    let addr = s.addr;
    let slow =
        std::thread::spawn(move || support::request(addr, "POST", "/full/call/busy", &[], format!("[{n}]").as_bytes()));
    s.wait_metric("glint_requests_in_flight{function=\"full\"}", 1.0);
    let shed = s.post("/full/call/busy", "[1]");
    assert_eq!(shed.status, 503);
    assert_eq!(slow.join().unwrap().status, 200);
    s.sigterm();
    assert_eq!(s.wait_exit(), Some(0));

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(secret), "a secret reached the audit log:\n{text}");
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["function"].as_str().unwrap(), e["rule"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("image_verified", "t", None),
            ("image_verified", "full", None),
            ("guest_fault", "t", Some("guest_fault")),
            ("guest_fault", "t", Some("guest_error")),
            ("quota_exceeded", "t", Some("max_response_bytes")),
            ("timeout", "t", Some("timeout")),
            ("overload", "full", Some("max_concurrency")),
        ],
        "{text}"
    );
    let digest = openssl_digest(Path::new(glint_guest_artifacts::TESTGUEST));
    for e in &events {
        assert_eq!(e["image_digest"], digest.as_str(), "{e}");
    }
    // Run-time events carry the request id the client saw.
    assert_eq!(events[6]["request_id"].as_str(), shed.header("x-request-id"));
    assert!(events[3]["detail"].as_str().unwrap().contains("leaking"), "{}", events[3]);
}
