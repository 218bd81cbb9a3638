//! `glint serve` with a function that starts from a snapshot file (`snapshot = "..."`): served
//! like the image, held to the trust policy as the image is (its own pin and signature), and
//! refused, naming the rule, when it is not of the function's image or configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/signing.rs"]
mod signing;
mod support;

use signing::{openssl_digest, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::Server;

fn glint(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

/// The test guest, its snapshot file made by `glint snapshot`, a key pair, and both files
/// signed and pinned.
struct Fixture {
    dir: tempfile::TempDir,
    key: KeyPair,
    image: PathBuf,
    snapshot: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("testguest");
        std::fs::copy(glint_guest_artifacts::TESTGUEST, &image).unwrap();
        let snapshot = dir.path().join("testguest.snap");
        let out = glint(&[&"snapshot", &image, &"-o", &snapshot]);
        assert!(out.status.success(), "{out:?}");
        let key = KeyPair::generate(dir.path(), "release");
        Fixture { dir, key, image, snapshot }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A manifest trusting the key, with one typed function `t` of the image and `extra` lines.
    fn manifest(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[trust]\nkeys = [\"{}\"]\naudit_log = \"{}\"\n\n[[function]]\nname = \"t\"\nimage = \"{}\"\nroute = \"/t\"\nkind = \"typed\"\n{extra}\n",
            self.key.public.display(),
            self.path("audit.jsonl").display(),
            self.image.display(),
        );
        let p = self.path("glint.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The image's pin and signature, and `snapshot = FILE` with the snapshot's pin and signature
    /// (each of the last two only when given).
    fn pins(&self, snapshot: &Path, snapshot_digest: Option<&str>, snapshot_signature: Option<&Path>) -> String {
        let sig = self.key.sign(&self.image, &self.path("testguest.sig"));
        let mut text = format!(
            "digest = \"{}\"\nsignature = \"{}\"\nsnapshot = \"{}\"\n",
            openssl_digest(&self.image),
            sig.display(),
            snapshot.display()
        );
        if let Some(d) = snapshot_digest {
            text += &format!("snapshot_digest = \"{d}\"\n");
        }
        if let Some(s) = snapshot_signature {
            text += &format!("snapshot_signature = \"{}\"\n", s.display());
        }
        text
    }

    fn signed_pins(&self, snapshot: &Path) -> String {
        let sig = self.key.sign(snapshot, &snapshot.with_extension("snap.sig"));
        self.pins(snapshot, Some(&openssl_digest(snapshot)), Some(&sig))
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// `glint policy check` and `glint serve` of `manifest` both refuse with exit 3, each with a line
/// `policy `RULE` denies function `t`: ...` containing `detail`.
fn denied(manifest: &Path, rule: &str, detail: &str) {
    for args in [vec!["policy", "check"], vec!["serve"]] {
        let mut cmd: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        cmd.push(&manifest);
        if args[0] == "serve" {
            cmd.extend([&"--listen" as &dyn AsRef<std::ffi::OsStr>, &"127.0.0.1:0"]);
        }
        let out = glint(&cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "glint {args:?}: {err}");
        let want = format!("policy `{rule}` denies function `t`: ");
        assert!(
            err.lines().any(|l| l.contains(&want) && l.contains(detail)),
            "glint {args:?}: want {want}..{detail} in:\n{err}"
        );
    }
}

#[test]
fn a_function_starts_from_its_signed_pinned_snapshot_and_serves_like_the_image() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    let manifest = std::fs::read_to_string(f.manifest(&f.signed_pins(&f.snapshot))).unwrap();
    let mut s = Server::start(&manifest);
    let r = s.post("/t/call/rt_i32", "[41]");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "result": 41 }));
    // A fresh VM from the file for every request: state set by one is not seen by the next.
    assert_eq!(s.post("/t/call/set_state", "[7]").status, 200);
    assert_eq!(s.post("/t/call/get_state", "[]").json(), serde_json::json!({ "result": 0 }));
    // A fault leaves the next request a healthy sandbox from the file.
    assert_eq!(s.post("/t/call/ud2", "[]").status, 500);
    assert_eq!(s.post("/t/call/rt_i32", "[5]").json(), serde_json::json!({ "result": 5 }));
    s.sigterm();
    assert_eq!(s.wait_exit(), Some(0));
    let events = f.audit();
    let verified: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "image_verified" && e["function"] == "t")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(verified.len(), 2, "the image and its snapshot: {events:?}");
    let snapshot = verified[1];
    assert!(
        snapshot.starts_with(&format!("snapshot {} {}", f.snapshot.display(), openssl_digest(&f.snapshot))),
        "{snapshot}"
    );
    assert!(snapshot.contains(&format!("signed by {}", f.key.public.display())), "{snapshot}");
}

#[test]
fn an_unsigned_unpinned_or_resigned_snapshot_is_denied_naming_the_rule() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    // Keys make signatures required, for the snapshot as for the image.
    let m = f.manifest(&f.pins(&f.snapshot, Some(&openssl_digest(&f.snapshot)), None));
    denied(&m, "require_signatures", "its snapshot has no `snapshot_signature`");
    // require_digests covers the snapshot too.
    let sig = f.key.sign(&f.snapshot, &f.path("snap.sig"));
    let text = std::fs::read_to_string(f.manifest(&f.pins(&f.snapshot, None, Some(&sig)))).unwrap();
    let m = f.path("glint.toml");
    std::fs::write(&m, text.replace("[trust]\n", "[trust]\nrequire_digests = true\n")).unwrap();
    denied(&m, "require_digests", "its snapshot has no `snapshot_digest` pin");
    // Another pin.
    let other = format!("sha256:{}", "0".repeat(64));
    let m = f.manifest(&f.pins(&f.snapshot, Some(&other), Some(&sig)));
    denied(&m, "trusted_image", &format!("the pin expects {other}"));
    // The key's signature over the image, presented as the snapshot's.
    let image_sig = f.key.sign(&f.image, &f.path("image-as-snap.sig"));
    let m = f.manifest(&f.pins(&f.snapshot, Some(&openssl_digest(&f.snapshot)), Some(&image_sig)));
    denied(&m, "trusted_image", "made by none of the 1 trusted key(s)");
    // A snapshot changed after it was signed, a byte of the guest's stack, with its checksum
    // recomputed (docs/SNAPSHOT-FORMAT.md): every check but the signature passes.
    let changed = f.path("changed.snap");
    let mut bytes = std::fs::read(&f.snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes[CHECKSUM_AT..CHECKSUM_AT + 32].fill(0);
    let sum = crc32fast::hash(&bytes);
    bytes[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&changed, &bytes).unwrap();
    let m = f.manifest(&f.pins(&changed, None, Some(&sig)));
    denied(&m, "trusted_image", "is not trusted (held to the trust policy as an image is)");
    // Without keys or signatures (a policy that asks for nothing), the same file loads: the
    // signature was the only check that could tell.
    let text = std::fs::read_to_string(&m).unwrap();
    let unsigned: String = text
        .lines()
        .filter(|l| !l.starts_with("keys =") && !l.starts_with("signature =") && !l.starts_with("snapshot_signature ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&m, unsigned).unwrap();
    let out = glint(&[&"policy", &"check", &m]);
    assert!(out.status.success(), "{out:?}");
}

/// Where the checksum sits in a snapshot file's header (docs/SNAPSHOT-FORMAT.md).
const CHECKSUM_AT: usize = 232;

#[test]
fn a_snapshot_of_another_image_or_configuration_is_denied() {
    require_kvm!();
    require_openssl!();
    let f = Fixture::new();
    // A correctly signed and pinned snapshot, but of hello: the pins are the file's, the image is
    // the function's, and the file must be of that image.
    let hello = f.path("hello.snap");
    assert!(glint(&[&"snapshot", &glint_guest_artifacts::HELLO, &"-o", &hello]).status.success());
    let m = f.manifest(&f.signed_pins(&hello));
    denied(&m, "trusted_image", "is a snapshot of image sha256:");
    // Of the image, but taken with 32 MiB for a function of the default 16.
    let big = f.path("big.snap");
    assert!(glint(&[&"snapshot", &f.image, &"-o", &big, &"--memory-mib", &"32"]).status.success());
    let m = f.manifest(&f.signed_pins(&big));
    denied(&m, "trusted_image", "was taken with");
    // The same file for a function of 32 MiB: allowed.
    let text = std::fs::read_to_string(f.manifest(&(f.signed_pins(&big) + "memory_mib = 32\n"))).unwrap();
    let out = glint(&[&"policy", &"check", &f.path("glint.toml")]);
    assert!(out.status.success(), "{}\n{out:?}", text);
}

#[test]
fn snapshot_pins_without_a_snapshot_are_manifest_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("glint.toml");
    std::fs::write(
        &m,
        support::testguest_fn(
            "t",
            "/t",
            &format!("snapshot_digest = \"sha256:{}\"\nsnapshot_signature = \"s.sig\"", "0".repeat(64)),
        ),
    )
    .unwrap();
    let out = glint(&[&"policy", &"check", &m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in ["snapshot_digest", "snapshot_signature"] {
        assert!(err.contains(&format!("`{key}` applies only with `snapshot`")), "{err}");
    }
    std::fs::write(&m, support::testguest_fn("t", "/t", "snapshot = \"x.snap\"\nsnapshot_digest = \"sha256:12\""))
        .unwrap();
    let err = String::from_utf8_lossy(&glint(&[&"policy", &"check", &m]).stderr).into_owned();
    assert!(err.contains("`snapshot_digest` = \"sha256:12\" is not `sha256:` and 64 lowercase hex digits"), "{err}");
}
