//! Failures and the exit status each maps to.

use std::process::ExitCode;

/// A failure with its exit status; printed as one line on stderr.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    /// Status 2: the command line or its arguments are wrong.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { status: 2, message: message.into() }
    }

    /// Status 3: the guest image is refused (or its trust material unusable).
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure { status: 3, message: message.into() }
    }

    /// Prints the line (one per problem when there are several) and returns the exit status.
    pub fn report(&self) -> ExitCode {
        for line in self.message.lines() {
            eprintln!("glint: {line}");
        }
        ExitCode::from(self.status)
    }

    /// The exit status a glint error gets.
    pub fn from_glint_status(e: &glint::Error) -> u8 {
        Failure::from_glint_ref(e)
    }
}

/// One line: the error and each of its sources, joined with `: `.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message.replace('\n', " ")
}

impl Failure {
    /// The status by [`glint::Error::kind`]: 3 for a refused image, 4 when the host cannot run
    /// sandboxes (or KVM failed under one), 2 for a wrong request, 1 for everything the guest did.
    fn from_glint_ref(e: &glint::Error) -> u8 {
        use glint::ErrorKind;
        match e.kind() {
            ErrorKind::ImageRefused => 3,
            ErrorKind::HostUnavailable => 4,
            _ if matches!(e, glint::Error::Vmm(_)) => 4,
            ErrorKind::BadRequest => 2,
            _ => 1,
        }
    }
}

impl From<glint::Error> for Failure {
    fn from(e: glint::Error) -> Self {
        Failure { status: Failure::from_glint_ref(&e), message: one_line(&e) }
    }
}

/// A key or signature that cannot be used refuses the image, as a failed check does (status 3).
impl From<glint::TrustError> for Failure {
    fn from(e: glint::TrustError) -> Self {
        glint::Error::Trust(e).into()
    }
}

/// Registry failures: a refused image is status 3 like any refused image, a bad reference is a
/// usage error (2), anything between glint and the registry is status 5.
impl From<crate::registry::RegistryError> for Failure {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::RegistryError;
        let status = match &e {
            RegistryError::Trust(_) => 3,
            RegistryError::Reference(_) | RegistryError::PushNeedsTag { .. } => 2,
            _ => 5,
        };
        Failure { status, message: one_line(&e) }
    }
}

impl From<glint_bench::Error> for Failure {
    fn from(e: glint_bench::Error) -> Self {
        match e {
            glint_bench::Error::Glint(e) => e.into(),
            other => Failure { status: 4, message: one_line(&other) },
        }
    }
}

/// Reports a command-line parse error as one line (help and version print as usual).
pub fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    // clap explains over several lines and then prints the usage: keep the explanation, on one line.
    let rendered = e.render().to_string();
    let explanation: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = explanation.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    Failure::usage(format!("{text} (see `glint --help`)")).report()
}
