//! The public error type, its stable classification, and the guest-fault description.

use crate::func::Signature;
use crate::image::{ImageError, TrustError};
use crate::mem::layout::LayoutError;
use crate::vmm::VmmError;
use glint_abi::wire::DecodeError;
use glint_abi::ValueType;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// An error a host function returned, kept for the caller (shared, so [`Error`] can be cloned).
pub type HostError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in glint, in the caller's terms.
///
/// Each layer below has its own error, wrapped here as the source of one variant
/// ([`ImageError`], [`LayoutError`], [`VmmError`], [`ProtocolError`], [`ConfigError`]); a
/// variant's message never repeats its source's, so print the chain (`{:#}`-style, or walk
/// [`std::error::Error::source`]). [`Error::kind`] classifies every error into a small stable set.
/// Errors marked *poisons* leave the sandbox refusing further calls with [`Error::Poisoned`]:
/// the guest stopped somewhere in the middle and its state cannot be trusted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The guest image was refused before anything was mapped.
    #[error("guest image refused")]
    Image(#[from] ImageError),
    /// The guest image failed its trust policy (digest pin, signature) before it was parsed.
    #[error("guest image refused by the trust policy")]
    Trust(#[from] TrustError),
    /// The memory sizes do not make a layout.
    #[error("invalid memory configuration")]
    Layout(#[from] LayoutError),
    /// Another setting is out of range.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// KVM or the operating system failed underneath the sandbox (poisons).
    #[error("the hypervisor failed")]
    Vmm(#[from] VmmError),
    /// The guest panicked (poisons).
    #[error("guest panicked: {message}")]
    GuestPanic {
        /// The panic message: guest-supplied text (sanitised, capped).
        message: String,
    },
    /// The guest raised a CPU exception (poisons).
    #[error("guest {0}")]
    GuestFault(GuestFault),
    /// The guest ended in a state glint cannot report in detail, e.g. a triple fault (poisons).
    #[error("guest crashed: {0}")]
    GuestCrashed(Crash),
    /// The guest accessed guest-physical memory that is not RAM (poisons).
    #[error("guest {} unmapped guest-physical address {addr:#x}", if *write { "wrote to" } else { "read from" })]
    MemoryViolation {
        /// The address.
        addr: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// The guest broke the ABI: malformed message, wrong port width, wrong result type (poisons).
    #[error("guest broke the glint ABI")]
    Protocol(#[from] ProtocolError),
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
        /// The function's error message: guest-supplied text (sanitised, capped).
        message: String,
    },
    /// A host function returned an error, the guest passed it on, and its call failed.
    #[error("host function `{name}` failed")]
    HostFunction {
        /// Host function name.
        name: String,
        /// The host function's own error, shared so that `Error` is `Clone`: to get its type
        /// back, downcast this field (`source.downcast_ref::<MyError>()`), not the source chain.
        #[source]
        source: HostError,
    },
    /// The guest called a host function that is not registered, and its call failed after it.
    #[error("guest called unregistered host function `{name}`")]
    NoSuchHostFunction {
        /// The name the guest asked for.
        name: String,
    },
    /// The guest declares imports this sandbox does not provide, or provides with other types;
    /// found at initialisation, before any call.
    #[error("{0}")]
    Imports(ImportErrors),
    /// A host function panicked; the guest was not resumed (poisons).
    #[error("host function `{name}` panicked: {panic}")]
    HostFunctionPanicked {
        /// Host function name.
        name: String,
        /// What it panicked with.
        panic: PanicPayload,
    },
    /// An embedder callback other than a host function (the log hook) panicked; the guest was not
    /// resumed (poisons).
    #[error("the {callback} callback panicked: {panic}")]
    CallbackPanicked {
        /// Which callback.
        callback: &'static str,
        /// What it panicked with.
        panic: PanicPayload,
    },
    /// The guest exceeded a per-call limit (poisons).
    #[error("guest exceeded the limit of {value} {limit}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its value.
        value: u64,
    },
    /// The call ran past its deadline and was stopped (poisons).
    #[error("guest call timed out after {0:?}")]
    Timeout(Duration),
    /// The call was stopped by an [`InterruptHandle`](crate::InterruptHandle) (poisons).
    #[error("guest call was cancelled")]
    Cancelled,
    /// A snapshot file could not be written, or was refused at load.
    #[error("snapshot file refused")]
    SnapshotFile(#[from] crate::sandbox::SnapshotFileError),
    /// The snapshot cannot be restored into this sandbox.
    #[error("snapshot does not fit this sandbox: it was taken from a sandbox of {0}")]
    SnapshotMismatch(SnapshotMismatch),
    /// A [`SandboxPool`](crate::SandboxPool) had no sandbox to lend.
    #[error("sandbox pool of {max} has none to lend")]
    PoolExhausted {
        /// The pool's size.
        max: usize,
        /// Why.
        #[source]
        why: PoolEmpty,
    },
    /// The gdb stub could not start: a non-loopback address, or the socket failed.
    #[error("the gdb stub failed")]
    Debugger(#[from] DebuggerError),
    /// An earlier call failed mid-way; the sandbox refuses calls until restored.
    #[error("sandbox is poisoned by an earlier failure; restore a snapshot or create a new sandbox")]
    Poisoned {
        /// The failure that poisoned it.
        #[source]
        cause: Box<Error>,
    },
}

/// The stable classification of an [`Error`], for callers that map errors to responses (an HTTP
/// status, an exit code, an audit event) without matching every variant. New variants of
/// [`Error`] fall into one of these; the set itself changes only with a major version.
///
/// | kind | what happened | `glint serve` answers |
/// | --- | --- | --- |
/// | `GuestFault` | the guest raised a CPU exception, touched memory it has not, broke the ABI, or crashed | 500 |
/// | `GuestError` | the guest panicked, or its function returned an error of its own | 500 |
/// | `Timeout` | the call ran past its deadline | 504 |
/// | `Killed` | the call was stopped through an [`InterruptHandle`](crate::InterruptHandle) | 503 |
/// | `ResourceLimit` | a limit was hit: host calls or log bytes of a call ([`Limit`]), host memory or file descriptors, pool exhausted | 503 |
/// | `ImageRefused` | the guest image (or a snapshot of it) was refused, or its imports are not provided | 500 at start |
/// | `BadRequest` | the caller asked wrongly: unknown function, wrong signature, arguments too large, a poisoned sandbox, an invalid setting | 400 / 404 |
/// | `HostFunction` | a host function failed, panicked or is missing, and the guest call failed after it | 502 |
/// | `HostUnavailable` | this host cannot run sandboxes: no KVM, a missing capability | 503 |
/// | `Internal` | a glint bug, an unexpected OS failure, or an embedder callback that panicked | 500 |
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
    /// The stable classification of this error (see [`ErrorKind`]). Exhaustive on purpose: a new
    /// variant must decide.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::GuestFault(_) | Error::GuestCrashed(_) | Error::MemoryViolation { .. } | Error::Protocol(_) => {
                ErrorKind::GuestFault
            }
            Error::GuestPanic { .. } | Error::GuestFunction { .. } => ErrorKind::GuestError,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Cancelled => ErrorKind::Killed,
            Error::LimitExceeded { .. } | Error::PoolExhausted { .. } => ErrorKind::ResourceLimit,
            Error::Vmm(e) if e.is_resource_limit() => ErrorKind::ResourceLimit,
            Error::Vmm(VmmError::NoKvm { .. } | VmmError::MissingCapability { .. }) => ErrorKind::HostUnavailable,
            Error::Vmm(_) | Error::CallbackPanicked { .. } => ErrorKind::Internal,
            Error::Image(_)
            | Error::Trust(_)
            | Error::SnapshotMismatch(_)
            | Error::Imports(_)
            | Error::SnapshotFile(_) => ErrorKind::ImageRefused,
            Error::Layout(_)
            | Error::Config(_)
            | Error::NoSuchFunction { .. }
            | Error::SignatureMismatch { .. }
            | Error::ArgumentsTooLarge { .. }
            | Error::Poisoned { .. }
            | Error::Debugger(DebuggerError::NotLoopback { .. }) => ErrorKind::BadRequest,
            Error::Debugger(DebuggerError::Socket { .. }) => ErrorKind::Internal,
            Error::HostFunction { .. } | Error::NoSuchHostFunction { .. } | Error::HostFunctionPanicked { .. } => {
                ErrorKind::HostFunction
            }
        }
    }

    /// Whether this error leaves the sandbox poisoned. Exhaustive on purpose: a new variant must
    /// decide.
    pub fn poisons(&self) -> bool {
        match self {
            Error::GuestPanic { .. }
            | Error::GuestFault(_)
            | Error::GuestCrashed(_)
            | Error::MemoryViolation { .. }
            | Error::Protocol(_)
            | Error::HostFunctionPanicked { .. }
            | Error::CallbackPanicked { .. }
            | Error::Timeout(_)
            | Error::LimitExceeded { .. }
            | Error::Cancelled
            | Error::Vmm(_) => true,
            Error::Image(_)
            | Error::Trust(_)
            | Error::Layout(_)
            | Error::Config(_)
            | Error::NoSuchFunction { .. }
            | Error::SignatureMismatch { .. }
            | Error::ArgumentsTooLarge { .. }
            | Error::GuestFunction { .. }
            | Error::HostFunction { .. }
            | Error::NoSuchHostFunction { .. }
            | Error::Imports(_)
            | Error::SnapshotMismatch(_)
            | Error::SnapshotFile(_)
            | Error::PoolExhausted { .. }
            | Error::Debugger(_)
            | Error::Poisoned { .. } => false,
        }
    }
}

/// What a caught panic carried: its message when it was text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicPayload(String);

impl PanicPayload {
    pub(crate) fn of(panic: &(dyn std::any::Any + Send)) -> PanicPayload {
        PanicPayload(
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into()),
        )
    }

    /// Stands for a panic that unwound through a call: a sandbox is poisoned with it while a
    /// call runs, and stays so if one does.
    pub(crate) fn unwound() -> PanicPayload {
        PanicPayload("a panic unwound out of a call on this sandbox".into())
    }

    /// The panic's message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A setting outside what glint accepts (memory sizes are [`LayoutError`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A pool must have room for at least one sandbox.
    #[error("a sandbox pool needs room for at least one sandbox (max_sandboxes is 0)")]
    EmptyPool,
    /// The interrupt signal must be a real-time signal.
    #[error("SIGRTMIN+{offset} is not a real-time signal")]
    SignalOutOfRange {
        /// The offset asked for.
        offset: i32,
    },
    /// The interrupt signal is fixed once the first sandbox exists.
    #[error("the interrupt signal is already SIGRTMIN+{current}; choose it before creating a sandbox")]
    SignalAlreadyChosen {
        /// The signal in use.
        current: i32,
    },
    /// The embedder already handles the interrupt signal.
    #[error(
        "SIGRTMIN+{offset} already has a handler in this process; pick a free one with \
         glint::set_interrupt_signal_offset before creating sandboxes"
    )]
    SignalInUse {
        /// The signal's offset from SIGRTMIN.
        offset: i32,
    },
}

