//! `glint push <GUEST> <REFERENCE> [--signature SIG] [--key PEM]... [--insecure-http]`

use crate::failure::Failure;
use crate::registry::{self, Connection, ImageReference};
use crate::trust::TrustArgs;
use std::path::PathBuf;

/// Stores a guest image in an OCI registry as an artifact (`application/vnd.glint.guest.v1`),
/// with its signature at the cosign-style tag `sha256-<file hex>.sig`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image file.
    pub guest: PathBuf,
    /// Where to store it: `host[:port]/repository:tag`.
    pub reference: String,
    /// The trust options: with `--signature`, the signature is pushed too; with `--key`, the image
    /// is verified before anything is sent.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Talk plain HTTP to this registry (local test registries only).
    #[arg(long)]
    pub insecure_http: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let reference: ImageReference = a.reference.parse().map_err(|e| Failure::usage(crate::failure::one_line(&e)))?;
    // Refuse to publish what would be refused at load: the policy and the ELF checks.
    let image = a.trust.load(&a.guest)?;
    drop(image);
    let bytes = std::fs::read(&a.guest).map_err(|e| {
        Failure::from(glint::Error::from(glint::ImageError::Io {
            path: a.guest.clone(),
            source: std::sync::Arc::new(e),
        }))
    })?;
    let signature = a.trust.signature()?;
    let name = a.guest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let conn = Connection { insecure_http: a.insecure_http };
    let pushed = registry::block_on(registry::push(bytes, &name, &reference, signature.as_ref(), &conn))?;
    println!("pushed {} {} manifest {}", pushed.reference, pushed.file_digest, pushed.manifest_digest);
    if let Some(tag) = pushed.signature_tag {
        println!("signature {}/{}:{tag}", reference.registry, reference.repository);
    }
    Ok(())
}
