//! Trust in guest images: digests, signatures, and the policy a load checks them against.
//!
//! A [`TrustPolicy`] holds the public keys an image may be signed with, whether a signature is
//! required, and optionally the exact digest the image must have. [`GuestImage::from_file_trusted`]
//! and [`GuestImage::from_bytes_trusted`] check the file bytes against it *before* a single ELF
//! header is read, so an untrusted file never reaches the parser.
//!
//! The formats are the ones `cosign sign-blob --key` and `openssl dgst -sha256 -sign` produce,
//! so images are signed with tools platform teams already run:
//!
//! - digest: SHA-256 of the whole file, written `sha256:` followed by 64 hex digits (the form OCI
//!   registries and `sha256sum` use);
//! - signature: ECDSA over NIST P-256 of the SHA-256 of the file, DER-encoded, either raw or in
//!   base64 (cosign writes base64 without a newline; `openssl base64` wraps lines, both accepted);
//! - public key: SubjectPublicKeyInfo in PEM (`-----BEGIN PUBLIC KEY-----`), as
//!   `openssl ec -pubout` and `cosign generate-key-pair` write it.
//!
//! What is *not* checked here: who may sign (any configured key is trusted for any image),
//! revocation, expiry, transparency logs or certificates (keyless cosign). See docs/SECURITY.md.
//!
//! [`GuestImage::from_file_trusted`]: super::GuestImage::from_file_trusted
//! [`GuestImage::from_bytes_trusted`]: super::GuestImage::from_bytes_trusted

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use base64ct::{Base64, Encoding};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature as EcdsaSignature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest as _, Sha256};

/// Largest signature or key file read. A DER P-256 signature is at most 72 bytes and a PEM public
/// key about 180; anything far larger is not one, and must not be read whole.
const MAX_SMALL_FILE: u64 = 64 << 10;

/// The SHA-256 digest of a guest image file, written `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageDigest([u8; 32]);

impl ImageDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> ImageDigest {
        ImageDigest(Sha256::digest(bytes).into())
    }

    /// The digest from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> ImageDigest {
        ImageDigest(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix (as in a cosign signature tag,
    /// `sha256-<hex>.sig`).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not an [`ImageDigest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestParseError {
    /// No `algorithm:` prefix.
    #[error("`{text}` is not a digest: expected `sha256:` followed by 64 hex digits")]
    MissingAlgorithm {
        /// The text (at most 100 characters of it).
        text: String,
    },
    /// An algorithm other than sha256.
    #[error("digest algorithm `{algorithm}` is not supported: only sha256")]
    UnsupportedAlgorithm {
        /// The algorithm named (at most 100 characters of it).
        algorithm: String,
    },
    /// Not 64 hex digits after `sha256:`.
    #[error("a sha256 digest has 64 hex digits, `{text}` has {digits} characters after `sha256:`")]
    WrongLength {
        /// The text (at most 100 characters of it).
        text: String,
        /// Characters after the prefix.
        digits: usize,
    },
    /// A character that is not a hex digit.
    #[error("`{text}` is not a sha256 digest: character {position} after `sha256:` is not a hex digit")]
    NotHex {
        /// The text.
        text: String,
        /// 0-based index of the first bad character after the prefix.
        position: usize,
    },
}

impl FromStr for ImageDigest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<ImageDigest, DigestParseError> {
        let shown = || text.chars().take(100).collect::<String>();
        let Some((algorithm, digits)) = text.split_once(':') else {
            return Err(DigestParseError::MissingAlgorithm { text: shown() });
        };
        if algorithm != "sha256" {
            return Err(DigestParseError::UnsupportedAlgorithm { algorithm: algorithm.chars().take(100).collect() });
        }
        if digits.len() != 64 {
            return Err(DigestParseError::WrongLength { text: shown(), digits: digits.chars().count() });
        }
        let mut out = [0u8; 32];
        let bytes = digits.as_bytes();
        for (i, slot) in out.iter_mut().enumerate() {
            let at = i.saturating_mul(2);
            let pair = bytes.get(at..at.saturating_add(2)).unwrap_or_default();
            let mut value = 0u8;
            for (j, &c) in pair.iter().enumerate() {
                let nibble = char::from(c)
                    .to_digit(16)
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(DigestParseError::NotHex { text: shown(), position: at.saturating_add(j) })?;
                value = value.wrapping_mul(16).wrapping_add(nibble);
            }
            *slot = value;
        }
        Ok(ImageDigest(out))
    }
}

