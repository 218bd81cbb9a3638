//! Status and error codes that cross the boundary as numbers.

/// Status byte that opens a call result or host-call response.
pub mod status {
    /// Success: a value follows.
    pub const OK: u8 = 0;
    /// Failure: an error code (u32) and a message (string) follow.
    pub const ERR: u8 = 1;
}

/// Why a guest refused or failed a call (in a call result with status [`status::ERR`]).
pub mod call {
    /// No exported function has the index the host sent.
    pub const NO_SUCH_FUNCTION: u32 = 1;
    /// The arguments do not decode as the function's parameter types.
    pub const BAD_ARGUMENTS: u32 = 2;
    /// The guest function returned an error of its own.
    pub const FUNCTION_FAILED: u32 = 3;
    /// The result does not fit in the output buffer.
    pub const RESULT_TOO_LARGE: u32 = 4;
}

/// Why the host refused or failed a host call (in a host-call response with status ERR).
pub mod host_call {
    /// No host function of that name is registered.
    pub const NOT_FOUND: u32 = 1;
    /// The arguments do not match the host function's parameter types.
    pub const BAD_ARGUMENTS: u32 = 2;
    /// The host function returned an error.
    pub const FAILED: u32 = 3;
    /// The host function's result does not fit in the input buffer.
    pub const REFUSED: u32 = 5;
}

/// Log levels of a log message.
pub mod log_level {
    /// Error.
    pub const ERROR: u8 = 1;
    /// Warning.
    pub const WARN: u8 = 2;
    /// Information.
    pub const INFO: u8 = 3;
    /// Debugging detail.
    pub const DEBUG: u8 = 4;
    /// Tracing detail.
    pub const TRACE: u8 = 5;
}

/// Why a guest aborted (first field of an abort message).
pub mod abort {
    /// The guest panicked; the message is the panic message. (The host reports every abort
    /// as a panic with its message; the code is for guests' own use.)
    pub const PANIC: u32 = 1;
}
