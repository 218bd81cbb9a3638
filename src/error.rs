//! The public error type and the guest-fault description.

use crate::func::host::BoxError;
use crate::func::Signature;
use crate::image::ImageError;
use std::fmt;
use std::time::Duration;

/// Everything that can go wrong in glint, in the caller's terms.
///
/// Errors marked *poisons* leave the sandbox refusing further calls with [`Error::Poisoned`]:
/// the guest stopped somewhere in the middle and its state cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The guest image was refused before anything was mapped.
    #[error("guest image refused")]
    Image(#[from] ImageError),
    /// A configuration value is out of range.
    #[error("invalid {what}: {detail}")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// Why it is refused.
        detail: String,
    },
    /// `/dev/kvm` could not be opened.
    #[error("KVM is not available: glint needs read-write access to /dev/kvm (is the kvm module loaded, and may this user open it?)")]
    NoHypervisor {
        /// The error from opening /dev/kvm.
        #[source]
        source: std::io::Error,
    },
    /// KVM lacks a capability glint needs.
    #[error("KVM lacks {capability}, which glint needs; a newer host kernel is required")]
    MissingCapability {
        /// The capability's name.
        capability: &'static str,
    },
    /// A KVM ioctl failed.
    #[error("{op} failed{}", errno_hint(source))]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// The OS error (EMFILE, ENOMEM, ... say which limit was hit).
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate guest memory: {detail}")]
    OutOfMemory {
        /// What the allocator said.
        detail: String,
    },
    /// Host access to guest memory failed (a bug in glint: addresses are host-computed).
    #[error("guest memory access at {addr:#x} failed: {detail}")]
    GuestMemory {
        /// Guest address.
        addr: u64,
        /// What failed.
        detail: String,
    },
    /// The guest panicked (poisons).
    #[error("guest panicked: {message}")]
    GuestPanic {
        /// The panic message, as the guest reported it (sanitised, capped).
        message: String,
    },
    /// The guest raised a CPU exception (poisons).
    #[error("guest {0}")]
    GuestFault(GuestFault),
    /// The guest ended in a state glint cannot report in detail, e.g. a triple fault (poisons).
    #[error("guest crashed: {reason}")]
    GuestCrashed {
        /// What KVM reported.
        reason: String,
    },
    /// The guest accessed guest-physical memory that is not RAM (poisons).
    #[error("guest {} unmapped guest-physical address {addr:#x}", if *write { "wrote to" } else { "read from" })]
    MemoryViolation {
        /// The address.
        addr: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// The guest broke the ABI: malformed message, wrong port width, wrong result type (poisons).
    #[error("guest broke the glint ABI: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The guest exports no function of that name.
    #[error("guest exports no function named `{name}`")]
    NoSuchFunction {
        /// The requested name.
        name: String,
    },
    /// The caller's types differ from the guest function's signature.
    #[error("`{name}` has signature {guest}, but was called as {requested}")]
    SignatureMismatch {
        /// Function name.
        name: String,
        /// What the guest declares.
        guest: Signature,
        /// What the caller used.
        requested: Signature,
    },
    /// The arguments do not fit in the input buffer.
    #[error("arguments of `{name}` take {size} bytes, the input buffer holds {limit}")]
    ArgumentsTooLarge {
        /// Function name.
        name: String,
        /// Encoded size.
        size: usize,
        /// Buffer capacity.
        limit: u64,
    },
    /// The guest function returned an error of its own.
    #[error("guest function `{name}` failed: {message}")]
    GuestFunction {
        /// Function name.
        name: String,
        /// The guest's message.
        message: String,
    },
    /// A host function returned an error and the guest call failed after it.
    #[error("host function `{name}` failed")]
    HostFunction {
        /// Host function name.
        name: String,
        /// The host function's own error.
        #[source]
        source: BoxError,
    },
    /// The guest called a host function that is not registered, and the guest call failed after it.
    #[error("guest called unregistered host function `{name}`")]
    NoSuchHostFunction {
        /// The name the guest asked for.
        name: String,
    },
    /// A host function panicked; the guest was not resumed (poisons).
    #[error("host function `{name}` panicked: {message}")]
    HostFunctionPanicked {
        /// Host function name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// An embedder callback other than a host function (the log hook) panicked; the guest was not
    /// resumed (poisons).
    #[error("the {callback} callback panicked: {message}")]
    CallbackPanicked {
        /// Which callback.
        callback: &'static str,
        /// The panic message.
        message: String,
    },
    /// The guest exceeded a per-call limit (poisons).
    #[error("guest exceeded the limit of {limit} {what}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The call ran past its deadline and was stopped (poisons).
    #[error("guest call timed out after {0:?}")]
    Timeout(Duration),
    /// The call was stopped by an [`InterruptHandle`](crate::InterruptHandle) (poisons).
    #[error("guest call was cancelled")]
    Cancelled,
    /// The snapshot cannot be restored into this sandbox.
    #[error("snapshot does not fit this sandbox: {reason}")]
    SnapshotMismatch {
        /// Why.
        reason: String,
    },
    /// A [`SandboxPool`](crate::SandboxPool) had no sandbox to lend.
    #[error("sandbox pool of {max} has none ready: {detail}")]
    PoolExhausted {
        /// The pool's size.
        max: usize,
        /// Why: all lent out, or the last creation error.
        detail: String,
    },
    /// An earlier call failed mid-way; the sandbox refuses calls until restored.
    #[error("sandbox is poisoned by an earlier failure ({cause}); restore a snapshot or create a new sandbox")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
}

/// The stable classification of an [`Error`], for callers that map errors to responses (an HTTP
/// status, an exit code, an audit event) without matching every variant. New variants of
/// [`Error`] fall into one of these; the set itself changes only with a major version.
///
/// | kind | what happened | `glint serve` answers |
/// | --- | --- | --- |
/// | `GuestFault` | the guest raised a CPU exception, touched memory it has not, or crashed | 500 |
/// | `GuestError` | the guest panicked, or its function returned an error of its own | 500 |
/// | `Timeout` | the call ran past its deadline | 504 |
/// | `Killed` | the call was stopped through an [`InterruptHandle`](crate::InterruptHandle) | 503 |
/// | `ResourceLimit` | a limit was hit: host calls, memory, file descriptors, pool exhausted | 503 |
/// | `ImageRefused` | the guest image (or a snapshot of it) was refused | 500 at start |
/// | `BadRequest` | the caller asked wrongly: unknown function, wrong signature, arguments too large | 400 / 404 |
/// | `HostFunction` | a host function failed (or is missing) and the guest call failed after it | 502 |
/// | `HostUnavailable` | this host cannot run sandboxes: no KVM, a missing capability | 503 |
/// | `Internal` | a glint bug or an unexpected OS failure | 500 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The guest raised a CPU exception or crashed.
    GuestFault,
    /// The guest panicked or its function returned an error.
    GuestError,
    /// The call ran past its deadline.
    Timeout,
    /// The call was killed.
    Killed,
    /// A resource limit was reached.
    ResourceLimit,
    /// The image was refused.
    ImageRefused,
    /// The caller's request was wrong.
    BadRequest,
    /// A host function failed.
    HostFunction,
    /// The host cannot run sandboxes.
    HostUnavailable,
    /// A bug or unexpected OS failure.
    Internal,
}