/// Why a public key file was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// The file holds no PEM block.
    #[error("no PEM block found (expected `-----BEGIN PUBLIC KEY-----`)")]
    NotPem,
    /// The PEM block is a private key: only the public half belongs in a trust policy.
    #[error("this is a private key (`{label}`); configure the public key (`openssl ec -in KEY -pubout`)")]
    PrivateKey {
        /// The PEM label.
        label: String,
    },
    /// The PEM block is something else.
    #[error("the PEM block is `{label}`, not `PUBLIC KEY`")]
    WrongLabel {
        /// The PEM label (at most 100 characters of it).
        label: String,
    },
    /// The block does not decode to an ECDSA P-256 SubjectPublicKeyInfo.
    #[error("not a valid ECDSA P-256 public key (SubjectPublicKeyInfo)")]
    Invalid(#[source] p256::pkcs8::spki::Error),
}

/// Why signature bytes were refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFormatError {
    /// Nothing there (or only whitespace).
    #[error("the signature is empty")]
    Empty,
    /// Neither raw DER nor base64 text.
    #[error("neither raw DER nor base64 text")]
    NotBase64(#[source] base64ct::Error),
    /// The (decoded) bytes are not a DER ECDSA P-256 signature, e.g. truncated.
    #[error("{len} bytes that are not a DER-encoded ECDSA P-256 signature (truncated or corrupted?)")]
    NotDer {
        /// Length of the DER bytes.
        len: usize,
    },
    /// Far larger than any signature.
    #[error("{len} bytes, larger than any signature (limit {limit})")]
    TooLarge {
        /// Bytes read (at least).
        len: u64,
        /// The limit.
        limit: u64,
    },
}

/// Why an image is not trusted, or its trust material unusable.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The image is not the pinned one.
    #[error("image digest is {actual}, the pin expects {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: ImageDigest,
        /// The digest of the bytes presented.
        actual: ImageDigest,
    },
    /// No signature came with the image, and the policy requires one.
    #[error("image {digest} is unsigned, and the trust policy requires a signature")]
    SignatureRequired {
        /// The image's digest.
        digest: ImageDigest,
    },
    /// The signature is well-formed but no trusted key made it over these bytes.
    #[error("the signature on image {digest} was made by none of the {keys} trusted key(s)")]
    UntrustedSignature {
        /// The image's digest.
        digest: ImageDigest,
        /// How many keys were tried.
        keys: usize,
    },
    /// The signature could not be decoded.
    #[error("malformed signature {origin}")]
    MalformedSignature {
        /// Where it came from (a path, or a registry tag).
        origin: String,
        /// What is wrong with it.
        #[source]
        reason: SignatureFormatError,
    },
    /// A public key could not be decoded.
    #[error("malformed public key {origin}")]
    MalformedKey {
        /// Where it came from (a path, or a manifest entry).
        origin: String,
        /// What is wrong with it.
        #[source]
        reason: KeyFormatError,
    },
    /// A key or signature file could not be read.
    #[error("cannot read {what} {}", path.display())]
    Read {
        /// `signature file` or `public key file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

/// A public key an image may be signed with.
#[derive(Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    name: Arc<str>,
    fingerprint: ImageDigest,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey").field("name", &self.name).field("fingerprint", &self.fingerprint).finish()
    }
}

