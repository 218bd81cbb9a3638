//! One module per subcommand.

pub mod bench;
pub mod inspect;
pub mod policy;
pub mod pull;
pub mod push;
pub mod run;
pub mod serve;
pub mod verify;

use std::time::Duration;

/// Options every command that builds a sandbox takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxOptions {
    /// Deadline of each guest call, initialisation included, in milliseconds [default: 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    /// Guest memory in MiB [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mib: Option<u64>,
}

impl SandboxOptions {
    /// A builder with these options; guest log lines go to stderr, prefixed `guest: `.
    pub fn builder(&self) -> glint::SandboxBuilder {
        let mut b = glint::SandboxBuilder::new().on_log(|r| eprintln!("guest: {}", r.message));
        if let Some(ms) = self.timeout_ms {
            b = b.call_timeout(Some(Duration::from_millis(ms)));
        }
        if let Some(mib) = self.memory_mib {
            b = b.memory_mib(mib);
        }
        b
    }
}
