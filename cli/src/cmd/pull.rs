//! `glint pull <REFERENCE> -o <FILE> [--key PEM]... [--signature SIG] [--digest sha256:HEX] [--insecure-http]`

use crate::failure::Failure;
use crate::registry::{self, Connection, ImageReference, PullOptions};
use crate::trust::TrustArgs;
use std::path::PathBuf;

/// Fetches a guest image, checks its digest and signature (the signature comes from the registry
/// unless `--signature` is given), and only then writes it, atomically.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `host[:port]/repository:tag` or `host[:port]/repository@sha256:HEX` (a manifest digest).
    pub reference: String,
    /// Where to write the guest file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Talk plain HTTP to this registry (local test registries only).
    #[arg(long)]
    pub insecure_http: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let reference: ImageReference = a.reference.parse().map_err(|e| Failure::usage(crate::failure::one_line(&e)))?;
    let options = PullOptions {
        policy: a.trust.policy()?,
        signature: a.trust.signature()?,
        connection: Connection { insecure_http: a.insecure_http },
    };
    let pulled = registry::block_on(registry::pull_to_file(&reference, &options, &a.output))?;
    let v = &pulled.verification;
    let signer = v.signer().map_or_else(|| "(unsigned)".to_owned(), |k| format!("signed by {}", k.name()));
    println!(
        "pulled {reference} {} {signer} manifest {} to {}",
        v.digest(),
        pulled.manifest_digest,
        a.output.display()
    );
    Ok(())
}
