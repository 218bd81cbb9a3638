//! `glint bench <GUEST>`

use crate::failure::Failure;
use glint::GuestImage;
use std::path::PathBuf;

/// The guest must export add(i32, i32) -> i32; host_calls, dirty and spin are measured when
/// exported (the benchguest in guest/bins/test exports all). Takes about half a minute.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image.
    pub guest: PathBuf,
    /// Print one JSON object whose keys are a stable contract for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let image = GuestImage::from_file(&a.guest)?;
    if !a.json {
        eprintln!("glint: measuring {} (about half a minute)...", a.guest.display());
    }
    let options = glint_bench::Options { glint_exe: std::env::current_exe().ok(), ..Default::default() };
    let report = glint_bench::run(&image, &options)?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