impl TrustedKey {
    /// Decodes an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`). `name` says where it came
    /// from in errors and in [`Verification::signer`].
    ///
    /// # Errors
    ///
    /// [`TrustError::MalformedKey`]: no PEM block, a private key, another kind of block, or not an
    /// ECDSA P-256 key.
    pub fn from_pem(pem: &str, name: impl Into<String>) -> Result<TrustedKey, TrustError> {
        let name: String = name.into();
        let malformed = |reason| TrustError::MalformedKey { origin: name.clone(), reason };
        let pem = pem.trim();
        let label = pem_label(pem).ok_or_else(|| malformed(KeyFormatError::NotPem))?;
        if label.contains("PRIVATE KEY") {
            return Err(malformed(KeyFormatError::PrivateKey { label: label.to_owned() }));
        }
        if label != "PUBLIC KEY" {
            return Err(malformed(KeyFormatError::WrongLabel { label: label.chars().take(100).collect() }));
        }
        let key = VerifyingKey::from_public_key_pem(pem).map_err(|e| malformed(KeyFormatError::Invalid(e)))?;
        let der = key.to_public_key_der().map_err(|e| malformed(KeyFormatError::Invalid(e)))?;
        Ok(TrustedKey { key, name: name.into(), fingerprint: ImageDigest::of(der.as_bytes()) })
    }

    /// Reads and decodes a PEM public key file; the path becomes the key's name.
    ///
    /// # Errors
    ///
    /// [`TrustError::Read`] if the file cannot be read (or is over 64 KiB), otherwise as
    /// [`from_pem`](Self::from_pem).
    pub fn from_file(path: impl AsRef<Path>) -> Result<TrustedKey, TrustError> {
        let path = path.as_ref();
        let bytes = read_small(path, "public key file")?;
        let name = path.display().to_string();
        match std::str::from_utf8(&bytes) {
            Ok(text) => TrustedKey::from_pem(text, name),
            Err(_) => Err(TrustError::MalformedKey { origin: name, reason: KeyFormatError::NotPem }),
        }
    }

    /// Where the key came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the key's DER SubjectPublicKeyInfo: `openssl pkey -pubin -in KEY -outform DER |
    /// sha256sum` prints the same.
    pub fn fingerprint(&self) -> ImageDigest {
        self.fingerprint
    }
}

/// The label of the first PEM block in `text`, if any.
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")?;
    let rest = text.get(start.checked_add("-----BEGIN ".len())?..)?;
    let end = rest.find("-----")?;
    rest.get(..end)
}

/// A detached ECDSA P-256 signature over an image file.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageSignature {
    signature: EcdsaSignature,
}

impl fmt::Debug for ImageSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ImageSignature").field(&self.to_base64()).finish()
    }
}

impl ImageSignature {
    /// Decodes a signature: raw DER (first byte 0x30), or base64 of it, whitespace and line
    /// breaks ignored.
    ///
    /// # Errors
    ///
    /// A [`SignatureFormatError`]: empty, not base64, or not a DER P-256 signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<ImageSignature, SignatureFormatError> {
        let limit = MAX_SMALL_FILE;
        if bytes.len() as u64 > limit {
            return Err(SignatureFormatError::TooLarge { len: bytes.len() as u64, limit });
        }
        let der = if bytes.first() == Some(&0x30) {
            bytes.to_vec()
        } else {
            let text: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            if text.is_empty() {
                return Err(SignatureFormatError::Empty);
            }
            Base64::decode_vec(
                std::str::from_utf8(&text)
                    .map_err(|_| SignatureFormatError::NotBase64(base64ct::Error::InvalidEncoding))?,
            )
            .map_err(SignatureFormatError::NotBase64)?
        };
        let signature = EcdsaSignature::from_der(&der).map_err(|_| SignatureFormatError::NotDer { len: der.len() })?;
        Ok(ImageSignature { signature })
    }

    /// Decodes signature bytes and names their origin in the error.
    ///
    /// # Errors
    ///
    /// [`TrustError::MalformedSignature`] naming `origin`.
    pub fn parse(bytes: &[u8], origin: impl fmt::Display) -> Result<ImageSignature, TrustError> {
        ImageSignature::from_bytes(bytes)
            .map_err(|reason| TrustError::MalformedSignature { origin: origin.to_string(), reason })
    }

    /// Reads and decodes a signature file.
    ///
    /// # Errors
    ///
    /// [`TrustError::Read`] if the file cannot be read or is over 64 KiB,
    /// [`TrustError::MalformedSignature`] if it is not a signature.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ImageSignature, TrustError> {
        let path = path.as_ref();
        let bytes = read_small(path, "signature file")?;
        ImageSignature::parse(&bytes, path.display())
    }

    /// The DER encoding.
    pub fn to_der(&self) -> Vec<u8> {
        self.signature.to_der().as_bytes().to_vec()
    }

    /// The DER encoding in base64, as `cosign sign-blob` writes it.
    pub fn to_base64(&self) -> String {
        Base64::encode_string(self.signature.to_der().as_bytes())
    }
}

