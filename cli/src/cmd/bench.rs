//! `glint bench <GUEST> [--http]`

use crate::failure::{one_line, Failure};
use crate::serve::loadgen;
use glint::GuestImage;
use std::path::PathBuf;

/// The guest must export add(i32, i32) -> i32; host_calls, dirty and spin are measured when
/// exported (the benchguest in guest/bins/test exports all). Takes about half a minute, and
/// about ten seconds more with --http.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest image.
    pub guest: PathBuf,
    /// Print one JSON object whose keys are a stable contract for scripts.
    #[arg(long)]
    pub json: bool,
    /// Also measure `glint serve` on loopback: a Rust handler (no VM) and the guest's `add`
    /// through POST /call/add with a fresh VM per request, 32 connections, 3 s each.
    #[arg(long)]
    pub http: bool,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let image = GuestImage::from_file(&a.guest)?;
    if !a.json {
        eprintln!("glint: measuring {} (about half a minute)...", a.guest.display());
    }
    let options = glint_bench::Options { glint_exe: std::env::current_exe().ok(), ..Default::default() };
    let report = glint_bench::run(&image, &options)?;
    let http = if a.http {
        if !a.json {
            eprintln!("glint: measuring glint serve on loopback...");
        }
        Some(
            loadgen::run(&a.guest, &loadgen::LoadOptions::default())
                .map_err(|e| Failure { status: 4, message: one_line(&e) })?,
        )
    } else {
        None
    };
    if a.json {
        let mut json = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(h), Some(map)) = (&http, json.as_object_mut()) {
            if let Ok(serde_json::Value::Object(extra)) = serde_json::to_value(h) {
                map.extend(extra);
            }
        }
        println!("{json}");
    } else {
        print!("{}", report.table());
        if let Some(h) = &http {
            print!("{}", loadgen::table(h, report.fresh_call_us, report.fresh_calls_per_sec_2));
        }
    }
    Ok(())
}
