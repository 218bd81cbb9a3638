//! The run loop: enter the guest, serve its crossings, turn every other exit into an error.

use super::builder::LogRecord;
use super::Core;
use crate::error::{sanitize, FaultKind, GuestFault};
use crate::func::host::{BoxError, HostCallFailure};
use crate::mem::layout::FAULT_STACK_TOP;
use crate::mem::x86::has_error_code;
use crate::vmm::interrupt::StopReason;
use crate::vmm::Exit;
use crate::Error;
use glint_abi::wire::{self, Full};
use glint_abi::{code, port};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A host function failure during a call, kept to explain a guest failure that follows it.
pub(crate) enum HostFailure {
    Failed { name: String, source: BoxError, message: String },
    NotFound { name: String, message: String },
}

impl HostFailure {
    /// The message the guest received, sanitised as guest text is.
    pub(crate) fn message(&self) -> &str {
        match self {
            HostFailure::Failed { message, .. } | HostFailure::NotFound { message, .. } => message,
        }
    }
}

/// The message of a caught panic, when it is text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// What the last call did, for metrics and for spotting exit storms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// VM exits, the final one included.
    pub exits: u64,
    /// Host calls the guest made.
    pub host_calls: u64,
    /// Log lines the guest wrote.
    pub log_lines: u64,
    /// Bytes of log text the guest wrote (kept or dropped).
    pub log_bytes: u64,
    /// Log lines dropped because the call exceeded its log budget.
    pub log_lines_dropped: u64,
}

/// What a completed call left in the output buffer.
pub(crate) struct CallOutput {
    pub(crate) body: Vec<u8>,
    pub(crate) host_failure: Option<HostFailure>,
}

impl Core {
    /// Runs until the guest returns (initialisation).
    pub(super) fn run_to_return(&mut self) -> Result<Vec<u8>, Error> {
        self.run_call("<init>").map(|o| o.body)
    }

    /// Runs one call to completion; on failure the sandbox is poisoned.
    ///
    /// The sandbox counts as poisoned while the call runs: if an embedder callback's panic ever
    /// unwinds out of here, the guest is stopped mid-call and must not be entered again before a
    /// restore (its next exit would hand the next caller this call's result).
    pub(super) fn run_call(&mut self, name: &str) -> Result<CallOutput, Error> {
        self.poisoned = Some("a call was interrupted by a panic that unwound out of glint".into());
        let result = self.run_inner(name);
        self.poisoned = None;
        result.map_err(|e| self.poison(e))
    }

    fn run_inner(&mut self, name: &str) -> Result<CallOutput, Error> {
        let timeout = self.shared.call_timeout;
        let guard = self.control.begin(self.partition.immediate_exit_ptr(), timeout);
        let mut host_failure = None;
        self.stats = CallStats::default();
        loop {
            if let Some(reason) = guard.stopped() {
                tracing::debug!(function = name, exits = self.stats.exits, ?reason, "call stopped");
                return Err(match reason {
                    StopReason::Deadline => Error::Timeout(timeout.unwrap_or_default()),
                    StopReason::Killed => Error::Cancelled,
                });
            }
            guard.in_guest(true);
            let exit = self.partition.run();
            guard.in_guest(false);
            let exit = exit?;
            self.stats.exits += 1;
            match exit {
                Exit::Interrupted => self.partition.clear_immediate_exit(),
                Exit::Out { port: p, size: 1, value } => match p {
                    port::RETURN => {
                        let body = self.read_output()?;
                        tracing::trace!(
                            function = name,
                            exits = self.stats.exits,
                            bytes = body.len(),
                            "guest returned"
                        );
                        self.at_return = true;
                        return Ok(CallOutput { body, host_failure });
                    }
                    port::HOST_CALL => {
                        self.stats.host_calls += 1;
                        if self.stats.host_calls > self.shared.limits.max_host_calls {
                            return Err(Error::LimitExceeded {
                                what: "host calls per guest call",
                                limit: self.shared.limits.max_host_calls,
                            });
                        }
                        if let Some(f) = self.host_call()? {
                            host_failure = Some(f);
                        }
                    }
                    port::LOG => self.log()?,
                    port::ABORT => return Err(self.abort()?),
                    port::EXCEPTION => return Err(self.fault(value)?),
                    other => return Err(Error::Protocol { detail: format!("write to port {other:#x}") }),
                },
                Exit::Out { port: p, size, .. } => {
                    return Err(Error::Protocol {
                        detail: format!("{size}-byte write to port {p:#x}; glint ports take 1 byte"),
                    })
                }
                Exit::In { port: p } => return Err(Error::Protocol { detail: format!("read from port {p:#x}") }),
                Exit::Mmio { addr, write } => return Err(Error::MemoryViolation { addr, write }),
                Exit::Hlt => return Err(Error::GuestCrashed { reason: "the vCPU halted".into() }),
                Exit::Shutdown => {
                    return Err(Error::GuestCrashed {
                        reason: "triple fault (the exception handlers themselves faulted)".into(),
                    })
                }
                Exit::InternalError => {
                    return Err(Error::GuestCrashed {
                        reason: "KVM internal error (the guest could not be emulated)".into(),
                    })
                }
                Exit::FailEntry(code) => {
                    return Err(Error::GuestCrashed {
                        reason: format!("the vCPU could not be entered (reason {code:#x})"),
                    })
                }
                Exit::Other(what) => return Err(Error::GuestCrashed { reason: format!("unexpected exit {what}") }),
            }
        }
    }

