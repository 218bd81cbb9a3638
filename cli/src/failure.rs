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

    /// Prints the one line and returns the exit status.
    pub fn report(&self) -> ExitCode {
        eprintln!("glint: {}", self.message);
        ExitCode::from(self.status)
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

impl From<glint::Error> for Failure {
    /// The status by [`glint::Error::kind`]: 3 for a refused image, 4 when the host cannot run
    /// sandboxes (or KVM failed under one), 2 for a wrong request, 1 for everything the guest did.
    fn from(e: glint::Error) -> Self {
        use glint::ErrorKind;
        let status = match e.kind() {
            ErrorKind::ImageRefused => 3,
            ErrorKind::HostUnavailable => 4,
            _ if matches!(e, glint::Error::Vmm(_)) => 4,
            ErrorKind::BadRequest => 2,
            _ => 1,
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
