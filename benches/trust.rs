//! What image verification adds to loading a guest image: the same bytes loaded without a trust
//! policy, with a digest pin only, and with a pin and an ECDSA P-256 signature (made by the
//! `openssl` command line, as a user would), in one run. No KVM needed.
//!
//! Run: `cargo bench --bench trust`; medians are in `target/criterion/image_load/*/new/estimates.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use criterion::{criterion_group, criterion_main, Criterion};
use glint::{GuestImage, ImageDigest, ImageSignature, TrustPolicy, TrustedKey};
use std::process::Command;
use std::time::Duration;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("the trust bench needs the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn image_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    for (name, guest) in [("hello", glint_guest_artifacts::HELLO), ("benchguest", glint_guest_artifacts::BENCHGUEST)] {
        let bytes = std::fs::read(guest).unwrap();
        let (key, public, sig) = (path("k.pem"), path("k.pub"), path("sig.der"));
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(&["ec", "-in", &key, "-pubout", "-out", &public]);
        openssl(&["dgst", "-sha256", "-sign", &key, "-out", &sig, guest]);
        let signature = ImageSignature::from_file(&sig).unwrap();
        let digest = ImageDigest::of(&bytes);
        let pinned = TrustPolicy::new().expect_digest(digest);
        let signed = TrustPolicy::new().trust_key(TrustedKey::from_file(&public).unwrap()).expect_digest(digest);

        let mut g = c.benchmark_group(format!("image_load/{name}_{}KiB", bytes.len() / 1024));
        g.sample_size(100).measurement_time(Duration::from_secs(3));
        g.bench_function("from_bytes", |b| b.iter(|| GuestImage::from_bytes(&bytes).unwrap()));
        g.bench_function("trusted_digest_pin", |b| {
            b.iter(|| GuestImage::from_bytes_trusted(&bytes, &pinned, None).unwrap())
        });
        g.bench_function("trusted_pin_and_signature", |b| {
            b.iter(|| GuestImage::from_bytes_trusted(&bytes, &signed, Some(&signature)).unwrap())
        });
        g.bench_function("verify_only", |b| b.iter(|| signed.verify(&bytes, Some(&signature)).unwrap()));
        g.finish();
    }
}

criterion_group!(benches, image_load);
criterion_main!(benches);
