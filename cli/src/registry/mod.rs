//! Guest images in an OCI registry: `glint push`, `glint pull`, and the pull `glint serve` does
//! at start ([`pull`]).
//!
//! # Format
//!
//! A guest image is an OCI 1.1 *artifact*: an image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) with
//! - `artifactType` = [`ARTIFACT_TYPE`] (`application/vnd.glint.guest.v1`),
//! - `config` = the empty descriptor (`application/vnd.oci.empty.v1+json`, the 2-byte blob `{}`),
//! - exactly one layer: the ELF file's bytes unchanged, media type [`GUEST_MEDIA_TYPE`]
//!   (`application/vnd.glint.guest.v1+elf`), annotated `org.opencontainers.image.title` with the
//!   file name. The layer's digest is therefore the sha256 of the file: the digest `glint inspect`
//!   prints, the one `--digest` and a manifest's `digest =` pin.
//!
//! Its signature is stored as cosign stores signatures: a manifest tagged
//! `sha256-<hex>.sig` in the same repository, where `<hex>` is the *file* digest (cosign derives it
//! from the manifest digest because it signs manifests; glint signs the file, as `cosign
//! sign-blob` does). That manifest has `artifactType` [`SIGNATURE_ARTIFACT_TYPE`], the empty
//! config, one layer that is the guest blob's descriptor (the signed payload) annotated
//! [`SIGNATURE_ANNOTATION`] (`dev.cosignproject.cosign/signature`) with the base64 DER signature,
//! and `subject` pointing at the guest manifest (an OCI 1.1 referrer, for registries with the
//! referrers API).
//!
//! In a reference, `@sha256:...` is (as in OCI) the digest of the *manifest*; the file digest is
//! checked separately, against the layer descriptor and against the trust policy's pin.

mod auth;
mod reference;

pub use auth::CredentialsError;
pub use reference::{ImageReference, ReferenceError};