/// Why the gdb stub could not serve a debugger (feature `gdb`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DebuggerError {
    /// The stub listens on loopback addresses only: anyone who reaches it controls the guest.
    #[error("the gdb stub listens on loopback addresses only, not {addr}")]
    NotLoopback {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },
    /// Listening, accepting or starting the protocol thread failed.
    #[error("cannot {doing} for gdb")]
    Socket {
        /// What failed: "listen on 127.0.0.1:1234", "accept a connection", ...
        doing: String,
        /// The system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// Which message of the boundary a [`ProtocolError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// The function table (exports and imports) at the end of initialisation.
    FunctionTable,
    /// A call's result.
    CallResult,
    /// A host-call request.
    HostCall,
    /// A log message.
    Log,
    /// An abort message.
    Abort,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Message::FunctionTable => "function table",
            Message::CallResult => "call result",
            Message::HostCall => "host call",
            Message::Log => "log message",
            Message::Abort => "abort message",
        })
    }
}

/// How a guest broke the ABI (docs/ABI.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An access to a glint port wider than one byte.
    #[error("{size}-byte write to port {port:#x}; glint ports take 1 byte")]
    PortWidth {
        /// The port.
        port: u16,
        /// Bytes written.
        size: usize,
    },
    /// A write to a port that is not one of the guest's (the I/O bitmap should make this a fault).
    #[error("write to port {port:#x}, which is not a glint port")]
    UnknownPort {
        /// The port.
        port: u16,
    },
    /// A read from a port: never served.
    #[error("read from port {port:#x}")]
    PortRead {
        /// The port.
        port: u16,
    },
    /// A message in the output buffer did not decode.
    #[error("malformed {message}")]
    Malformed {
        /// Which message.
        message: Message,
        /// The decoder's error.
        #[source]
        source: DecodeError,
    },
    /// A call returned another type than the function declares.
    #[error("`{function}` returned {actual}, but declares {declared}")]
    WrongResultType {
        /// The function.
        function: String,
        /// The declared result type.
        declared: ValueType,
        /// The type of the value returned.
        actual: ValueType,
    },
    /// A function of the table has an empty name or one with unprintable characters.
    #[error("function name {name:?} in the function table is empty or holds control characters")]
    BadName {
        /// The name, sanitised.
        name: String,
    },
    /// A name appears twice among the exports or among the imports.
    #[error("function `{name}` is declared twice in the function table")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// A call ended with an error code the ABI does not define, or one a guest may not send.
    #[error("guest ended `{function}` with error code {code}, which it may not send")]
    UnexpectedCode {
        /// The function.
        function: String,
        /// The code.
        code: u32,
    },
}

