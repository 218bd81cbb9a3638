//! The trust options every command that loads an image takes (`--key`, `--signature`,
//! `--digest`), shared by `verify`, `run`, `inspect`, `pull` and `serve`.

use crate::failure::Failure;
use glint::{GuestImage, ImageDigest, ImageSignature, TrustError, TrustPolicy, TrustedKey};
use std::path::{Path, PathBuf};

/// `--key`, `--signature`, `--digest`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// Trust images signed by this public key (SPKI PEM, as `openssl ec -pubout` or `cosign
    /// generate-key-pair` write it). Repeatable. With a key, the image must be signed by one.
    #[arg(long = "key", value_name = "PEM")]
    pub keys: Vec<PathBuf>,
    /// The image's signature: base64 DER as `cosign sign-blob` writes it, or raw DER as `openssl
    /// dgst -sha256 -sign` writes it.
    #[arg(long, value_name = "SIG", requires = "keys")]
    pub signature: Option<PathBuf>,
    /// Refuse the image unless its SHA-256 is this (as `glint inspect` prints it).
    #[arg(long, value_name = "sha256:HEX")]
    pub digest: Option<ImageDigest>,
}

impl TrustArgs {
    /// The policy these options describe: the keys, a signature required when there is a key,
    /// and the digest pin.
    ///
    /// # Errors
    ///
    /// A key file that cannot be read or decoded.
    pub fn policy(&self) -> Result<TrustPolicy, TrustError> {
        let keys = self.keys.iter().map(TrustedKey::from_file).collect::<Result<Vec<_>, _>>()?;
        let mut policy = TrustPolicy::new().trust_keys(keys);
        if let Some(d) = self.digest {
            policy = policy.expect_digest(d);
        }
        Ok(policy)
    }

    /// The signature given with `--signature`, decoded.
    ///
    /// # Errors
    ///
    /// A signature file that cannot be read or decoded.
    pub fn signature(&self) -> Result<Option<ImageSignature>, TrustError> {
        self.signature.as_deref().map(ImageSignature::from_file).transpose()
    }

    /// Loads the image at `path` through the policy (which is permissive when no option is
    /// given: the digest is still recorded).
    pub fn load(&self, path: &Path) -> Result<GuestImage, Failure> {
        let policy = self.policy()?;
        let signature = self.signature()?;
        Ok(GuestImage::from_file_trusted(path, &policy, signature.as_ref())?)
    }
}