use futures_util::StreamExt as _;
use glint::{ImageDigest, ImageSignature, TrustError, TrustPolicy, Verification};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `artifactType` of a guest image manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.glint.guest.v1";
/// Media type of the layer holding the guest ELF file.
pub const GUEST_MEDIA_TYPE: &str = "application/vnd.glint.guest.v1+elf";
/// `artifactType` of a signature manifest.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.glint.guest.signature.v1";
/// Layer annotation carrying the base64 signature, as cosign names it.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The OCI empty descriptor's media type, and its content.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
/// Largest guest image pulled (a guest is normally well under 1 MiB).
pub const MAX_PULL_BYTES: u64 = 256 << 20;
/// Largest manifest read.
const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Bound on connecting to a registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a read from a registry that stopped answering.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a whole push or pull.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The reference is malformed.
    #[error("bad image reference")]
    Reference(#[from] ReferenceError),
    /// Nothing answers at the registry's address (refused, unreachable, or connect timed out).
    #[error("cannot reach registry {registry}{hint}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// A hint about `--insecure-http` when it may apply.
        hint: &'static str,
        /// The underlying error.
        #[source]
        source: OciDistributionError,
    },
    /// The registry answered with an error.
    #[error("registry refused to {op} {reference}")]
    Registry {
        /// What was being done (`push`, `pull the manifest of`, ...).
        op: &'static str,
        /// The reference.
        reference: String,
        /// What the registry said.
        #[source]
        source: OciDistributionError,
    },
    /// No such tag or digest in the registry.
    #[error("{reference} is not in the registry")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The manifest is not a glint guest image.
    #[error("{reference} is not a glint guest image: {detail}")]
    NotAGuest {
        /// The reference.
        reference: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The guest layer is larger than glint pulls.
    #[error("the guest image in {reference} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The reference.
        reference: String,
        /// The size the manifest declares or the bytes received.
        size: u64,
        /// [`MAX_PULL_BYTES`].
        limit: u64,
    },
    /// The registry sent bytes that are not the ones the descriptor names.
    #[error("the registry sent a guest blob with digest {actual}, the manifest names {expected}")]
    BlobMismatch {
        /// The digest in the manifest.
        expected: String,
        /// The digest of the bytes received.
        actual: ImageDigest,
    },
    /// A push to a reference without a tag.
    #[error("push needs a tag (`{reference}` has none)")]
    PushNeedsTag {
        /// The reference.
        reference: String,
    },
    /// The pulled (or to-be-pushed) image fails the trust policy.
    #[error("guest image refused by the trust policy")]
    Trust(#[from] TrustError),
    /// The credentials file is unusable.
    #[error("registry credentials")]
    Credentials(#[from] CredentialsError),
    /// The operation did not finish in time.
    #[error("registry {registry} did not finish the {op} within {}s", after.as_secs())]
    Timeout {
        /// `host[:port]`.
        registry: String,
        /// `push` or `pull`.
        op: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the registry client")]
    Client(#[source] OciDistributionError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The pulled file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// How to talk to the registry.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Use plain HTTP for this registry (never the default).
    pub insecure_http: bool,
}

/// What [`push`] stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: ImageReference,
    /// sha256 of the guest file (the layer digest).
    pub file_digest: ImageDigest,
    /// Digest of the guest manifest (`reference@<this>` pins it).
    pub manifest_digest: String,
    /// The signature's tag, when a signature was pushed.
    pub signature_tag: Option<String>,
}

/// What [`pull`] fetched and verified.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The guest file's bytes.
    pub bytes: Vec<u8>,
    /// What the trust policy established (digest, signer).
    pub verification: Verification,
    /// The signature used, if any (from `--signature` or the registry), for loading the image
    /// with [`glint::GuestImage::from_bytes_trusted`].
    pub signature: Option<ImageSignature>,
    /// Digest of the guest manifest.
    pub manifest_digest: String,
}

/// The cosign-style tag of the signature of a guest file with `digest`.
pub fn signature_tag(digest: &ImageDigest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

fn install_crypto_provider() {
    // reqwest is built without a default rustls provider (`rustls-no-provider`): glint picks ring.
    // Installing twice is harmless (the second call reports the first is in place).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(reference: &ImageReference, conn: &Connection) -> Result<Client, RegistryError> {
    install_crypto_provider();
    let config = ClientConfig {
        protocol: if conn.insecure_http {
            ClientProtocol::HttpsExcept(vec![reference.registry.clone()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        platform_resolver: None,
        user_agent: concat!("glint/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(RegistryError::Client)
}

/// Classifies a client error: unreachable, not found, or the registry's own answer.
fn classify(e: OciDistributionError, op: &'static str, reference: &ImageReference, conn: &Connection) -> RegistryError {
    let not_found = match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|err| {
            matches!(
                err.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::NotFound
                    | oci_client::errors::OciErrorCode::BlobUnknown
            )
        }),
        _ => false,
    };
    if not_found {
        return RegistryError::NotFound { reference: reference.to_string() };
    }
    if let OciDistributionError::RequestError(r) = &e {
        if r.is_connect() || r.is_timeout() {
            let hint =
                if conn.insecure_http { "" } else { " over HTTPS (a plain-HTTP registry needs --insecure-http)" };
            return RegistryError::Unreachable { registry: reference.registry.clone(), hint, source: e };
        }
    }
    RegistryError::Registry { op, reference: reference.to_string(), source: e }
}

async fn bounded<T>(
    reference: &ImageReference,
    op: &'static str,
    f: impl std::future::Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(OPERATION_TIMEOUT, f).await.unwrap_or(Err(RegistryError::Timeout {
        registry: reference.registry.clone(),
        op,
        after: OPERATION_TIMEOUT,
    }))
}

/// Stores `bytes` (a guest ELF file named `file_name`) at `reference`, with `signature` if given.
///
/// # Errors
///
/// A [`RegistryError`]: the reference has no tag, the registry is unreachable or refuses.
pub async fn push(
    bytes: Vec<u8>,
    file_name: &str,
    reference: &ImageReference,
    signature: Option<&ImageSignature>,
    conn: &Connection,
) -> Result<Pushed, RegistryError> {
    bounded(reference, "push", push_inner(bytes, file_name, reference, signature, conn)).await
}

async fn push_inner(
    bytes: Vec<u8>,
    file_name: &str,
    reference: &ImageReference,
    signature: Option<&ImageSignature>,
    conn: &Connection,
) -> Result<Pushed, RegistryError> {
    if reference.tag.is_none() {
        return Err(RegistryError::PushNeedsTag { reference: reference.to_string() });
    }
    let auth = auth::credentials(&reference.registry)?;
    let client = client(reference, conn)?;
    let oci = reference.to_oci();
    let file_digest = ImageDigest::of(&bytes);
    let title = BTreeMap::from([("org.opencontainers.image.title".to_owned(), file_name.to_owned())]);
    let layers = [ImageLayer::new(bytes, GUEST_MEDIA_TYPE.to_owned(), Some(title))];
    let config = Config::new(EMPTY_CONFIG.to_vec(), EMPTY_MEDIA_TYPE.to_owned(), None);
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_owned());
    manifest.artifact_type = Some(ARTIFACT_TYPE.to_owned());
    let guest_layer = manifest.layers.first().cloned().unwrap_or_default();
    let empty_config = manifest.config.clone();
    client
        .push(&oci, &layers, config, &auth, Some(manifest))
        .await
        .map_err(|e| classify(e, "push", reference, conn))?;
    let (raw, manifest_digest) = client
        .pull_manifest_raw(&oci, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| classify(e, "read back the manifest of", reference, conn))?;

    let mut signature_tag_pushed = None;
    if let Some(signature) = signature {
        let tag = signature_tag(&file_digest);
        let sig_ref = reference.at_tag(tag.clone());
        let mut payload = guest_layer;
        payload.annotations = Some(BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), signature.to_base64())]));
        let sig_manifest = OciImageManifest {
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.to_owned()),
            config: empty_config,
            layers: vec![payload],
            subject: Some(OciDescriptor {
                media_type: OCI_IMAGE_MEDIA_TYPE.to_owned(),
                digest: manifest_digest.clone(),
                size: i64::try_from(raw.len()).unwrap_or(i64::MAX),
                ..OciDescriptor::default()
            }),
            ..OciImageManifest::default()
        };
        // Both blobs the signature manifest names (the empty config, the guest) are in the
        // repository already.
        client
            .push_manifest(&sig_ref.to_oci(), &OciManifest::Image(sig_manifest))
            .await
            .map_err(|e| classify(e, "push the signature to", &sig_ref, conn))?;
        signature_tag_pushed = Some(tag);
    }
    Ok(Pushed { reference: reference.clone(), file_digest, manifest_digest, signature_tag: signature_tag_pushed })
}