/// Why a snapshot does not fit a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotMismatch {
    /// Taken from a sandbox of another image.
    OtherImage,
    /// Taken from a sandbox with another memory layout.
    OtherLayout,
}

impl fmt::Display for SnapshotMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotMismatch::OtherImage => "another image",
            SnapshotMismatch::OtherLayout => "another memory layout",
        })
    }
}

/// Why a pool had nothing to lend.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolEmpty {
    /// Every sandbox is lent out.
    #[error("all {lent} are lent out")]
    AllLent {
        /// How many.
        lent: usize,
    },
    /// Creating a sandbox failed.
    #[error("creating a sandbox failed")]
    CreationFailed(#[source] Box<Error>),
    /// None became ready within the wait.
    #[error("{lent} lent out, {creating} being created, {restoring} being restored; none ready in time")]
    NoneReadyInTime {
        /// Lent out.
        lent: usize,
        /// Being created.
        creating: usize,
        /// Being restored.
        restoring: usize,
    },
    /// The pool is being dropped.
    #[error("the pool is shutting down")]
    ShuttingDown,
}

/// A per-call limit (see [`Limits`](crate::Limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Host calls one guest call may make ([`Limits::max_host_calls`](crate::Limits::max_host_calls)).
    HostCalls,
    /// Bytes of log text one guest call may write, when a line past them ends the call
    /// ([`Limits::max_log_bytes`](crate::Limits::max_log_bytes) with
    /// [`LogOverflow::EndCall`](crate::LogOverflow::EndCall)).
    LogBytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::HostCalls => "host calls per guest call",
            Limit::LogBytes => "bytes of log text per guest call",
        })
    }
}

