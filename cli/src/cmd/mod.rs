//! One module per subcommand.

pub mod bench;
pub mod inspect;
pub mod new;
pub mod policy;
pub mod pull;
pub mod push;
pub mod run;
pub mod serve;
pub mod snapshot;
pub mod verify;

use crate::failure::Failure;
use std::path::PathBuf;
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
    #[command(flatten)]
    pub core_dumps: CoreDumpOptions,
}

/// Crash-dump options, taken by `run`, `inspect` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoreDumpOptions {
    /// Write an ELF core file into DIR (created if missing) when the guest faults, for
    /// `gdb <GUEST> <CORE>`: `glint-<n>.core`, the lowest n not yet taken.
    #[arg(long, value_name = "DIR")]
    pub core_dump: Option<PathBuf>,
    /// Most core files in the --core-dump directory; once that many exist, faults write none.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub core_dump_max_files: u32,
    /// Largest core file in bytes; memory that does not fit is left out (stack and code first kept).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub core_dump_max_bytes: u64,
}

impl CoreDumpOptions {
    /// The directory (created now if missing) and limits, when --core-dump was given.
    ///
    /// # Errors
    /// A usage failure when the directory cannot be created.
    pub fn config(&self) -> Result<Option<(PathBuf, glint::CoreDumpLimits)>, Failure> {
        let Some(dir) = &self.core_dump else { return Ok(None) };
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::usage(format!("cannot create the core-dump directory {}: {e}", dir.display())))?;
        let limits = glint::CoreDumpLimits { max_bytes: self.core_dump_max_bytes, max_files: self.core_dump_max_files };
        Ok(Some((dir.clone(), limits)))
    }
}

impl SandboxOptions {
    /// A builder with these options; guest log lines go to stderr, prefixed `guest: `. The CLI
    /// provides no host functions, so a guest's imports become stubs that fail when called
    /// (see [`note_unprovided_imports`]) rather than a refusal to run at all.
    ///
    /// # Errors
    /// A usage failure when the core-dump directory cannot be created.
    pub fn builder(&self) -> Result<glint::SandboxBuilder, Failure> {
        let mut b =
            glint::SandboxBuilder::new().on_log(|r| eprintln!("guest: {}", r.message)).unknown_imports_as_traps(true);
        if let Some(ms) = self.timeout_ms {
            b = b.call_timeout(Some(Duration::from_millis(ms)));
        }
        if let Some(mib) = self.memory_mib {
            b = b.memory_mib(mib);
        }
        if let Some((dir, limits)) = self.core_dumps.config()? {
            b = b.core_dumps(dir, limits);
        }
        Ok(b)
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
