//! Deploy-time policy: `glint policy check <MANIFEST>`, and the same check `glint serve` runs
//! before it starts anything. Every violation is found (not only the first) and printed as one
//! line naming the rule and the function:
//!
//! | rule | denies |
//! | --- | --- |
//! | `require_signatures` | a local image without `signature`, or a `snapshot` without `snapshot_signature`, while `[trust]` requires signatures (default: when `keys` is set); `require_signatures = true` without any key |
//! | `require_digests` | a function without `digest`, or a `snapshot` without `snapshot_digest`, while `[trust] require_digests = true` |
//! | `trusted_image` | a local image that fails its signature or digest pin, or cannot be read; a snapshot file that fails its own, cannot be loaded, or is not of the function's image (its code, its memory layout); a trust key that cannot be read |
//! | `capability_grant` | an image that imports a capability its function is not granted |
//! | `max_memory` | `memory_mib` above `[server] max_memory_mib` |
//! | `max_timeout` | `timeout_ms` above `[server] max_timeout_ms` |
//! | `outbound_hosts` | an `allowed_outbound_hosts` pattern matching any host (`*`, `*.com`) unless `[trust] allow_broad_outbound = true` |
//!
//! `oci://` images are checked here for their pins and grants only; their signature and digest
//! are verified when `glint serve` pulls them (the registry is not contacted by a policy check).

use crate::failure::one_line;
use crate::serve::manifest::{FunctionSpec, ImageSource, Manifest};
use glint::{ImageSignature, TrustPolicy, TrustedKey};
use std::fmt;

/// A policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Images must be signed.
    RequireSignatures,
    /// Images must be pinned by digest.
    RequireDigests,
    /// A local image must pass its signature and pin.
    TrustedImage,
    /// Imports need grants.
    CapabilityGrant,
    /// `memory_mib` within the server maximum.
    MaxMemory,
    /// `timeout_ms` within the server maximum.
    MaxTimeout,
    /// Outbound host patterns must name hosts.
    OutboundHosts,
}

impl Rule {
    /// The rule's name, as printed and as the audit event's `rule`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::RequireSignatures => "require_signatures",
            Rule::RequireDigests => "require_digests",
            Rule::TrustedImage => "trusted_image",
            Rule::CapabilityGrant => "capability_grant",
            Rule::MaxMemory => "max_memory",
            Rule::MaxTimeout => "max_timeout",
            Rule::OutboundHosts => "outbound_hosts",
        }
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The manifest file (as given).
    pub file: String,
    /// Line of the function's table (0 for the manifest as a whole).
    pub line: usize,
    /// The rule broken.
    pub rule: Rule,
    /// The function, or `None` for a manifest-wide problem.
    pub function: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        write!(f, "policy `{}` denies ", self.rule.as_str())?;
        match &self.function {
            Some(name) => write!(f, "function `{name}`")?,
            None => write!(f, "the manifest")?,
        }
        write!(f, ": {}", self.detail)
    }
}

