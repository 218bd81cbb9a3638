//! Trust policies against keys and signatures made by the `openssl` command line: every refusal
//! comes with its typed error, and is decided before the ELF is parsed. No KVM needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "common/signing.rs"]
mod signing;

use glint::{Error, ErrorKind, GuestImage, ImageDigest, ImageSignature, TrustError, TrustPolicy, TrustedKey};
use signing::{flipped_copy, openssl_digest, KeyPair};
use std::path::Path;

use signing::SignedHello as Fixture;

impl Fixture {
    fn policy(&self) -> TrustPolicy {
        TrustPolicy::new().trust_key(TrustedKey::from_file(&self.key.public).unwrap())
    }
}

fn trust_error(result: Result<GuestImage, Error>) -> TrustError {
    match result {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::ImageRefused, "{e:?}");
            match e {
                Error::Trust(e) => e,
                other => panic!("expected a trust error, got {other:?}"),
            }
        }
        Ok(image) => panic!("expected a trust error, the image loaded: {image:?}"),
    }
}

fn load(image: &Path, policy: &TrustPolicy, sig: Option<&Path>) -> Result<GuestImage, Error> {
    let sig = sig.map(ImageSignature::from_file).transpose()?;
    GuestImage::from_file_trusted(image, policy, sig.as_ref())
}

#[test]
fn a_good_signature_verifies_base64_and_raw_der() {
    require_openssl!();
    let f = Fixture::new();
    assert!(f.key.openssl_verifies(&f.image, &f.sig.with_extension("der")));
    let pinned = f.policy().expect_digest(openssl_digest(&f.image).parse().unwrap());
    for sig in [f.sig.clone(), f.sig.with_extension("der")] {
        let image = load(&f.image, &pinned, Some(&sig)).unwrap();
        let v = image.verification().unwrap();
        assert_eq!(v.digest().to_string(), openssl_digest(&f.image));
        assert_eq!(v.signer().unwrap().name(), f.key.public.display().to_string());
        assert!(image.entry() != 0);
    }
    // `openssl base64` without -A wraps lines at 64 characters; a trailing newline is common.
    let wrapped = f.path("wrapped.sig");
    signing::openssl(&[&"base64", &"-in", &f.sig.with_extension("der"), &"-out", &wrapped]);
    load(&f.image, &f.policy(), Some(&wrapped)).unwrap();
}

#[test]
fn many_signatures_by_openssl_all_verify() {
    // ECDSA signatures are randomised: about half have a "high" s. Both halves must verify.
    require_openssl!();
    let f = Fixture::new();
    let policy = f.policy();
    let bytes = std::fs::read(&f.image).unwrap();
    for i in 0..16 {
        let sig = f.key.sign(&f.image, &f.path(&format!("s{i}.sig")));
        let sig = ImageSignature::from_file(sig).unwrap();
        policy.verify(&bytes, Some(&sig)).unwrap();
    }
}

#[test]
fn a_flipped_byte_in_the_image_is_refused() {
    require_openssl!();
    let f = Fixture::new();
    let tampered = f.path("tampered");
    flipped_copy(&f.image, &tampered, 4096);
    let e = trust_error(load(&tampered, &f.policy(), Some(&f.sig)));
    assert!(
        matches!(&e, TrustError::UntrustedSignature { digest, keys: 1 } if digest.to_string() == openssl_digest(&tampered)),
        "{e:?}"
    );
    assert!(!f.key.openssl_verifies(&tampered, &f.sig.with_extension("der")), "openssl agrees");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    require_openssl!();
    let f = Fixture::new();
    let other = KeyPair::generate(f.dir.path(), "other");
    let sig = other.sign(&f.image, &f.path("other.sig"));
    let e = trust_error(load(&f.image, &f.policy(), Some(&sig)));
    assert!(matches!(e, TrustError::UntrustedSignature { keys: 1, .. }), "{e:?}");
    // Trusting both keys accepts it, and names the signer.
    let both = f.policy().trust_key(TrustedKey::from_file(&other.public).unwrap());
    let image = load(&f.image, &both, Some(&sig)).unwrap();
    assert_eq!(image.verification().unwrap().signer().unwrap().name(), other.public.display().to_string());
}