impl ErrorKind {
    /// A short stable name (`guest_fault`, `timeout`, ...) for logs, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::GuestFault => "guest_fault",
            ErrorKind::GuestError => "guest_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Killed => "killed",
            ErrorKind::ResourceLimit => "resource_limit",
            ErrorKind::ImageRefused => "image_refused",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::HostFunction => "host_function",
            ErrorKind::HostUnavailable => "host_unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable classification of this error (see [`ErrorKind`]). Exhaustive on purpose.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::GuestFault(_)
            | Error::GuestCrashed { .. }
            | Error::MemoryViolation { .. }
            | Error::Protocol { .. } => ErrorKind::GuestFault,
            Error::GuestPanic { .. } | Error::GuestFunction { .. } => ErrorKind::GuestError,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Cancelled => ErrorKind::Killed,
            Error::LimitExceeded { .. } | Error::OutOfMemory { .. } | Error::PoolExhausted { .. } => {
                ErrorKind::ResourceLimit
            }
            Error::Kvm { source, .. }
                if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)) =>
            {
                ErrorKind::ResourceLimit
            }
            Error::Image(_) | Error::SnapshotMismatch { .. } => ErrorKind::ImageRefused,
            Error::InvalidConfig { .. }
            | Error::NoSuchFunction { .. }
            | Error::SignatureMismatch { .. }
            | Error::ArgumentsTooLarge { .. }
            | Error::Poisoned { .. } => ErrorKind::BadRequest,
            Error::HostFunction { .. } | Error::NoSuchHostFunction { .. } | Error::HostFunctionPanicked { .. } => {
                ErrorKind::HostFunction
            }
            Error::NoHypervisor { .. } | Error::MissingCapability { .. } => ErrorKind::HostUnavailable,
            Error::Kvm { .. } | Error::GuestMemory { .. } | Error::CallbackPanicked { .. } => ErrorKind::Internal,
        }
    }

    /// Whether this error leaves the sandbox poisoned. Exhaustive on purpose: a new variant must
    /// decide.
    pub fn poisons(&self) -> bool {
        match self {
            Error::GuestPanic { .. }
            | Error::GuestFault(_)
            | Error::GuestCrashed { .. }
            | Error::MemoryViolation { .. }
            | Error::Protocol { .. }
            | Error::HostFunctionPanicked { .. }
            | Error::CallbackPanicked { .. }
            | Error::Timeout(_)
            | Error::LimitExceeded { .. }
            | Error::Cancelled
            | Error::Kvm { .. }
            | Error::GuestMemory { .. } => true,
            Error::Image(_)
            | Error::InvalidConfig { .. }
            | Error::NoHypervisor { .. }
            | Error::MissingCapability { .. }
            | Error::OutOfMemory { .. }
            | Error::NoSuchFunction { .. }
            | Error::SignatureMismatch { .. }
            | Error::ArgumentsTooLarge { .. }
            | Error::GuestFunction { .. }
            | Error::HostFunction { .. }
            | Error::NoSuchHostFunction { .. }
            | Error::SnapshotMismatch { .. }
            | Error::PoolExhausted { .. }
            | Error::Poisoned { .. } => false,
        }
    }
}

