//! `glint verify`, and the trust options of `run` and `inspect`, against keys and signatures
//! made with the `openssl` command line: each refusal exits 3 with one line on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/signing.rs"]
mod signing;

use signing::{flipped_copy, openssl_digest, KeyPair};
use std::path::Path;
use std::process::{Command, Output};

fn glint(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

/// The single stderr line of a refusal (status 3).
fn refused(out: &Output) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(lines[0].starts_with("glint: guest image refused by the trust policy: "), "{err}");
    lines[0].to_owned()
}

use signing::SignedHello as Fixture;

impl Fixture {
    fn verify(&self, image: &Path, key: &Path, sig: &Path) -> Output {
        glint(&[&"verify", &image, &"--key", &key, &"--signature", &sig])
    }
}

#[test]
fn verify_accepts_a_good_signature_and_prints_the_digest() {
    require_openssl!();
    let f = Fixture::new();
    let digest = openssl_digest(&f.image);
    let out = glint(&[&"verify", &f.image, &"--key", &f.key.public, &"--signature", &f.sig, &"--digest", &digest]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, format!("verified {} {digest} signed by {}\n", f.image.display(), f.key.public.display()));
    let der = f.sig.with_extension("der");
    let out = glint(&[&"verify", &f.image, &"--key", &f.key.public, &"--signature", &der, &"--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["digest"], digest);
    assert!(json["signer_fingerprint"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn verify_refuses_each_bad_input_with_exit_3_and_one_line() {
    require_openssl!();
    let f = Fixture::new();
    let tampered = f.path("tampered");
    flipped_copy(&f.image, &tampered, 4096);
    let line = refused(&f.verify(&tampered, &f.key.public, &f.sig));
    assert!(line.contains("was made by none of the 1 trusted key(s)"), "{line}");

    let other = KeyPair::generate(f.dir.path(), "other");
    let other_sig = other.sign(&f.image, &f.path("other.sig"));
    let line = refused(&f.verify(&f.image, &f.key.public, &other_sig));
    assert!(line.contains("was made by none of the 1 trusted key(s)"), "{line}");

    let text = std::fs::read_to_string(&f.sig).unwrap();
    let truncated = f.path("truncated.sig");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let line = refused(&f.verify(&f.image, &f.key.public, &truncated));
    assert!(line.contains(&format!("malformed signature {}", truncated.display())), "{line}");
    let junk = f.path("junk.sig");
    std::fs::write(&junk, "not base64 at all!").unwrap();
    let line = refused(&f.verify(&f.image, &f.key.public, &junk));
    assert!(line.contains("neither raw DER nor base64 text"), "{line}");

    let bad_pem = f.path("bad.pub");
    std::fs::write(&bad_pem, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    let line = refused(&f.verify(&f.image, &bad_pem, &f.sig));
    assert!(line.contains(&format!("malformed public key {}", bad_pem.display())), "{line}");
    let line = refused(&f.verify(&f.image, &f.key.private, &f.sig));
    assert!(line.contains("this is a private key"), "{line}");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = glint(&[&"verify", &f.image, &"--key", &f.key.public, &"--signature", &f.sig, &"--digest", &wrong]);
    let line = refused(&out);
    assert!(line.contains(&format!("image digest is {}, the pin expects {wrong}", openssl_digest(&f.image))), "{line}");

    let line = refused(&glint(&[&"verify", &f.image, &"--key", &f.key.public]));
    assert!(line.contains("is unsigned, and the trust policy requires a signature"), "{line}");
}

#[test]
fn verify_usage_errors_exit_2() {
    require_openssl!();
    let f = Fixture::new();
    assert_eq!(glint(&[&"verify", &f.image]).status.code(), Some(2));
    assert_eq!(glint(&[&"verify", &f.image, &"--signature", &f.sig]).status.code(), Some(2));
    let out = glint(&[&"verify", &f.image, &"--key", &f.key.public, &"--digest", &"md5:00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only sha256"), "{out:?}");
}

#[test]
fn run_and_inspect_refuse_what_verify_refuses() {
    require_openssl!();
    let f = Fixture::new();
    let other = KeyPair::generate(f.dir.path(), "other");
    let other_sig = other.sign(&f.image, &f.path("other.sig"));
    // Refused before any VM exists, so these need no KVM.
    let out = glint(&[&"run", &f.image, &"add", &"1", &"2", &"--key", &f.key.public, &"--signature", &other_sig]);
    assert!(refused(&out).contains("none of the 1 trusted key(s)"));
    let out = glint(&[&"run", &f.image, &"add", &"1", &"2", &"--key", &f.key.public]);
    assert!(refused(&out).contains("requires a signature"));
    let wrong = format!("sha256:{}", "a".repeat(64));
    let out = glint(&[&"inspect", &f.image, &"--digest", &wrong]);
    assert!(refused(&out).contains("the pin expects"));
    let out = glint(&[&"inspect", &f.image, &"--key", &f.key.public, &"--signature", &other_sig]);
    assert!(refused(&out).contains("none of the 1 trusted key(s)"));
}

#[test]
fn run_and_inspect_accept_a_good_signature_and_inspect_prints_the_digest() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    let digest = openssl_digest(&f.image);
    let out = glint(&[&"run", &f.image, &"add", &"2", &"3", &"--key", &f.key.public, &"--signature", &f.sig]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "5\n");
    let out = glint(&[&"inspect", &f.image]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("sha256:    {digest}\n")), "{text}");
    let out = glint(&[
        &"inspect",
        &f.image,
        &"--json",
        &"--key",
        &f.key.public,
        &"--signature",
        &f.sig,
        &"--digest",
        &digest,
    ]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["digest"], digest);
    assert_eq!(json["signer"], f.key.public.display().to_string());
}
