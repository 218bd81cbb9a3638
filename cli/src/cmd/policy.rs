//! `glint policy check <MANIFEST>`

use crate::audit::{AuditEvent, AuditKind, AuditLog, AuditSink};
use crate::failure::Failure;
use crate::policy::{self, Violation};
use crate::serve::manifest::{self, Manifest, ManifestError};
use std::path::PathBuf;

/// Deploy-time policy.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Check a whole manifest before anything runs: every violation is printed on stderr, one
    /// line each naming the rule and the function, and the exit status is 3 if there is any
    /// (2 if the manifest itself is malformed). Reads local images, signatures and keys; does not
    /// contact registries.
    Check {
        /// The deployment manifest (TOML).
        manifest: PathBuf,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        PolicyCommand::Check { manifest: path } => {
            let manifest = manifest::load(&path).map_err(manifest_failure)?;
            enforce(&manifest)?;
            println!("policy check passed: {} function(s) in {}", manifest.functions.len(), path.display());
            Ok(())
        }
    }
}

/// Runs the policy check on a loaded manifest: on any violation, records a `policy_denied` audit
/// event per violation (to the manifest's `audit_log`) and fails with one line per violation
/// (status 3). `glint serve` calls this before it prepares any function.
pub fn enforce(manifest: &Manifest) -> Result<(), Failure> {
    let violations = policy::check(manifest);
    if violations.is_empty() {
        return Ok(());
    }
    audit_denials(manifest, &violations);
    Err(Failure::refused(violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

fn audit_denials(manifest: &Manifest, violations: &[Violation]) {
    let setting = manifest.trust.as_ref().and_then(|t| t.audit_log.as_deref());
    let log = match AuditLog::open(&AuditSink::from_setting(setting, &manifest.dir)) {
        Ok(log) => log,
        Err(e) => {
            tracing::error!(error = %crate::failure::one_line(&e), "audit log unavailable");
            return;
        }
    };
    for v in violations {
        let mut event = AuditEvent::new(AuditKind::PolicyDenied, v.detail.clone()).rule(v.rule.as_str());
        if let Some(f) = &v.function {
            event = event.function(f.clone());
            if let Some(d) = manifest.functions.iter().find(|s| &s.name == f).and_then(|s| s.digest.clone()) {
                event = event.image_digest(d);
            }
        }
        log.record(event);
    }
}

fn manifest_failure(e: ManifestError) -> Failure {
    match &e {
        ManifestError::Invalid { problems } => {
            Failure::usage(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
        ManifestError::Read { .. } => Failure::refused(crate::failure::one_line(&e)),
    }
}