/// Checks `manifest` against every rule. Reads local image, signature and key files; contacts no
/// registry. An empty result means the deployment is allowed.
pub fn check(manifest: &Manifest) -> Vec<Violation> {
    let mut out = Vec::new();
    let trust = manifest.trust.clone().unwrap_or_default();
    let whole = |rule, detail: String| Violation { file: manifest.file.clone(), line: 0, rule, function: None, detail };

    let mut keys = Vec::new();
    for path in &trust.keys {
        match TrustedKey::from_file(path) {
            Ok(k) => keys.push(k),
            Err(e) => out.push(whole(Rule::TrustedImage, one_line(&e))),
        }
    }
    let require_signatures = trust.require_signatures.unwrap_or(!trust.keys.is_empty());
    if require_signatures && trust.keys.is_empty() {
        out.push(whole(
            Rule::RequireSignatures,
            "signatures are required but [trust] lists no `keys`: no image can pass".to_owned(),
        ));
    }
    let require_digests = trust.require_digests.unwrap_or(false);
    let base = TrustPolicy::new().trust_keys(keys).require_signature(require_signatures);

    for f in &manifest.functions {
        let deny = |rule, detail: String| Violation {
            file: manifest.file.clone(),
            line: f.line,
            rule,
            function: Some(f.name.clone()),
            detail,
        };
        let local = match &f.image {
            ImageSource::File(path) => Some(path),
            ImageSource::Oci(_) => None,
        };
        let unsigned = require_signatures && local.is_some() && f.signature.is_none();
        if unsigned {
            out.push(deny(
                Rule::RequireSignatures,
                "its image has no `signature`, and [trust] requires signed images".to_owned(),
            ));
        }
        if require_digests && f.digest.is_none() {
            out.push(deny(
                Rule::RequireDigests,
                "its image has no `digest` pin, and [trust] require_digests = true".to_owned(),
            ));
        }
        let unsigned_snapshot = require_signatures && f.snapshot.is_some() && f.snapshot_signature.is_none();
        if unsigned_snapshot {
            out.push(deny(
                Rule::RequireSignatures,
                "its snapshot has no `snapshot_signature`, and [trust] requires signatures".to_owned(),
            ));
        }
        if require_digests && f.snapshot.is_some() && f.snapshot_digest.is_none() {
            out.push(deny(
                Rule::RequireDigests,
                "its snapshot has no `snapshot_digest` pin, and [trust] require_digests = true".to_owned(),
            ));
        }
        if let Some(v) = snapshot_violation(f, &base, unsigned_snapshot, manifest) {
            out.push(deny(Rule::TrustedImage, v));
        }
        if let Some(path) = local {
            match std::fs::read(manifest.dir.join(path)) {
                Err(e) => out.push(deny(Rule::TrustedImage, format!("cannot read image {}: {e}", path.display()))),
                Ok(bytes) => {
                    if let Some(v) = trust_violation(f, &base, &bytes, unsigned, manifest) {
                        out.push(deny(Rule::TrustedImage, v));
                    }
                    match ungranted_imports(f, &bytes) {
                        Ok(ungranted) => {
                            for (import, hint) in ungranted {
                                out.push(deny(
                                    Rule::CapabilityGrant,
                                    format!("imports `{import}` but its manifest entry does not grant it: add {hint}"),
                                ));
                            }
                        }
                        Err(e) if e.kind() == glint::ErrorKind::HostUnavailable => {
                            eprintln!("note: function `{}`: its imports are not checked here: {}", f.name, one_line(&e))
                        }
                        Err(e) => out.push(deny(
                            Rule::CapabilityGrant,
                            format!("its imports cannot be read: the image does not initialise: {}", one_line(&e)),
                        )),
                    }
                }
            }
        }
        if f.memory_mib > manifest.server.max_memory_mib {
            out.push(deny(
                Rule::MaxMemory,
                format!(
                    "memory_mib = {} is above the server maximum {} ([server] max_memory_mib)",
                    f.memory_mib, manifest.server.max_memory_mib
                ),
            ));
        }
        if f.timeout > manifest.server.max_timeout {
            out.push(deny(
                Rule::MaxTimeout,
                format!(
                    "timeout_ms = {} is above the server maximum {} ([server] max_timeout_ms)",
                    f.timeout.as_millis(),
                    manifest.server.max_timeout.as_millis()
                ),
            ));
        }
        if !trust.allow_broad_outbound {
            for pattern in outbound_patterns(f).into_iter().filter(|p| too_broad(p)) {
                out.push(deny(
                    Rule::OutboundHosts,
                    format!("allowed_outbound_hosts pattern \"{pattern}\" matches any host; name the hosts, or set [trust] allow_broad_outbound = true"),
                ));
            }
        }
    }
    out
}

