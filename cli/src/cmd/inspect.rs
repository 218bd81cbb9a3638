//! `glint inspect <GUEST>`

use super::SandboxOptions;
use crate::failure::Failure;
use crate::trust::TrustArgs;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image.
    pub guest: PathBuf,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print the description as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Function {
    name: String,
    signature: String,
}

#[derive(serde::Serialize)]
struct Description {
    /// `sha256:<hex>` of the file.
    digest: String,
    /// The key whose signature verified, when `--key` was given.
    signer: Option<String>,
    abi_version: u32,
    entry: u64,
    position_independent: bool,
    functions: Vec<Function>,
    imports: Vec<Function>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let image = a.trust.load(&a.guest)?;
    let digest = image.verification().map(|v| v.digest().to_string()).unwrap_or_default();
    let signer = image.verification().and_then(|v| v.signer()).map(|k| k.name().to_owned());
    let sandbox = a.sandbox.builder()?.build(&image)?.init()?;
    if a.json {
        let d = Description {
            digest,
            signer,
            abi_version: image.abi_version(),
            entry: image.entry(),
            position_independent: image.is_position_independent(),
            functions: sandbox
                .exports()
                .iter()
                .map(|e| Function { name: e.name.clone(), signature: e.signature.to_string() })
                .collect(),
            imports: sandbox
                .imports()
                .iter()
                .map(|i| Function { name: i.name.clone(), signature: i.signature.to_string() })
                .collect(),
        };
        println!("{}", serde_json::to_string(&d).unwrap_or_default());
        return Ok(());
    }
    println!("guest:     {}", a.guest.display());
    println!("sha256:    {digest}");
    if let Some(signer) = &signer {
        println!("signed by: {signer}");
    }
    println!("abi:       version {}", image.abi_version());
    println!(
        "entry:     {:#x} ({})",
        image.entry(),
        if image.is_position_independent() { "position-independent, relocated" } else { "static" }
    );
    println!("functions:");
    for e in sandbox.exports() {
        println!("  {}{}", e.name, e.signature);
    }
    println!("imports:");
    for i in sandbox.imports() {
        println!("  {}{}", i.name, i.signature);
    }
    Ok(())
}