#[test]
fn truncated_and_non_base64_signatures_are_malformed() {
    require_openssl!();
    let f = Fixture::new();
    let text = std::fs::read_to_string(&f.sig).unwrap();
    let der = std::fs::read(f.sig.with_extension("der")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half.sig", text.as_bytes()[..text.len() / 2].to_vec()),
        ("short.sig", text.as_bytes()[..text.len() - 8].to_vec()),
        ("junk.sig", b"this is not base64 !!".to_vec()),
        ("short.der", der[..der.len() - 3].to_vec()),
        ("empty.sig", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = f.path(name);
        std::fs::write(&path, bytes).unwrap();
        match ImageSignature::from_file(&path) {
            Err(TrustError::MalformedSignature { origin, .. }) => assert_eq!(origin, path.display().to_string()),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn malformed_key_files_are_refused() {
    require_openssl!();
    let f = Fixture::new();
    let pem = std::fs::read_to_string(&f.key.public).unwrap();
    let lines: Vec<&str> = pem.lines().collect();
    let cut = format!("{}\n{}\n{}\n", lines[0], &lines[1][..20], lines[lines.len() - 1]);
    let cases = [
        ("garbage.pub", "garbage".to_owned()),
        ("cut.pub", cut),
        ("private.pub", std::fs::read_to_string(&f.key.private).unwrap()),
        ("binary.pub", String::from_utf8_lossy(&[0xff, 0xfe, 0x00]).into_owned()),
    ];
    for (name, text) in cases {
        let path = f.path(name);
        std::fs::write(&path, text).unwrap();
        match TrustedKey::from_file(&path) {
            Err(TrustError::MalformedKey { origin, .. }) => assert_eq!(origin, path.display().to_string()),
            other => panic!("{name}: {other:?}"),
        }
    }
    // An RSA key is well-formed PEM but not a P-256 key.
    let rsa = f.path("rsa.pem");
    signing::openssl(&[&"genpkey", &"-algorithm", &"RSA", &"-pkeyopt", &"rsa_keygen_bits:1024", &"-out", &rsa]);
    let rsa_pub = f.path("rsa.pub");
    signing::openssl(&[&"pkey", &"-in", &rsa, &"-pubout", &"-out", &rsa_pub]);
    assert!(matches!(TrustedKey::from_file(&rsa_pub), Err(TrustError::MalformedKey { .. })));
    assert!(matches!(TrustedKey::from_file(f.path("missing.pub")), Err(TrustError::Read { .. })));
}

#[test]
fn a_wrong_digest_pin_is_refused_with_both_digests() {
    require_openssl!();
    let f = Fixture::new();
    let wrong = ImageDigest::of(b"some other image");
    let e = trust_error(load(&f.image, &f.policy().expect_digest(wrong), Some(&f.sig)));
    match e {
        TrustError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual.to_string(), openssl_digest(&f.image));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unsigned_image_is_refused_when_a_key_is_trusted() {
    require_openssl!();
    let f = Fixture::new();
    let e = trust_error(load(&f.image, &f.policy(), None));
    assert!(matches!(e, TrustError::SignatureRequired { .. }), "{e:?}");
    // Unless the policy says signatures are optional; a given signature is still checked.
    let optional = f.policy().require_signature(false);
    assert!(load(&f.image, &optional, None).unwrap().verification().unwrap().signer().is_none());
    let other = KeyPair::generate(f.dir.path(), "other");
    let bad = other.sign(&f.image, &f.path("other.sig"));
    assert!(matches!(trust_error(load(&f.image, &optional, Some(&bad))), TrustError::UntrustedSignature { .. }));
}

#[test]
fn the_policy_is_checked_before_the_elf_is_parsed() {
    require_openssl!();
    let f = Fixture::new();
    // Not an ELF at all: with a pin or a required signature the trust error comes first.
    let junk = f.path("junk");
    std::fs::write(&junk, b"not an elf").unwrap();
    assert!(matches!(trust_error(load(&junk, &f.policy(), None)), TrustError::SignatureRequired { .. }));
    let pinned = TrustPolicy::new().expect_digest(ImageDigest::of(b"x"));
    assert!(matches!(trust_error(load(&junk, &pinned, None)), TrustError::DigestMismatch { .. }));
    // A correctly signed non-ELF passes the policy and is then refused by the loader.
    let sig = f.key.sign(&junk, &f.path("junk.sig"));
    assert!(matches!(load(&junk, &f.policy(), Some(&sig)), Err(Error::Image(_))));
}