/// What [`pull`] checks the image against.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The trust policy (keys, signature required, digest pin).
    pub policy: TrustPolicy,
    /// A signature to use instead of the registry's (`--signature`).
    pub signature: Option<ImageSignature>,
    /// How to reach the registry.
    pub connection: Connection,
}

/// Fetches the guest image at `reference`, checks the blob against its descriptor, fetches its
/// signature from the registry (unless `options.signature` is given, or the policy trusts no
/// key), and checks the bytes against the trust policy. Nothing is written.
///
/// # Errors
///
/// [`RegistryError::Trust`] when the image fails the policy; other [`RegistryError`]s when the
/// registry cannot be reached, lacks the reference, or holds something else.
pub async fn pull(reference: &ImageReference, options: &PullOptions) -> Result<Pulled, RegistryError> {
    bounded(reference, "pull", pull_inner(reference, options)).await
}

async fn pull_inner(reference: &ImageReference, options: &PullOptions) -> Result<Pulled, RegistryError> {
    let conn = &options.connection;
    let auth = auth::credentials(&reference.registry)?;
    let client = client(reference, conn)?;
    let oci = reference.to_oci();
    let (manifest, manifest_digest) = fetch_manifest(&client, &auth, reference, conn).await?;
    let not_a_guest = |detail: String| RegistryError::NotAGuest { reference: reference.to_string(), detail };
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(not_a_guest(format!(
            "artifact type {}, expected {ARTIFACT_TYPE}",
            manifest.artifact_type.as_deref().unwrap_or("(none)")
        )));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(not_a_guest(format!("{} layers, expected one", manifest.layers.len())));
    };
    if layer.media_type != GUEST_MEDIA_TYPE {
        return Err(not_a_guest(format!("layer media type {}, expected {GUEST_MEDIA_TYPE}", layer.media_type)));
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > MAX_PULL_BYTES {
        return Err(RegistryError::TooLarge { reference: reference.to_string(), size, limit: MAX_PULL_BYTES });
    }
    let mut stream = client.pull_blob_stream(&oci, layer).await.map_err(|e| classify(e, "pull", reference, conn))?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(OciDistributionError::IoError(e), "pull", reference, conn))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > size {
            return Err(RegistryError::TooLarge {
                reference: reference.to_string(),
                size: bytes.len() as u64,
                limit: size,
            });
        }
    }
    let actual = ImageDigest::of(&bytes);
    if actual.to_string() != layer.digest {
        return Err(RegistryError::BlobMismatch { expected: layer.digest.clone(), actual });
    }

    let signature = match &options.signature {
        Some(s) => Some(s.clone()),
        None if !options.policy.keys().is_empty() => fetch_signature(&client, &auth, reference, &actual, conn).await?,
        None => None,
    };
    let verification = options.policy.verify(&bytes, signature.as_ref())?;
    Ok(Pulled { bytes, verification, signature, manifest_digest })
}