/// Reads a file of at most [`MAX_SMALL_FILE`] bytes.
fn read_small(path: &Path, what: &'static str) -> Result<Vec<u8>, TrustError> {
    let io = |source| TrustError::Read { what, path: path.to_path_buf(), source: std::sync::Arc::new(source) };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_SMALL_FILE.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_SMALL_FILE} bytes: not a {what}"),
        )));
    }
    Ok(bytes)
}

/// What an image must satisfy before glint parses it.
///
/// [`TrustPolicy::default()`] requires nothing and only records the digest. Adding a key makes a
/// signature required unless [`require_signature(false)`](Self::require_signature) says
/// otherwise. Cloning is cheap (the keys are shared).
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    keys: Arc<[TrustedKey]>,
    require_signature: Option<bool>,
    digest: Option<ImageDigest>,
}

impl TrustPolicy {
    /// A policy that requires nothing (same as `default()`).
    pub fn new() -> TrustPolicy {
        TrustPolicy::default()
    }

    /// Trusts signatures made by `key`.
    pub fn trust_key(mut self, key: TrustedKey) -> TrustPolicy {
        let mut keys = self.keys.to_vec();
        keys.push(key);
        self.keys = keys.into();
        self
    }

    /// Trusts every key in `keys`.
    pub fn trust_keys(mut self, keys: impl IntoIterator<Item = TrustedKey>) -> TrustPolicy {
        let mut all = self.keys.to_vec();
        all.extend(keys);
        self.keys = all.into();
        self
    }

    /// Whether an unsigned image is refused. Default: required as soon as a key is trusted.
    pub fn require_signature(mut self, required: bool) -> TrustPolicy {
        self.require_signature = Some(required);
        self
    }

    /// Pins the image: any other bytes are refused.
    pub fn expect_digest(mut self, digest: ImageDigest) -> TrustPolicy {
        self.digest = Some(digest);
        self
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Whether an unsigned image is refused.
    pub fn requires_signature(&self) -> bool {
        self.require_signature.unwrap_or(!self.keys.is_empty())
    }

    /// The pinned digest, if any.
    pub fn expected_digest(&self) -> Option<ImageDigest> {
        self.digest
    }

    /// Checks `bytes` (a whole image file) against the policy: the digest pin first, then the
    /// signature, which must verify under one of the trusted keys whenever one is given, even if
    /// the policy does not require it.
    ///
    /// # Errors
    ///
    /// [`TrustError::DigestMismatch`], [`TrustError::SignatureRequired`] or
    /// [`TrustError::UntrustedSignature`].
    pub fn verify(&self, bytes: &[u8], signature: Option<&ImageSignature>) -> Result<Verification, TrustError> {
        self.verify_digest(ImageDigest::of(bytes), signature)
    }

    /// As [`verify`](Self::verify), for bytes whose SHA-256 the caller has computed (a file
    /// hashed while it is read, such as a snapshot file).
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_digest(
        &self,
        digest: ImageDigest,
        signature: Option<&ImageSignature>,
    ) -> Result<Verification, TrustError> {
        if let Some(expected) = self.digest {
            if expected != digest {
                return Err(TrustError::DigestMismatch { expected, actual: digest });
            }
        }
        let Some(signature) = signature else {
            if self.requires_signature() {
                return Err(TrustError::SignatureRequired { digest });
            }
            return Ok(Verification { digest, signer: None });
        };
        // The message is the file; ECDSA signs its SHA-256, which is the digest we already have.
        let signer = self
            .keys
            .iter()
            .find(|k| k.key.verify_prehash(digest.as_bytes(), &signature.signature).is_ok())
            .ok_or(TrustError::UntrustedSignature { digest, keys: self.keys.len() })?;
        Ok(Verification { digest, signer: Some(signer.clone()) })
    }
}

/// What a successful [`TrustPolicy::verify`] established.
#[derive(Clone, Debug)]
pub struct Verification {
    digest: ImageDigest,
    signer: Option<TrustedKey>,
}

impl Verification {
    /// The image's digest.
    pub fn digest(&self) -> ImageDigest {
        self.digest
    }