/// A hint for the OS errors that creating many sandboxes runs into.
fn errno_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            " (out of file descriptors: each sandbox holds two; raise the limit with `ulimit -n`)"
        }
        Some(libc::ENOMEM) => " (out of memory: fewer or smaller sandboxes, or more memory)",
        Some(libc::EAGAIN) => " (KVM refused for now; retry later)",
        _ => "",
    }
}

/// A CPU exception raised by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    /// What kind of exception.
    pub kind: FaultKind,
    /// Guest instruction address.
    pub rip: u64,
    /// For a page fault: the address that faulted (CR2).
    pub address: Option<u64>,
    /// The exception's error code, for the vectors that push one.
    pub error_code: Option<u64>,
    /// The page fault hit the guard page below the stack.
    pub stack_overflow: bool,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stack_overflow {
            write!(f, "overflowed its stack")?;
        } else {
            write!(f, "raised {}", self.kind)?;
        }
        write!(f, " at rip {:#x}", self.rip)?;
        if let Some(a) = self.address {
            write!(f, ", address {a:#x}")?;
        }
        if let (FaultKind::PageFault, Some(code)) = (self.kind, self.error_code) {
            let access = if code & 0x10 != 0 {
                "instruction fetch"
            } else if code & 2 != 0 {
                "write"
            } else {
                "read"
            };
            let why = if code & 1 != 0 { "protection violation" } else { "page not present" };
            write!(f, " ({access}, {why})")?;
        } else if let Some(code) = self.error_code.filter(|&c| c != 0) {
            write!(f, " (error code {code:#x})")?;
        }
        Ok(())
    }
}

/// x86 exception vectors, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// #DE, vector 0.
    DivideError,
    /// #DB, vector 1.
    Debug,
    /// NMI, vector 2.
    Nmi,
    /// #BP, vector 3 (`int3`).
    Breakpoint,
    /// #OF, vector 4.
    Overflow,
    /// #BR, vector 5.
    BoundRange,
    /// #UD, vector 6 (`ud2`, unknown instructions).
    InvalidOpcode,
    /// #NM, vector 7.
    DeviceNotAvailable,
    /// #DF, vector 8.
    DoubleFault,
    /// #TS, vector 10.
    InvalidTss,
    /// #NP, vector 11.
    SegmentNotPresent,
    /// #SS, vector 12.
    StackSegment,
    /// #GP, vector 13 (privileged instructions, forbidden ports, non-canonical addresses).
    GeneralProtection,
    /// #PF, vector 14.
    PageFault,
    /// #MF, vector 16.
    X87,
    /// #AC, vector 17.
    AlignmentCheck,
    /// #MC, vector 18.
    MachineCheck,
    /// #XM, vector 19.
    Simd,
    /// #VE, vector 20.
    Virtualization,
    /// #CP, vector 21.
    ControlProtection,
    /// Any other vector below 32.
    Other(u8),
}

