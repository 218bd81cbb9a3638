//! `glint snapshot <GUEST> -o <FILE>`

use super::SandboxOptions;
use crate::failure::Failure;
use glint::{GuestImage, Template};
use std::path::PathBuf;

/// Initialises the guest once and saves it to a snapshot file, from which `glint run --snapshot`
/// (or `glint::Template::load`, in any process) starts sandboxes without running its init again.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image.
    pub guest: PathBuf,
    /// The snapshot file to write (replaced atomically if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let image = GuestImage::from_file(&a.guest)?;
    let template = Template::new(&a.sandbox.builder()?, &image)?;
    template.save(&a.output)?;
    Ok(())
}
