//! `glint verify <GUEST> --key <PEM> --signature <SIG> [--digest sha256:HEX]`

use crate::failure::Failure;
use crate::trust::TrustArgs;
use std::path::PathBuf;

/// Checks the image's digest and signature, then that it is a loadable guest (no VM is started).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image.
    pub guest: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print `{"guest", "digest", "signer", "signer_fingerprint"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Output {
    guest: String,
    digest: String,
    signer: Option<String>,
    signer_fingerprint: Option<String>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    if a.trust.keys.is_empty() {
        return Err(Failure::usage("verify needs at least one --key (the public key the image must be signed by)"));
    }
    let image = a.trust.load(&a.guest)?;
    let Some(v) = image.verification() else {
        return Err(Failure::refused("the image was loaded without a verification"));
    };
    let out = Output {
        guest: a.guest.display().to_string(),
        digest: v.digest().to_string(),
        signer: v.signer().map(|k| k.name().to_owned()),
        signer_fingerprint: v.signer().map(|k| k.fingerprint().to_string()),
    };
    if a.json {
        println!("{}", serde_json::to_string(&out).unwrap_or_default());
    } else {
        println!(
            "verified {} {} signed by {}",
            out.guest,
            out.digest,
            out.signer.as_deref().unwrap_or("nobody (unsigned, allowed)")
        );
    }
    Ok(())
}
