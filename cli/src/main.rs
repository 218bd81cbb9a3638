//! The `glint` command line.
//!
//! Every failure prints one line on stderr (`glint: ...`) and exits with a status below 128:
//! 1 the guest failed (fault, panic, timeout, its own error), 2 usage or arguments, 3 the guest
//! file is unreadable or refused (by the loader or the trust policy: digest, signature), 4 the
//! host cannot run sandboxes (KVM), 5 the registry failed (unreachable, refused, not found, not
//! a guest image).

// Doc comments of the argument structs are clap's help text, written for a terminal, where
// `<GUEST>` and `Vec<u8>` read as they are.
#![allow(rustdoc::invalid_html_tags, reason = "doc comments are terminal help text")]

#[allow(dead_code, reason = "glint serve records the run-time events")]
mod audit;
mod cmd;
mod failure;
mod logging;
mod policy;
mod registry;
mod serve;
mod trust;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run each function call in its own tiny KVM virtual machine.
#[derive(Debug, Parser)]
#[command(name = "glint", version = version(), disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call one function of a guest and print its result.
    Run(cmd::run::Args),
    /// List a guest's exports, ABI version and entry point.
    Inspect(cmd::inspect::Args),
    /// Check a guest image's digest and signature against trusted keys.
    Verify(cmd::verify::Args),
    /// Store a guest image (and its signature) in an OCI registry.
    Push(cmd::push::Args),
    /// Fetch a guest image from an OCI registry, check its digest and signature, write it.
    Pull(cmd::pull::Args),
    /// Initialise a guest once and save it to a snapshot file (`glint run --snapshot FILE`).
    Snapshot(cmd::snapshot::Args),
    /// Measure cold start, calls, host calls, restore, fresh calls and kill next to a bare-KVM
    /// floor measured in the same run.
    Bench(cmd::bench::Args),
    /// Create a guest project (Rust or C) that builds with `cargo build --release` or `make`.
    New(cmd::new::Args),
    /// Deploy-time policy: `glint policy check <MANIFEST>`.
    Policy(cmd::policy::Args),
    /// Serve functions over HTTP, each request in a freshly restored VM.
    Serve(cmd::serve::Args),
}

fn version() -> String {
    format!("{} (ABI {})", env!("CARGO_PKG_VERSION"), glint::ABI_VERSION)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return failure::usage_error(&e),
    };
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::New(args) => cmd::new::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Push(args) => cmd::push::run(args),
        Command::Pull(args) => cmd::pull::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Policy(args) => cmd::policy::run(args),
        Command::Snapshot(args) => cmd::snapshot::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