    /// The key whose signature verified, or `None` for an unsigned image the policy allowed.
    pub fn signer(&self) -> Option<&TrustedKey> {
        self.signer.as_ref()
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_text_round_trips_and_bad_text_is_typed() {
        let d = ImageDigest::of(b"abc");
        let text = d.to_string();
        assert_eq!(text, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(text.parse::<ImageDigest>().unwrap(), d);
        assert_eq!(text.to_uppercase().replace("SHA256", "sha256").parse::<ImageDigest>().unwrap(), d);
        assert!(matches!("ba78".parse::<ImageDigest>(), Err(DigestParseError::MissingAlgorithm { .. })));
        assert!(matches!(
            "md5:ba78".parse::<ImageDigest>(),
            Err(DigestParseError::UnsupportedAlgorithm { algorithm }) if algorithm == "md5"
        ));
        assert!(matches!("sha256:ba78".parse::<ImageDigest>(), Err(DigestParseError::WrongLength { digits: 4, .. })));
        let bad = format!("sha256:{}g", &d.hex()[..63]);
        assert!(matches!(bad.parse::<ImageDigest>(), Err(DigestParseError::NotHex { position: 63, .. })));
        // Multi-byte characters must not panic the slicing.
        let wide = format!("sha256:{}é", &d.hex()[..62]);
        assert!(wide.parse::<ImageDigest>().is_err());
    }

    #[test]
    fn signature_bytes_are_refused_with_a_reason() {
        assert!(matches!(ImageSignature::from_bytes(b""), Err(SignatureFormatError::Empty)));
        assert!(matches!(ImageSignature::from_bytes(b" \n"), Err(SignatureFormatError::Empty)));
        assert!(matches!(ImageSignature::from_bytes(b"not base64!"), Err(SignatureFormatError::NotBase64(_))));
        assert!(matches!(ImageSignature::from_bytes(b"\x30\x02\x01"), Err(SignatureFormatError::NotDer { len: 3 })));
        assert!(matches!(ImageSignature::from_bytes(b"MAIB"), Err(SignatureFormatError::NotDer { len: 3 })));
        let huge = vec![b'A'; 70_000];
        assert!(matches!(ImageSignature::from_bytes(&huge), Err(SignatureFormatError::TooLarge { .. })));
    }

    #[test]
    fn key_text_is_refused_with_a_reason() {
        let reason = |text: &str| match TrustedKey::from_pem(text, "k") {
            Err(TrustError::MalformedKey { reason, origin }) => {
                assert_eq!(origin, "k");
                reason
            }
            other => panic!("{other:?}"),
        };
        assert!(matches!(reason("hello"), KeyFormatError::NotPem));
        assert!(matches!(
            reason("-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n"),
            KeyFormatError::PrivateKey { .. }
        ));
        assert!(matches!(
            reason("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
            KeyFormatError::WrongLabel { label } if label == "CERTIFICATE"
        ));
        assert!(matches!(
            reason("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            KeyFormatError::Invalid(_)
        ));
    }

    /// A P-256 public key (made with `openssl ecparam -name prime256v1 -genkey`).
    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYmqpYb4BU1le07BbHUBvbKuk/UIf
z1s05GhgbDd2ITXtnpqSHOkpuZ52xjhba/K90KiAUBaAu9tAsEXQ9sezrQ==
-----END PUBLIC KEY-----
";
    /// `openssl pkey -pubin -in KEY -outform DER | sha256sum`.
    const KEY_FINGERPRINT: &str = "sha256:aa50be85f8fdc1a912e806d42e9c0415363fec001f8e9a4f023c5778e3d09771";
    /// `openssl dgst -sha256 -sign` of the bytes `image` with KEY's private half, in base64.
    const SIGNATURE: &str =
        "MEQCIHVsU5vFJ9p9HxYEHcbB013iFF+WVnjEVu/vZ0b4Awc4AiAthdfO7LtgvQWXXreG+hcNdjS7avBf2qrjvBadsOMj9A==";

    #[test]
    fn an_openssl_signature_verifies_and_keys_signatures_and_digests_show_what_they_are() {
        let key = TrustedKey::from_pem(KEY, "test key").unwrap();
        assert_eq!((key.name(), key.fingerprint().to_string()), ("test key", KEY_FINGERPRINT.to_owned()));
        assert_eq!(format!("{key:?}"), format!("TrustedKey {{ name: \"test key\", fingerprint: {KEY_FINGERPRINT} }}"));
        let sig = ImageSignature::from_bytes(SIGNATURE.as_bytes()).unwrap();
        assert_eq!(sig.to_base64(), SIGNATURE);
        assert_eq!(Base64::encode_string(&sig.to_der()), SIGNATURE);
        assert_eq!(ImageSignature::from_bytes(&sig.to_der()).unwrap(), sig);
        assert_eq!(format!("{sig:?}"), format!("ImageSignature(\"{SIGNATURE}\")"));
        let digest = ImageDigest::of(b"image");
        assert_eq!(format!("{digest:?}"), digest.to_string());
        let v = TrustPolicy::new().trust_key(key).verify(b"image", Some(&sig)).unwrap();
        assert_eq!((v.digest(), v.signer().map(TrustedKey::name)), (digest, Some("test key")));
    }

    #[test]
    fn signatures_and_key_files_of_up_to_64_kib_are_read_and_larger_ones_refused() {
        // Exactly the limit is read (and is not a signature); one byte more is refused unread.
        let at = vec![b'A'; 64 << 10];
        let over = vec![b'A'; (64 << 10) + 1];
        assert!(matches!(ImageSignature::from_bytes(&at), Err(SignatureFormatError::NotDer { .. })));
        assert!(matches!(
            ImageSignature::from_bytes(&over),
            Err(SignatureFormatError::TooLarge { len: 65537, limit: 65536 })
        ));
        let dir = tempfile::tempdir().unwrap();
        let (at_path, over_path) = (dir.path().join("at.sig"), dir.path().join("over.sig"));
        std::fs::write(&at_path, &at).unwrap();
        std::fs::write(&over_path, &over).unwrap();
        assert!(matches!(ImageSignature::from_file(&at_path), Err(TrustError::MalformedSignature { .. })));
        assert!(matches!(TrustedKey::from_file(&at_path), Err(TrustError::MalformedKey { .. })));
        assert!(matches!(ImageSignature::from_file(&over_path), Err(TrustError::Read { .. })));
        assert!(matches!(TrustedKey::from_file(&over_path), Err(TrustError::Read { .. })));
    }

    #[test]
    fn a_policy_reports_the_keys_and_the_pin_it_was_given() {
        let key = TrustedKey::from_pem(KEY, "test key").unwrap();
        let sig = ImageSignature::from_bytes(SIGNATURE.as_bytes()).unwrap();
        // `trust_keys` (what the CLI and serve use) adds every key after the ones already there.
        let other = TrustedKey::from_pem(KEY, "second").unwrap();
        let policy = TrustPolicy::new().trust_key(other).trust_keys([key]);
        let names: Vec<&str> = policy.keys().iter().map(TrustedKey::name).collect();
        assert_eq!(names, ["second", "test key"]);
        assert!(policy.requires_signature());
        let v = policy.verify(b"image", Some(&sig)).unwrap();
        assert_eq!(v.signer().map(TrustedKey::fingerprint).map(|f| f.to_string()), Some(KEY_FINGERPRINT.to_owned()));
        let pin = ImageDigest::of(b"image");
        assert_eq!(TrustPolicy::new().expected_digest(), None);
        assert_eq!(policy.expect_digest(pin).expected_digest(), Some(pin));
    }

    #[test]
    fn an_unsigned_image_passes_only_when_nothing_is_required() {
        let bytes = b"image";
        let v = TrustPolicy::new().verify(bytes, None).unwrap();
        assert_eq!(v.digest(), ImageDigest::of(bytes));
        assert!(v.signer().is_none());
        let pinned = TrustPolicy::new().expect_digest(ImageDigest::of(b"other"));
        assert!(matches!(pinned.verify(bytes, None), Err(TrustError::DigestMismatch { .. })));
        let required = TrustPolicy::new().require_signature(true);
        assert!(matches!(required.verify(bytes, None), Err(TrustError::SignatureRequired { .. })));
    }
}
