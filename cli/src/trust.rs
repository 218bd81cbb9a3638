//! The trust options every command that loads an image takes (`--key`, `--signature`,
//! `--digest`), shared by `verify`, `run`, `inspect`, `pull` and `serve`.

use crate::failure::{one_line, Failure};
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

    /// Whether no trust option was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.signature.is_none() && self.digest.is_none()
    }

    /// Puts these options into the one function of a quick-mode manifest (`serve --guest`).
    pub fn apply_to_quick(&self, m: &mut crate::serve::manifest::Manifest) {
        if self.is_empty() {
            return;
        }
        m.trust = Some(crate::serve::manifest::TrustConfig { keys: self.keys.clone(), ..Default::default() });
        for f in &mut m.functions {
            f.digest = self.digest.map(|d| d.to_string());
            f.signature = self.signature.clone();
        }
    }

    /// Loads the image at `path` through the policy (which is permissive when no option is
    /// given: the digest is still recorded).
    pub fn load(&self, path: &Path) -> Result<GuestImage, Failure> {
        let policy = self.policy()?;
        let signature = self.signature()?;
        Ok(GuestImage::from_file_trusted(path, &policy, signature.as_ref())?)
    }
}

/// The trust side of `glint serve` start: each function's image verified at load (local files)
/// or pulled, checked and loaded (`oci://` images), with an audit event either way.
///
/// Call [`ManifestTrust::new`] once, after [`crate::cmd::policy::enforce`] passed, and
/// [`ManifestTrust::load`] per function instead of `GuestImage::from_file`. Synchronous: an
/// `oci://` pull runs on a private current-thread runtime, so do not call it from inside an async
/// task (serve prepares functions before it enters its runtime).
#[derive(Debug, Clone)]
pub struct ManifestTrust {
    policy: glint::TrustPolicy,
    insecure_http_registries: Vec<String>,
    audit: crate::audit::AuditLog,
}

