//! I/O ports: the only ways out of a guest.
//!
//! A guest at CPL3 may write (`out dx, al`, one byte) to exactly the ports in [`GUEST_PORTS`]; the
//! host's TSS I/O permission bitmap makes every access to any other port fault. The bitmap has no
//! direction, so an `in` or string I/O on a guest port does exit: the host ends the call with a
//! protocol error for `in`/`ins` and for accesses wider than one byte. [`EXCEPTION`] is reserved
//! for the host-owned CPL0 exception stubs.

/// The guest finished initialisation or a call; the result is in the output buffer.
pub const RETURN: u16 = 0xE0;
/// The guest calls a host function; the request is in the output buffer, the response comes back
/// in the input buffer.
pub const HOST_CALL: u16 = 0xE1;
/// The guest aborts (panic): an abort message is in the output buffer. The call fails.
pub const ABORT: u16 = 0xE2;
/// The guest logs a line: a log message is in the output buffer. The call goes on.
pub const LOG: u16 = 0xE3;
/// Written only by the host's CPL0 exception stubs (`out imm8, al`, 1 byte: the vector).
/// Denied to the guest by the I/O bitmap.
pub const EXCEPTION: u16 = 0xE4;

/// The ports a CPL3 guest may write.
pub const GUEST_PORTS: [u16; 4] = [RETURN, HOST_CALL, ABORT, LOG];