/// How the guest ended when it could not be described as a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Crash {
    /// The vCPU executed `hlt` (only the exception stubs can).
    Halted,
    /// A triple fault: the exception handlers themselves faulted.
    TripleFault,
    /// KVM could not emulate the guest.
    EmulationFailed,
    /// The vCPU could not be entered; the hardware's reason code.
    EntryFailed(u64),
    /// An exit glint does not expect, by its KVM name.
    UnexpectedExit(&'static str),
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crash::Halted => f.write_str("the vCPU halted"),
            Crash::TripleFault => f.write_str("triple fault (the exception handlers themselves faulted)"),
            Crash::EmulationFailed => f.write_str("KVM internal error (the guest could not be emulated)"),
            Crash::EntryFailed(code) => write!(f, "the vCPU could not be entered (reason {code:#x})"),
            Crash::UnexpectedExit(name) => write!(f, "unexpected exit {name}"),
        }
    }
}

/// One import the guest declares that the sandbox does not provide as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportError {
    /// No host function of that name is registered.
    Missing {
        /// The import's name.
        name: String,
        /// Its declared signature.
        signature: Signature,
    },
    /// A host function of that name is registered with another signature.
    Mismatched {
        /// The import's name.
        name: String,
        /// What the guest declares.
        declared: Signature,
        /// What the host function takes and returns.
        provided: Signature,
    },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Missing { name, signature } => write!(f, "`{name}{signature}` is not provided"),
            ImportError::Mismatched { name, declared, provided } => {
                write!(f, "`{name}` is declared {declared} but the host function is {provided}")
            }
        }
    }
}

/// Every import of a guest that the sandbox does not provide as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the guest imports {} host function(s) this sandbox does not provide as declared: ", self.0.len())?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
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
    /// The core file written for this fault, when the sandbox writes crash dumps
    /// ([`SandboxBuilder::core_dumps`](crate::SandboxBuilder::core_dumps)).
    pub core_dump: Option<std::path::PathBuf>,
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
        if let Some(path) = &self.core_dump {
            write!(f, "; core dumped to {}", path.display())?;
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
            core_dump: None,
        };
        assert_eq!(
            f.to_string(),
            "raised a page fault (#PF) at rip 0x201000, address 0xdead0000 (read, page not present)"
        );
        let dumped = GuestFault { core_dump: Some("/tmp/cores/glint-0.core".into()), ..f };
        assert!(dumped.to_string().ends_with("(read, page not present); core dumped to /tmp/cores/glint-0.core"));
    }
}