/// The signature and pin check of a local image, as its load will do it; `None` when it passes.
fn trust_violation(
    f: &FunctionSpec,
    base: &TrustPolicy,
    bytes: &[u8],
    unsigned_reported: bool,
    manifest: &Manifest,
) -> Option<String> {
    let (policy, signature) =
        match pinned(base, f.digest.as_deref(), f.signature.as_deref(), unsigned_reported, manifest) {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
    policy.verify(bytes, signature.as_ref()).err().map(|e| one_line(&e))
}

/// `base` with the `digest` pin, and the `signature` file read: what an image or a snapshot file
/// is held to. With `unsigned_reported` the missing signature is already reported, and only the
/// pin is still checked. `Err`: the pin or the signature file is unusable, in words.
fn pinned(
    base: &TrustPolicy,
    digest: Option<&str>,
    signature: Option<&std::path::Path>,
    unsigned_reported: bool,
    manifest: &Manifest,
) -> Result<(TrustPolicy, Option<ImageSignature>), String> {
    let mut policy = base.clone();
    if let Some(d) = digest {
        policy = policy.expect_digest(d.parse().map_err(|e| one_line(&e))?);
    }
    if unsigned_reported {
        policy = policy.require_signature(false);
    }
    let signature =
        signature.map(|p| ImageSignature::from_file(manifest.dir.join(p))).transpose().map_err(|e| one_line(&e))?;
    Ok((policy, signature))
}

/// The checks a snapshot file gets at load, as `glint serve` makes them (`Template::load_trusted`
/// with the function's configuration): its pin and signature, its layout, and, for a local image,
/// that it holds that image's code. `None` when it passes (or there is no snapshot).
fn snapshot_violation(
    f: &FunctionSpec,
    base: &TrustPolicy,
    unsigned_reported: bool,
    manifest: &Manifest,
) -> Option<String> {
    let path = f.snapshot.as_ref()?;
    let (policy, signature) = match pinned(
        base,
        f.snapshot_digest.as_deref(),
        f.snapshot_signature.as_deref(),
        unsigned_reported,
        manifest,
    ) {
        Ok(p) => p,
        Err(e) => return Some(format!("snapshot: {e}")),
    };
    let path = manifest.dir.join(path);
    let image = match &f.image {
        ImageSource::File(image) => match glint::GuestImage::from_file(manifest.dir.join(image)) {
            Ok(image) => image,
            // The image's own violation is reported above.
            Err(_) => return None,
        },
        ImageSource::Oci(_) => {
            // The image is not fetched here: check the file's pin and signature only.
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => return Some(format!("cannot read snapshot {}: {e}", path.display())),
            };
            return policy.verify(&bytes, signature.as_ref()).err().map(|e| format!("snapshot: {}", one_line(&e)));
        }
    };
    let builder = crate::serve::backend::builder_for(f, &manifest.server).unknown_imports_as_traps(true);
    glint::Template::load_trusted(&path, &builder, &image, &policy, signature.as_ref()).err().map(|e| one_line(&e))
}

/// Each capability the image declares it imports that the function's grants do not allow, with
/// the grant that would. The declared imports come from initialising the image once in a
/// sandbox that provides nothing (`serve::backend::declared_imports`), as `glint serve` does at
/// start: exactly the imports the guest declares, the ones the server checks.
fn ungranted_imports(f: &FunctionSpec, bytes: &[u8]) -> Result<Vec<(&'static str, &'static str)>, glint::Error> {
    let image = glint::GuestImage::from_bytes(bytes)?;
    let imports = crate::serve::backend::declared_imports(&image)?;
    Ok(imports
        .iter()
        .filter(|i| !f.grants.allows(&f.variables, &i.name))
        .filter_map(|i| glint_caps::lookup(&i.name))
        .map(|c| (c.name, c.grant_hint))
        .collect())
}

fn outbound_patterns(f: &FunctionSpec) -> Vec<String> {
    f.grants.allowed_outbound_hosts.clone()
}

/// Whether an outbound pattern (`scheme://host[:port]`) lets a guest reach any host: its host is
/// `*`, or `*.` followed by a single label (`*.com`).
pub fn too_broad(pattern: &str) -> bool {
    let rest = pattern.split_once("://").map_or(pattern, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && !port.contains(']') => h,
        _ => authority,
    };
    host.is_empty() || host == "*" || host.strip_prefix("*.").is_some_and(|suffix| !suffix.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broad_patterns() {
        for p in ["*", "*://*:*", "https://*", "http://*:8080", "https://*.com", "*.org"] {
            assert!(too_broad(p), "{p}");
        }
        for p in ["https://api.example.com", "http://127.0.0.1:*", "https://*.example.com", "*://internal.corp:443"] {
            assert!(!too_broad(p), "{p}");
        }
    }
}
