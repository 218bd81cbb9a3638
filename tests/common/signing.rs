//! Keys and signatures made with the `openssl` command line, an implementation independent of
//! glint's, for the trust tests of the library and the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the external tool `name` can be run (`name --version` or `name version` works).
/// Skips (false, with a note) when it is missing, except under `CI=true`, where a missing tool
/// fails the test: CI must install it (.ci/run).
pub fn tool(name: &str, probe: &[&str]) -> bool {
    let ok = Command::new(name).args(probe).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{name}` is not installed but CI=true: .ci/run must install it"
        );
        eprintln!("note: `{name}` is not installed; skipping this test");
    }
    ok
}

/// Skips the calling test when `openssl` is missing (fails under CI=true).
#[macro_export]
macro_rules! require_openssl {
    () => {
        if !$crate::signing::tool("openssl", &["version"]) {
            return;
        }
    };
}

/// Runs openssl with `args`, panicking with its stderr when it fails.
pub fn openssl(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let out = Command::new("openssl").args(args.iter().map(|a| a.as_ref())).output().expect("run openssl");
    assert!(out.status.success(), "openssl {:?} failed: {}", out, String::from_utf8_lossy(&out.stderr));
}

/// A temporary directory holding a copy of the hello guest (`hello`), an openssl key pair
/// (`release.pem`, `release.pub`) and the guest's signature (`hello.sig`): what every trust test
/// of the library and the CLI starts from.
#[derive(Debug)]
pub struct SignedHello {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub key: KeyPair,
    pub sig: PathBuf,
}

impl SignedHello {
    pub fn new() -> SignedHello {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("hello");
        std::fs::copy(glint_guest_artifacts::HELLO, &image).unwrap();
        let key = KeyPair::generate(dir.path(), "release");
        let sig = key.sign(&image, &dir.path().join("hello.sig"));
        SignedHello { dir, image, key, sig }
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A P-256 key pair made by openssl in `dir`: `<name>.pem` (private), `<name>.pub` (SPKI PEM).
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key (SEC1 PEM).
    pub private: PathBuf,
    /// The public key (SPKI PEM).
    pub public: PathBuf,
}

impl KeyPair {
    /// `openssl ecparam -name prime256v1 -genkey -noout`, then `openssl ec -pubout`.
    pub fn generate(dir: &Path, name: &str) -> KeyPair {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub"));
        openssl(&[&"ecparam", &"-name", &"prime256v1", &"-genkey", &"-noout", &"-out", &private]);
        openssl(&[&"ec", &"-in", &private, &"-pubout", &"-out", &public]);
        KeyPair { private, public }
    }

    /// Signs `file` (`openssl dgst -sha256 -sign`): writes `<out>.der` (raw DER) and `<out>`
    /// (its base64 on one line, as cosign writes it); returns the base64 path.
    pub fn sign(&self, file: &Path, out: &Path) -> PathBuf {
        let der = out.with_extension("der");
        openssl(&[&"dgst", &"-sha256", &"-sign", &self.private, &"-out", &der, &file]);
        openssl(&[&"base64", &"-A", &"-in", &der, &"-out", &out]);
        out.to_path_buf()
    }

    /// Checks with openssl itself that the signature `der` verifies over `file`.
    pub fn openssl_verifies(&self, file: &Path, der: &Path) -> bool {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&self.public)
            .arg("-signature")
            .arg(der)
            .arg(file)
            .output()
            .expect("run openssl")
            .status
            .success()
    }
}

/// `openssl dgst -sha256 -r FILE`, as `sha256:<hex>`.
pub fn openssl_digest(file: &Path) -> String {
    let out = Command::new("openssl").args(["dgst", "-sha256", "-r"]).arg(file).output().expect("run openssl");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// A copy of `src` at `dst` with the byte at `offset` flipped.
pub fn flipped_copy(src: &Path, dst: &Path, offset: usize) {
    let mut bytes = std::fs::read(src).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(dst, bytes).unwrap();
}
