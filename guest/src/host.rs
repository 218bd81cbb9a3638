//! Calling the host: the functions the embedder registered, and the log.

use alloc::string::String;
use core::fmt;
use glint_abi::code::{HostCallError as Code, LogLevel};
use glint_abi::convert::{EncodeParams, FromWire};

/// A host call failed: the host refused it, or the host function returned an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCallError {
    /// A `glint_abi::code::HostCallError` number, or [`HostCallError::LOCAL`] when the guest
    /// itself could not make the call.
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

impl HostCallError {
    /// Code for failures detected in the guest (arguments too large, unreadable response).
    pub const LOCAL: u32 = 0;

    /// The host's code, when it is one this library knows.
    pub fn kind(&self) -> Option<Code> {
        Code::from_number(self.code)
    }
}

impl fmt::Display for HostCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call failed (code {}): {}", self.code, self.message)
    }
}

/// Calls the host function registered as `name` with `args`, expecting an `R` back. Prefer the
/// typed wrappers [`imports!`](crate::imports) generates, which the host checks at
/// initialisation; this is the dynamic form.
///
/// # Errors
/// The host refused the call (no such function, wrong argument types, a limit), the function
/// failed, or its result is not an `R`.
#[cfg(target_os = "none")]
pub fn call<R: FromWire, A: EncodeParams>(name: &str, args: A) -> Result<R, HostCallError> {
    use crate::io;
    use glint_abi::{port, wire};
    let local = |message: String| HostCallError { code: HostCallError::LOCAL, message };
    if name.len() > wire::MAX_NAME_LEN {
        return Err(local(alloc::format!("host function name exceeds {} bytes", wire::MAX_NAME_LEN)));
    }

    let written = io::write_output(&mut |s| {
        wire::put_host_call_head(s, name, A::COUNT)?;
        args.encode(s)
    });
    if written.is_err() {
        return Err(local(String::from("host call arguments do not fit in the output buffer")));
    }
    io::cross(port::HOST_CALL);
    io::with_input(|buf| {
        let body = io::body(buf).map_err(|e| local(alloc::format!("bad response: {e}")))?;
        match wire::read_outcome(body).map_err(|e| local(alloc::format!("bad response: {e}")))? {
            wire::Outcome::Ok(v) => R::from_wire(v)
                .ok_or_else(|| local(alloc::format!("`{name}` returned {}, expected {}", v.ty(), R::TYPE))),
            wire::Outcome::Err { code, message } => {
                Err(HostCallError { code, message: String::from_utf8_lossy(message).into() })
            }
        }
    })
}

/// Writes a log line at `level`; long lines are cut to fit the output buffer.
#[cfg(target_os = "none")]
pub fn log(level: LogLevel, args: fmt::Arguments<'_>) {
    use crate::io;
    use glint_abi::{port, wire};
    if io::with_output(|buf| wire::write_log_frame(buf, level, args)).is_ok() {
        io::cross(port::LOG);
    }
}
