//! One module per subcommand.

pub mod bench;
pub mod inspect;
pub mod run;
pub mod snapshot;

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
    /// A builder with these options; guest log lines go to stderr, prefixed `guest: `. The CLI
    /// provides no host functions, so a guest's imports become stubs that fail when called
    /// (see [`note_unprovided_imports`]) rather than a refusal to run at all.
    pub fn builder(&self) -> glint::SandboxBuilder {
        let mut b =
            glint::SandboxBuilder::new().on_log(|r| eprintln!("guest: {}", r.message)).unknown_imports_as_traps(true);
        if let Some(ms) = self.timeout_ms {
            b = b.call_timeout(Some(Duration::from_millis(ms)));
        }
        if let Some(mib) = self.memory_mib {
            b = b.memory_mib(mib);
        }
        b
    }
}

/// Says on stderr, once per import, that the guest imports a host function this command does
/// not provide: calling it fails (the guest sees "not found").
pub fn note_unprovided_imports(sandbox: &glint::Sandbox) {
    for i in sandbox.imports() {
        eprintln!(
            "note: the guest imports `{}{}`, which glint's command line does not provide; calls to it fail",
            i.name, i.signature
        );
    }
}