    /// Copies the frame in the output buffer out of guest memory, once, checked against the
    /// buffer's size.
    fn read_output(&self) -> Result<Vec<u8>, Error> {
        let mut prefix = [0u8; wire::LEN_PREFIX];
        self.partition.read(self.layout.output_addr, &mut prefix)?;
        let capacity = usize::try_from(self.layout.output_size).unwrap_or(usize::MAX);
        let len =
            wire::frame_len(prefix, capacity).map_err(|e| Error::Protocol { detail: format!("output frame: {e}") })?;
        let mut body = vec![0u8; len];
        self.partition.read(self.layout.output_addr + wire::LEN_PREFIX as u64, &mut body)?;
        Ok(body)
    }

    /// Writes a host-call response frame into the input buffer.
    fn respond(&mut self, frame: Result<Vec<u8>, Full>) -> Result<(), Error> {
        let refused = |detail: String| {
            wire::frame_vec(|v| wire::put_err(v, code::host_call::REFUSED, detail.as_bytes()))
                .map_err(|_| Error::Protocol { detail: "cannot encode a host-call refusal".into() })
        };
        let frame = match frame {
            Ok(f) if f.len() as u64 <= self.layout.input_size => f,
            Ok(f) => refused(format!(
                "result of {} bytes exceeds the {}-byte input buffer",
                f.len(),
                self.layout.input_size
            ))?,
            Err(Full) => refused("result cannot be encoded".into())?,
        };
        self.partition.write(self.layout.input_addr, &frame)
    }

