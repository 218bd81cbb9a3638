//! Calling the host: the functions the embedder registered, and the log.

use crate::types::{FromValue, ToValue};
use alloc::string::String;
use core::fmt;
use glint_abi::wire::{Full, Sink};

/// A host call failed: the host refused it, or the host function returned an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCallError {
    /// One of `glint_abi::code::host_call`, or [`HostCallError::LOCAL`] when the guest itself
    /// could not make the call.
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

impl HostCallError {
    /// Code for failures detected in the guest (arguments too large, unreadable response).
    pub const LOCAL: u32 = 0;
}

impl fmt::Display for HostCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call failed (code {}): {}", self.code, self.message)
    }
}

/// Argument lists of host calls: tuples of up to 8 [`ToValue`] types.
pub trait Args {
    /// Number of arguments.
    const COUNT: usize;
    /// Encodes the arguments in order.
    fn encode(&self, sink: &mut impl Sink) -> Result<(), Full>;
}

macro_rules! args {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<$($a: ToValue),*> Args for ($($a,)*) {
            const COUNT: usize = $n;
            #[allow(unused_variables, reason = "macro")]
            fn encode(&self, sink: &mut impl Sink) -> Result<(), Full> {
                $(glint_abi::wire::put_value(sink, self.$i.to_value())?;)*
                Ok(())
            }
        }
    };
}
args!(0;);
args!(1; A 0);
args!(2; A 0, B 1);
args!(3; A 0, B 1, C 2);
args!(4; A 0, B 1, C 2, D 3);
args!(5; A 0, B 1, C 2, D 3, E 4);
args!(6; A 0, B 1, C 2, D 3, E 4, F 5);
args!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
args!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Calls the host function registered as `name` with `args`, expecting an `R` back.
///
/// # Errors
/// The host refused the call (no such function, wrong argument types, a limit), the function
/// failed, or its result is not an `R`.
#[cfg(target_os = "none")]
pub fn call<R: FromValue, A: Args>(name: &str, args: A) -> Result<R, HostCallError> {
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
            wire::Outcome::Ok(v) => R::from_value(v)
                .ok_or_else(|| local(alloc::format!("`{name}` returned {}, expected {}", v.ty(), R::TYPE))),
            wire::Outcome::Err { code, message } => {
                Err(HostCallError { code, message: String::from_utf8_lossy(message).into() })
            }
        }
    })
}

/// Writes a log line at `level` (see `glint_abi::code::log_level`); long lines are cut to fit
/// the output buffer.
#[cfg(target_os = "none")]
pub fn log(level: u8, args: fmt::Arguments<'_>) {
    use crate::io;
    use glint_abi::{port, wire};
    io::with_output(|buf| {
        // Frame: u32 len | u8 level | u32 msg len | msg
        let Some((head, msg)) = buf.split_at_mut_checked(wire::LEN_PREFIX + 1 + 4) else { return };
        let mut w = Truncating { buf: msg, len: 0 };
        let _ = fmt::write(&mut w, args);
        let n = w.len as u32;
        head[..4].copy_from_slice(&(n + 5).to_le_bytes());
        head[4] = level;
        head[5..9].copy_from_slice(&n.to_le_bytes());
    });
    io::cross(port::LOG);
}

/// A `fmt::Write` into a fixed slice that drops what does not fit (so it never allocates and
/// works from the panic handler).
pub(crate) struct Truncating<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) len: usize,
}

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let n = s.len().min(room);
        if let Some(dst) = self.buf.get_mut(self.len..self.len + n) {
            dst.copy_from_slice(s.as_bytes().get(..n).unwrap_or_default());
            self.len += n;
        }
        Ok(())
    }
}