async fn fetch_manifest(
    client: &Client,
    auth: &RegistryAuth,
    reference: &ImageReference,
    conn: &Connection,
) -> Result<(OciImageManifest, String), RegistryError> {
    let (raw, digest) = client
        .pull_manifest_raw(&reference.to_oci(), auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| classify(e, "pull the manifest of", reference, conn))?;
    if raw.len() > MAX_MANIFEST_BYTES {
        return Err(RegistryError::NotAGuest {
            reference: reference.to_string(),
            detail: format!("a {}-byte manifest", raw.len()),
        });
    }
    // The client checks the content against a digest in the reference; check again, here.
    let computed = ImageDigest::of(&raw).to_string();
    if let Some(pinned) = &reference.digest {
        if pinned.to_string() != computed {
            return Err(RegistryError::NotAGuest {
                reference: reference.to_string(),
                detail: format!("the registry sent a manifest with digest {computed}"),
            });
        }
    }
    let manifest: OciImageManifest = serde_json::from_slice(&raw).map_err(|e| RegistryError::NotAGuest {
        reference: reference.to_string(),
        detail: format!("not an OCI image manifest ({e})"),
    })?;
    Ok((manifest, if digest.is_empty() { computed } else { digest }))
}

/// The signature stored at `sha256-<hex>.sig`, or `None` if there is none.
async fn fetch_signature(
    client: &Client,
    auth: &RegistryAuth,
    reference: &ImageReference,
    digest: &ImageDigest,
    conn: &Connection,
) -> Result<Option<ImageSignature>, RegistryError> {
    let sig_ref = reference.at_tag(signature_tag(digest));
    let manifest = match fetch_manifest(client, auth, &sig_ref, conn).await {
        Ok((m, _)) => m,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let origin = format!("in registry tag {sig_ref}");
    let annotation = manifest
        .layers
        .iter()
        .filter(|l| l.digest == digest.to_string())
        .find_map(|l| l.annotations.as_ref()?.get(SIGNATURE_ANNOTATION));
    match annotation {
        Some(b64) => Ok(Some(ImageSignature::parse(b64.as_bytes(), origin)?)),
        None => Err(RegistryError::NotAGuest {
            reference: sig_ref.to_string(),
            detail: format!("no layer for {digest} carries a {SIGNATURE_ANNOTATION} annotation"),
        }),
    }
}

/// [`pull`], then writes the bytes to `out` atomically (a temporary file in the same directory,
/// synced, then renamed over `out`): `out` holds either its old content or the whole verified
/// image, never a part or an unverified one.
///
/// # Errors
///
/// As [`pull`], and [`RegistryError::Write`].
pub async fn pull_to_file(
    reference: &ImageReference,
    options: &PullOptions,
    out: &Path,
) -> Result<Pulled, RegistryError> {
    let pulled = pull(reference, options).await?;
    write_atomically(out, &pulled.bytes)?;
    Ok(pulled)
}

fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let err = |source| RegistryError::Write { path: out.to_path_buf(), source };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".glint-pull-").tempfile_in(&dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // Executable, like the build output it came from.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    tmp.persist(out).map_err(|e| err(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Runs a registry future to completion on a fresh single-threaded runtime (for the CLI
/// commands, which are otherwise synchronous).
///
/// # Errors
///
/// [`RegistryError::Runtime`] if the runtime cannot start, else the future's error.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, RegistryError>>) -> Result<T, RegistryError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RegistryError::Runtime)?.block_on(f)
}