    fn host_call(&mut self) -> Result<Option<HostFailure>, Error> {
        let body = self.read_output()?;
        let (name, argc, args) = wire::read_host_call_head(&body)
            .map_err(|e| Error::Protocol { detail: format!("malformed host call: {e}") })?;
        // `?name`: Debug escapes control characters a guest may have put in the name.
        let _span = tracing::info_span!("host_call", function = ?name).entered();
        let Some(f) = self.shared.host_fns.get(name) else {
            tracing::debug!(function = ?name, "guest called an unregistered host function");
            let msg = format!("no host function named `{name}`");
            self.respond(wire::frame_vec(|v| wire::put_err(v, code::host_call::NOT_FOUND, msg.as_bytes())))?;
            let message = sanitize(msg.as_bytes());
            return Ok(Some(HostFailure::NotFound { name: sanitize(name.as_bytes()), message }));
        };
        let call = f.call.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| call(args, argc)));
        match outcome {
            Err(panic) => Err(Error::HostFunctionPanicked { name: name.to_owned(), message: panic_message(&*panic) }),
            Ok(Ok(value)) => {
                self.respond(wire::frame_vec(|v| wire::put_ok(v, value.as_value_ref())))?;
                Ok(None)
            }
            Ok(Err(HostCallFailure::BadArguments(msg))) => {
                let msg = format!("`{name}` {msg}");
                self.respond(wire::frame_vec(|v| wire::put_err(v, code::host_call::BAD_ARGUMENTS, msg.as_bytes())))?;
                Ok(None)
            }
            Ok(Err(HostCallFailure::Failed(source))) => {
                let msg = source.to_string();
                self.respond(wire::frame_vec(|v| wire::put_err(v, code::host_call::FAILED, msg.as_bytes())))?;
                Ok(Some(HostFailure::Failed { name: name.to_owned(), source, message: sanitize(msg.as_bytes()) }))
            }
        }
    }

    fn log(&mut self) -> Result<(), Error> {
        let body = self.read_output()?;
        let (level, message) =
            wire::read_log(&body).map_err(|e| Error::Protocol { detail: format!("malformed log message: {e}") })?;
        self.stats.log_lines += 1;
        let budget = self.shared.limits.max_log_bytes.saturating_sub(self.stats.log_bytes);
        self.stats.log_bytes = self.stats.log_bytes.saturating_add(message.len() as u64);
        if (message.len() as u64) > budget {
            if self.stats.log_lines_dropped == 0 {
                tracing::warn!(
                    target: "glint::guest",
                    limit = self.shared.limits.max_log_bytes,
                    "guest log output exceeds the per-call limit; dropping the rest"
                );
            }
            self.stats.log_lines_dropped += 1;
            return Ok(());
        }
        let level = match level {
            code::log_level::ERROR => tracing::Level::ERROR,
            code::log_level::WARN => tracing::Level::WARN,
            code::log_level::DEBUG => tracing::Level::DEBUG,
            code::log_level::TRACE => tracing::Level::TRACE,
            _ => tracing::Level::INFO,
        };
        let record = LogRecord { level, message: sanitize(message) };
        match level {
            tracing::Level::ERROR => tracing::error!(target: "glint::guest", message = %record.message),
            tracing::Level::WARN => tracing::warn!(target: "glint::guest", message = %record.message),
            tracing::Level::INFO => tracing::info!(target: "glint::guest", message = %record.message),
            tracing::Level::DEBUG => tracing::debug!(target: "glint::guest", message = %record.message),
            tracing::Level::TRACE => tracing::trace!(target: "glint::guest", message = %record.message),
        }
        if let Some(hook) = &self.shared.on_log {
            catch_unwind(AssertUnwindSafe(|| hook(&record)))
                .map_err(|panic| Error::CallbackPanicked { callback: "on_log", message: panic_message(&*panic) })?;
        }
        Ok(())
    }

    fn abort(&self) -> Result<Error, Error> {
        let body = self.read_output()?;
        Ok(match wire::read_abort(&body) {
            Ok((_code, message)) => Error::GuestPanic { message: sanitize(message) },
            Err(e) => Error::Protocol { detail: format!("malformed abort message: {e}") },
        })
    }

    /// Builds the fault report from the exception frame the CPU pushed on the fault stack.
    fn fault(&self, vector: u8) -> Result<Error, Error> {
        let has_code = has_error_code(vector);
        let frame = FAULT_STACK_TOP - if has_code { 48 } else { 40 };
        let error_code = if has_code { Some(self.partition.read_u64(frame)?) } else { None };
        let rip = self.partition.read_u64(frame + if has_code { 8 } else { 0 })?;
        let kind = FaultKind::from_vector(vector);
        let address = if kind == FaultKind::PageFault { Some(self.partition.sregs().cr2) } else { None };
        let stack_overflow = address.is_some_and(|a| a >= self.layout.guard_addr && a < self.layout.stack_addr);
        Ok(Error::GuestFault(GuestFault { kind, rip, address, error_code, stack_overflow }))
    }
}