/// Why a function's image was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageLoadError {
    /// A `[trust]` key cannot be used.
    #[error("[trust] keys")]
    Key(#[source] TrustError),
    /// The audit log cannot be opened.
    #[error("audit log")]
    Audit(#[source] crate::audit::AuditError),
    /// A `digest` that is not `sha256:<hex>` (the manifest check normally catches it).
    #[error("function `{function}` (line {line}): bad digest")]
    Digest {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// Why.
        #[source]
        source: glint::DigestParseError,
    },
    /// The image was refused or could not be loaded.
    #[error("function `{function}` (line {line})")]
    Image {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// What glint said (`Error::Trust` for a failed policy).
        #[source]
        source: Box<glint::Error>,
    },
    /// The `oci://` image could not be pulled, or failed its policy after the pull.
    #[error("function `{function}` (line {line}): image oci://{reference}")]
    Registry {
        /// The function.
        function: String,
        /// Its manifest line.
        line: usize,
        /// The reference.
        reference: String,
        /// Why.
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
}

impl ManifestTrust {
    /// Reads the manifest's keys and opens its audit log.
    ///
    /// # Errors
    ///
    /// A key that cannot be read or decoded, an audit log that cannot be opened.
    pub fn new(manifest: &crate::serve::manifest::Manifest) -> Result<ManifestTrust, ImageLoadError> {
        let trust = manifest.trust.clone().unwrap_or_default();
        let keys =
            trust.keys.iter().map(TrustedKey::from_file).collect::<Result<Vec<_>, _>>().map_err(ImageLoadError::Key)?;
        let require = trust.require_signatures.unwrap_or(!keys.is_empty());
        let policy = TrustPolicy::new().trust_keys(keys).require_signature(require);
        let sink = crate::audit::AuditSink::from_setting(trust.audit_log.as_deref(), &manifest.dir);
        let audit = crate::audit::AuditLog::open(&sink).map_err(ImageLoadError::Audit)?;
        Ok(ManifestTrust { policy, insecure_http_registries: trust.insecure_http_registries, audit })
    }

    #[allow(dead_code, reason = "serve's request path records run-time events through it (serve helper)")]
    /// The audit log (serve records its run-time events here too; add the secret variables with
    /// [`AuditLog::redacting`](crate::audit::AuditLog::redacting) first).
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    #[allow(dead_code, reason = "serve's request path records run-time events through it (serve helper)")]
    /// Replaces the audit log (e.g. with a redacting one).
    pub fn with_audit(mut self, audit: crate::audit::AuditLog) -> ManifestTrust {
        self.audit = audit;
        self
    }

    /// Loads `spec`'s image through the trust policy (its `digest` pin, its `signature` or, for an
    /// `oci://` image without one, the signature stored in the registry). Records `image_verified`
    /// or `image_refused`.
    ///
    /// # Errors
    ///
    /// [`ImageLoadError`] naming the function.
    pub fn load(
        &self,
        manifest: &crate::serve::manifest::Manifest,
        spec: &crate::serve::manifest::FunctionSpec,
    ) -> Result<LoadedImage, ImageLoadError> {
        use crate::audit::{AuditEvent, AuditKind};
        use crate::serve::manifest::ImageSource;
        let result = self.load_inner(manifest, spec);
        match &result {
            Ok(loaded) => {
                let v = loaded.image.verification();
                let detail = match v.and_then(|v| v.signer()) {
                    Some(k) => format!("signed by {} ({})", k.name(), k.fingerprint()),
                    None => "unsigned; the policy does not require a signature".to_owned(),
                };
                let mut e = AuditEvent::new(AuditKind::ImageVerified, detail).function(spec.name.clone());
                if let Some(v) = v {
                    e = e.image_digest(v.digest());
                }
                self.audit.record(e);
            }
            Err(err) => {
                let trust = match err {
                    ImageLoadError::Image { source, .. } => match &**source {
                        glint::Error::Trust(t) => Some(t),
                        _ => None,
                    },
                    ImageLoadError::Registry { source, .. } => match &**source {
                        crate::registry::RegistryError::Trust(t) => Some(t),
                        _ => None,
                    },
                    _ => None,
                };
                let rule = match trust {
                    Some(TrustError::DigestMismatch { .. }) => "digest",
                    Some(_) => "signature",
                    None => "image",
                };
                let digest = match (trust, &spec.image) {
                    (Some(TrustError::DigestMismatch { actual, .. }), _) => Some(actual.to_string()),
                    (
                        Some(TrustError::SignatureRequired { digest } | TrustError::UntrustedSignature { digest, .. }),
                        _,
                    ) => Some(digest.to_string()),
                    (_, ImageSource::File(p)) => {
                        std::fs::read(manifest.dir.join(p)).ok().map(|b| ImageDigest::of(&b).to_string())
                    }
                    _ => None,
                };
                let mut e = AuditEvent::new(AuditKind::ImageRefused, crate::failure::one_line(err))
                    .function(spec.name.clone())
                    .rule(rule);
                if let Some(d) = digest {
                    e = e.image_digest(d);
                }
                self.audit.record(e);
            }
        }
        result
    }

    fn load_inner(
        &self,
        manifest: &crate::serve::manifest::Manifest,
        spec: &crate::serve::manifest::FunctionSpec,
    ) -> Result<LoadedImage, ImageLoadError> {
        use crate::serve::manifest::ImageSource;
        let function = || spec.name.clone();
        let image_err =
            |source| ImageLoadError::Image { function: function(), line: spec.line, source: Box::new(source) };
        let (policy, signature) = self.pinned(manifest, spec, spec.digest.as_deref(), spec.signature.as_deref())?;
        // A snapshot file is held to the same keys and signature requirement as the image, with
        // its own pin; it is checked when it is loaded (`Template::load_trusted`, one read).
        let snapshot = match &spec.snapshot {
            None => None,
            Some(path) => {
                let (policy, signature) =
                    self.pinned(manifest, spec, spec.snapshot_digest.as_deref(), spec.snapshot_signature.as_deref())?;
                Some(SnapshotTrust { path: manifest.dir.join(path), policy, signature })
            }
        };
        match &spec.image {
            ImageSource::File(path) => {
                let path = manifest.dir.join(path);
                let bytes = read_bounded(&path).map_err(|source| image_err(glint::Error::Image(source)))?;
                // Checked and parsed from the same bytes.
                let image = GuestImage::from_bytes_trusted(&bytes, &policy, signature.as_ref()).map_err(image_err)?;
                Ok(LoadedImage { image, snapshot })
            }
            ImageSource::Oci(text) => {
                let registry_err = |source: crate::registry::RegistryError| ImageLoadError::Registry {
                    function: function(),
                    line: spec.line,
                    reference: text.clone(),
                    source: Box::new(source),
                };
                let reference: crate::registry::ImageReference =
                    text.parse().map_err(|e| registry_err(crate::registry::RegistryError::Reference(e)))?;
                let options = crate::registry::PullOptions {
                    policy: policy.clone(),
                    signature,
                    connection: crate::registry::Connection {
                        insecure_http: self.insecure_http_registries.contains(&reference.registry),
                    },
                };
                let pulled =
                    crate::registry::block_on(crate::registry::pull(&reference, &options)).map_err(registry_err)?;
                // Verified again at load, on the very bytes that are parsed.
                let image = GuestImage::from_bytes_trusted(&pulled.bytes, &policy, pulled.signature.as_ref())
                    .map_err(image_err)?;
                Ok(LoadedImage { image, snapshot })
            }
        }
    }
}

/// A function's image as `glint serve` loads it: verified and parsed.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// The verified image (`image.verification()` has its digest and signer).
    pub image: GuestImage,
    /// The function's snapshot file, with what it is to be held to when it is loaded.
    pub snapshot: Option<SnapshotTrust>,
}

/// A snapshot file and the policy it must pass: the manifest's keys and signature requirement,
/// its own `snapshot_digest` pin, and its `snapshot_signature`.
#[derive(Debug, Clone)]
pub struct SnapshotTrust {
    /// The file.
    pub path: PathBuf,
    /// The policy.
    pub policy: TrustPolicy,
    /// Its signature, if the manifest gives one.
    pub signature: Option<ImageSignature>,
}

impl ManifestTrust {
    /// The manifest's policy with `digest` as its pin, and the `signature` file read: what
    /// `spec`'s image, or its snapshot file, is held to.
    fn pinned(
        &self,
        manifest: &crate::serve::manifest::Manifest,
        spec: &crate::serve::manifest::FunctionSpec,
        digest: Option<&str>,
        signature: Option<&Path>,
    ) -> Result<(TrustPolicy, Option<ImageSignature>), ImageLoadError> {
        let mut policy = self.policy.clone();
        if let Some(d) = digest {
            let d = d.parse().map_err(|source| ImageLoadError::Digest {
                function: spec.name.clone(),
                line: spec.line,
                source,
            })?;
            policy = policy.expect_digest(d);
        }
        let signature =
            signature.map(|p| ImageSignature::from_file(manifest.dir.join(p))).transpose().map_err(|e| {
                ImageLoadError::Image {
                    function: spec.name.clone(),
                    line: spec.line,
                    source: Box::new(glint::Error::Trust(e)),
                }
            })?;
        Ok((policy, signature))
    }

    /// Records how `spec`'s snapshot file fared at load: `image_verified` naming the file, its
    /// digest and signer, or `image_refused` with rule `snapshot_digest`, `snapshot_signature`
    /// or `snapshot`.
    pub fn record_snapshot(
        &self,
        spec: &crate::serve::manifest::FunctionSpec,
        image: &GuestImage,
        result: Result<Option<&glint::Verification>, &glint::Error>,
    ) {
        use crate::audit::{AuditEvent, AuditKind};
        let Some(path) = &spec.snapshot else { return };
        let image_digest = image.verification().map(|v| v.digest().to_string());
        let mut e = match result {
            Ok(v) => {
                let signer = match v.and_then(|v| v.signer()) {
                    Some(k) => format!("signed by {} ({})", k.name(), k.fingerprint()),
                    None => "unsigned; the policy does not require a signature".to_owned(),
                };
                let digest = v.map(|v| format!(" {}", v.digest())).unwrap_or_default();
                AuditEvent::new(AuditKind::ImageVerified, format!("snapshot {}{digest}: {signer}", path.display()))
            }
            Err(err) => {
                let rule = match err {
                    glint::Error::SnapshotFile(glint::SnapshotFileError::Untrusted { source, .. }) => match **source {
                        TrustError::DigestMismatch { .. } => "snapshot_digest",
                        _ => "snapshot_signature",
                    },
                    _ => "snapshot",
                };
                AuditEvent::new(AuditKind::ImageRefused, format!("snapshot {}: {}", path.display(), one_line(err)))
                    .rule(rule)
            }
        }
        .function(spec.name.clone());
        if let Some(d) = image_digest {
            e = e.image_digest(d);
        }
        self.audit.record(e);
    }
}

/// Reads a local image of at most [`crate::registry::MAX_PULL_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, glint::ImageError> {
    use std::io::Read as _;
    let limit = crate::registry::MAX_PULL_BYTES;
    let io = |source| glint::ImageError::Io { path: path.to_path_buf(), source: std::sync::Arc::new(source) };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(glint::ImageError::FileTooLarge { path: path.to_path_buf(), limit });
    }
    Ok(bytes)
}
