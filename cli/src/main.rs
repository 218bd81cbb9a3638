//! The `glint` command line.
//!
//! Every failure prints one line on stderr (`glint: ...`) and exits with a status below 128:
//! 1 the guest failed (fault, panic, timeout, its own error), 2 usage or arguments, 3 the guest
//! file is unreadable or refused, 4 the host cannot run sandboxes (KVM).

mod cmd;
mod failure;
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
    /// Initialise a guest once and save it to a snapshot file (`glint run --snapshot FILE`).
    Snapshot(cmd::snapshot::Args),
    /// Measure cold start, calls, host calls, restore, fresh calls and kill next to a bare-KVM
    /// floor measured in the same run.
    Bench(cmd::bench::Args),
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