impl FaultKind {
    /// The kind for an exception vector.
    pub fn from_vector(v: u8) -> FaultKind {
        match v {
            0 => FaultKind::DivideError,
            1 => FaultKind::Debug,
            2 => FaultKind::Nmi,
            3 => FaultKind::Breakpoint,
            4 => FaultKind::Overflow,
            5 => FaultKind::BoundRange,
            6 => FaultKind::InvalidOpcode,
            7 => FaultKind::DeviceNotAvailable,
            8 => FaultKind::DoubleFault,
            10 => FaultKind::InvalidTss,
            11 => FaultKind::SegmentNotPresent,
            12 => FaultKind::StackSegment,
            13 => FaultKind::GeneralProtection,
            14 => FaultKind::PageFault,
            16 => FaultKind::X87,
            17 => FaultKind::AlignmentCheck,
            18 => FaultKind::MachineCheck,
            19 => FaultKind::Simd,
            20 => FaultKind::Virtualization,
            21 => FaultKind::ControlProtection,
            v => FaultKind::Other(v),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FaultKind::DivideError => "a divide error (#DE)",
            FaultKind::Debug => "a debug exception (#DB)",
            FaultKind::Nmi => "an NMI",
            FaultKind::Breakpoint => "a breakpoint (#BP)",
            FaultKind::Overflow => "an overflow exception (#OF)",
            FaultKind::BoundRange => "a bound-range exception (#BR)",
            FaultKind::InvalidOpcode => "an invalid opcode (#UD)",
            FaultKind::DeviceNotAvailable => "a device-not-available exception (#NM)",
            FaultKind::DoubleFault => "a double fault (#DF)",
            FaultKind::InvalidTss => "an invalid-TSS exception (#TS)",
            FaultKind::SegmentNotPresent => "a segment-not-present exception (#NP)",
            FaultKind::StackSegment => "a stack-segment fault (#SS)",
            FaultKind::GeneralProtection => "a general-protection fault (#GP)",
            FaultKind::PageFault => "a page fault (#PF)",
            FaultKind::X87 => "an x87 floating-point exception (#MF)",
            FaultKind::AlignmentCheck => "an alignment check (#AC)",
            FaultKind::MachineCheck => "a machine check (#MC)",
            FaultKind::Simd => "a SIMD floating-point exception (#XM)",
            FaultKind::Virtualization => "a virtualization exception (#VE)",
            FaultKind::ControlProtection => "a control-protection exception (#CP)",
            FaultKind::Other(v) => return write!(f, "exception vector {v}"),
        };
        f.write_str(s)
    }
}

/// Most characters of guest-supplied text kept in an error or log record.
pub(crate) const MAX_GUEST_TEXT: usize = 4096;

/// Whether `c` must not reach a terminal or a log as itself: every control character (C0, DEL
/// and C1, among them U+009B, the one-character CSI that starts terminal escape sequences), the
/// line and paragraph separators (forged log lines), and the bidirectional controls that make
/// text display in another order than it reads (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069).
pub(crate) fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Makes guest bytes safe to print: lossy UTF-8, unprintable characters escaped (so no terminal
/// escape sequences, reordered text or forged log lines), capped at [`MAX_GUEST_TEXT`] characters.
pub(crate) fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len().min(MAX_GUEST_TEXT));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_GUEST_TEXT {
            out.push('…');
            break;
        }
        if unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_and_caps() {
        assert_eq!(sanitize(b"a\x1b[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert_eq!(sanitize(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(sanitize(&vec![b'a'; 10_000]).chars().count(), MAX_GUEST_TEXT + 1);
    }

    #[test]
    fn sanitize_escapes_c1_controls_bidi_overrides_and_line_separators() {
        // U+009B is CSI on its own: `\u{9b}31m` turns a terminal red just as ESC [ 31m does.
        assert_eq!(sanitize("a\u{9b}31mb".as_bytes()), "a\\u{9b}31mb");
        for c in ['\u{80}', '\u{85}', '\u{9f}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{2028}', '\u{61c}'] {
            let text = format!("x{c}y");
            let clean = sanitize(text.as_bytes());
            assert!(!clean.contains(c), "{c:?} passed: {clean:?}");
            assert_eq!(clean, format!("x{}y", c.escape_default()));
        }
        // Printable text beyond ASCII stays as it is.
        assert_eq!(sanitize("grüße, 東京, ₿".as_bytes()), "grüße, 東京, ₿");
    }

    #[test]
    fn page_fault_message_names_address_and_access() {
        let f = GuestFault {
            kind: FaultKind::PageFault,
            rip: 0x201000,
            address: Some(0xdead0000),
            error_code: Some(0x4),
            stack_overflow: false,
        };
        assert_eq!(
            f.to_string(),
            "raised a page fault (#PF) at rip 0x201000, address 0xdead0000 (read, page not present)"
        );
    }
}
