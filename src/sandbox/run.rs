//! The call cycle and the run loop: write the call, enter the guest, serve its crossings, turn
//! every other exit into a typed error, decode the result.

use super::config::LogOverflow;
use super::core::Core;
use super::stats::{CallStats, LogRecord};
use crate::error::{sanitize, Crash, GuestFault, HostError, Limit, Message, PanicPayload, ProtocolError};
use crate::func::host::HostCallFailure;
use crate::mem::layout::Layout;
use crate::mem::x86::ExceptionFrame;
use crate::vmm::interrupt::StopReason;
use crate::vmm::{Exit, GuestMemory, Vcpu};
use crate::{Error, FaultKind};
use glint_abi::code::{CallError, HostCallError, LogLevel};
use glint_abi::wire::{self, Full, Sink};
use glint_abi::{port, ValueRef, ValueType};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The last host call of a guest call that failed, kept to explain a guest failure that passes
/// it on.
pub(crate) enum HostFailure {
    Failed { name: String, source: HostError },
    NotFound { name: String },
}

/// What a completed call leaves besides its result (which stays in the output buffer until it
/// is decoded from there).
pub(crate) struct CallOutput {
    pub(crate) host_failure: Option<HostFailure>,
}

/// A sink over any other sink, so one encoder can fill guest memory in place or, to size a frame
/// that did not fit, a vector.
pub(crate) struct ArgSink<'a>(&'a mut dyn Sink);

impl Sink for ArgSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.0.put(bytes)
    }
}

/// Copies the frame in the output buffer out of guest memory, once, checked against the buffer's
/// size.
fn read_output(memory: &impl GuestMemory, layout: &Layout, message: Message) -> Result<Vec<u8>, Error> {
    let mut prefix = [0u8; wire::LEN_PREFIX];
    memory.read(layout.output_addr, &mut prefix)?;
    let capacity = usize::try_from(layout.output_size).unwrap_or(usize::MAX);
    let len = wire::frame_len(prefix, capacity).map_err(|source| ProtocolError::Malformed { message, source })?;
    let mut body = vec![0u8; len];
    memory.read(layout.output_addr + wire::LEN_PREFIX as u64, &mut body)?;
    Ok(body)
}

/// A call's result as decoded straight from the output buffer.
enum Decoded<R> {
    Value(R),
    WrongType(ValueType),
    Err { code: u32, message: String },
    Malformed(glint_abi::wire::DecodeError),
}

/// Decodes the result frame at the start of `buf` (the whole output buffer) without copying
/// it first: the vCPU is stopped, so every byte read is read once and cannot change meanwhile.
fn decode_result<R>(buf: &[u8], result: ValueType, convert: impl FnOnce(ValueRef<'_>) -> Option<R>) -> Decoded<R> {
    let Some((prefix, rest)) = buf.split_first_chunk::<{ wire::LEN_PREFIX }>() else {
        return Decoded::Malformed(glint_abi::wire::DecodeError::Truncated);
    };
    let body = match wire::frame_len(*prefix, buf.len()).map(|len| rest.get(..len)) {
        Ok(Some(body)) => body,
        Ok(None) => return Decoded::Malformed(glint_abi::wire::DecodeError::Truncated),
        Err(e) => return Decoded::Malformed(e),
    };
    match wire::read_outcome(body) {
        Err(e) => Decoded::Malformed(e),
        Ok(wire::Outcome::Ok(v)) if v.ty() == result => match convert(v) {
            Some(r) => Decoded::Value(r),
            None => Decoded::WrongType(v.ty()),
        },
        Ok(wire::Outcome::Ok(v)) => Decoded::WrongType(v.ty()),
        Ok(wire::Outcome::Err { code, message }) => Decoded::Err { code, message: sanitize(message) },
    }
}

impl<T: 'static, V: Vcpu, M: GuestMemory> Core<T, V, M> {
    /// One guest call: encode the arguments straight into the input buffer, enter, serve host
    /// calls, decode the result straight from the output buffer. `encode` may run twice: the
    /// second time only to size a call that did not fit.
    pub(super) fn call<R>(
        &mut self,
        index: u32,
        name: &str,
        argc: usize,
        encode: impl Fn(&mut ArgSink<'_>) -> Result<(), Full>,
        result: ValueType,
        convert: impl FnOnce(ValueRef<'_>) -> Option<R>,
    ) -> Result<R, Error> {
        let _span = tracing::info_span!("guest_call", function = name).entered();
        self.check_not_poisoned()?;
        let layout = self.layout;
        let capacity = usize::try_from(layout.input_size).unwrap_or(usize::MAX);
        let written = self.memory.write_with(layout.input_addr, capacity, |buf| {
            let r = wire::write_frame(buf, |s| {
                wire::put_call_head(s, index, argc)?;
                encode(&mut ArgSink(s))
            });
            (r.unwrap_or(0), r)
        })?;
        if written.is_err() {
            let size = wire::frame_vec(|v| {
                wire::put_call_head(v, index, argc)?;
                encode(&mut ArgSink(v))
            })
            .map_or(usize::MAX, |f| f.len());
            return Err(Error::ArgumentsTooLarge { name: name.to_owned(), size, limit: layout.input_size });
        }
        let outcome = self.run_call(name)?;
        let output = usize::try_from(layout.output_size).unwrap_or(usize::MAX);
        let decoded = self.memory.read_with(layout.output_addr, output, |buf| decode_result(buf, result, convert))?;
        let function = || name.to_owned();
        match decoded {
            Decoded::Value(r) => Ok(r),
            Decoded::Malformed(source) => {
                Err(self.poison(ProtocolError::Malformed { message: Message::CallResult, source }.into()))
            }
            Decoded::WrongType(actual) => {
                Err(self
                    .poison(ProtocolError::WrongResultType { function: function(), declared: result, actual }.into()))
            }
            Decoded::Err { code, message } => {
                Err(match (CallError::from_number(code), outcome.host_failure) {
                    (Some(CallError::HostCallFailed), Some(HostFailure::Failed { name, source })) => {
                        Error::HostFunction { name, source }
                    }
                    (Some(CallError::HostCallFailed), Some(HostFailure::NotFound { name })) => {
                        Error::NoSuchHostFunction { name }
                    }
                    // A guest that reports a host-call failure when none failed has its own
                    // reason; report its message as its own.
                    (Some(CallError::HostCallFailed | CallError::FunctionFailed | CallError::ResultTooLarge), _) => {
                        Error::GuestFunction { name: function(), message }
                    }
                    (Some(CallError::NoSuchFunction), _) => Error::NoSuchFunction { name: function() },
                    (Some(CallError::BadArguments) | None, _) => {
                        self.poison(ProtocolError::UnexpectedCode { function: function(), code }.into())
                    }
                })
            }
        }
    }

    /// Runs until the guest returns (initialisation).
    pub(super) fn run_to_return(&mut self) -> Result<Vec<u8>, Error> {
        self.run_call("<init>")?;
        read_output(&self.memory, &self.layout, Message::CallResult).map_err(|e| self.poison(e))
    }

    /// Runs one call to completion; on failure the sandbox is poisoned.
    ///
    /// The sandbox counts as poisoned while the call runs: if an embedder callback's panic ever
    /// unwinds out of here, the guest is stopped mid-call and must not be entered again before a
    /// restore (its next exit would hand the next caller this call's result).
    pub(super) fn run_call(&mut self, name: &str) -> Result<CallOutput, Error> {
        self.poisoned =
            Some(Box::new(Error::CallbackPanicked { callback: "embedder", panic: PanicPayload::unwound() }));
        let result = self.run_inner(name);
        self.poisoned = None;
        result.map_err(|e| {
            if self.debugging() {
                // The debugged program ends here; a fault was reported to gdb at the fault.
                self.debug_end(crate::debug::Signal::Kill);
            }
            self.poison(e)
        })
    }

    fn run_inner(&mut self, name: &str) -> Result<CallOutput, Error> {
        let timeout = self.config.call_timeout;
        // A debugger sees the guest before its first instruction.
        self.debug_entry()?;
        let guard = self.control.begin(self.vcpu.immediate_exit(), timeout);
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
            if self.debugging() && guard.take_pause() {
                self.debug_pause()?;
            }
            guard.in_guest(true);
            let exit = self.vcpu.run();
            guard.in_guest(false);
            let exit = exit?;
            self.stats.exits += 1;
            match exit {
                Exit::Interrupted => self.vcpu.clear_immediate_exit(),
                Exit::Out { port: p, size: 1, value } => match p {
                    port::RETURN => {
                        tracing::trace!(function = name, exits = self.stats.exits, "guest returned");
                        self.at_return = true;
                        return Ok(CallOutput { host_failure });
                    }
                    port::HOST_CALL => {
                        self.stats.host_calls += 1;
                        let limit = self.config.limits.max_host_calls;
                        if self.stats.host_calls > limit {
                            return Err(Error::LimitExceeded { limit: Limit::HostCalls, value: limit });
                        }
                        if let Some(f) = self.host_call()? {
                            host_failure = Some(f);
                        }
                    }
                    port::LOG => self.log()?,
                    port::ABORT => return Err(self.abort()?),
                    // A breakpoint or step of gdb's goes on; anything else is a fault.
                    port::EXCEPTION if self.debug_exception(value)? => {}
                    port::EXCEPTION => return Err(self.fault(value, name)?),
                    port => return Err(ProtocolError::UnknownPort { port }.into()),
                },
                Exit::Out { port, size, .. } => return Err(ProtocolError::PortWidth { port, size }.into()),
                Exit::In { port } => return Err(ProtocolError::PortRead { port }.into()),
                Exit::Mmio { addr, write } => return Err(Error::MemoryViolation { addr, write }),
                Exit::Hlt => return Err(Error::GuestCrashed(Crash::Halted)),
                Exit::Shutdown => return Err(Error::GuestCrashed(Crash::TripleFault)),
                Exit::InternalError => return Err(Error::GuestCrashed(Crash::EmulationFailed)),
                Exit::FailEntry(code) => return Err(Error::GuestCrashed(Crash::EntryFailed(code))),
                Exit::Other(what) => return Err(Error::GuestCrashed(Crash::UnexpectedExit(what))),
            }
        }
    }

    /// Writes a host-call response frame into the input buffer: `outcome` is the body, or `None`
    /// when it could not be encoded.
    fn respond(&mut self, outcome: Option<Vec<u8>>) -> Result<(), Error> {
        let input_size = self.layout.input_size;
        let refusal = |detail: &str| {
            wire::frame_vec(|v| wire::put_err(v, HostCallError::Refused.number(), detail.as_bytes()))
                .unwrap_or_default()
        };
        let frame = match outcome.and_then(|body| wire::frame_vec(|v| v.put(&body)).ok()) {
            Some(f) if f.len() as u64 <= input_size => f,
            Some(f) => refusal(&format!("result of {} bytes exceeds the {input_size}-byte input buffer", f.len())),
            None => refusal("result cannot be encoded"),
        };
        self.memory.write(self.layout.input_addr, &frame).map_err(Error::from)
    }

    fn respond_err(&mut self, code: HostCallError, message: &str) -> Result<(), Error> {
        let mut body = Vec::new();
        let _ = wire::put_err(&mut body, code.number(), message.as_bytes());
        self.respond(Some(body))
    }

    fn host_call(&mut self) -> Result<Option<HostFailure>, Error> {
        let body = read_output(&self.memory, &self.layout, Message::HostCall)?;
        let (name, argc, args) = wire::read_host_call_head(&body)
            .map_err(|source| ProtocolError::Malformed { message: Message::HostCall, source })?;
        // `?name`: Debug escapes control characters a guest may have put in the name.
        let _span = tracing::info_span!("host_call", function = ?name).entered();
        let Some(f) = self.config.host_fns.get(name) else {
            tracing::debug!(function = ?name, "guest called an unregistered host function");
            self.respond_err(HostCallError::NotFound, &format!("no host function named `{name}`"))?;
            return Ok(Some(HostFailure::NotFound { name: sanitize(name.as_bytes()) }));
        };
        let call = f.call.clone();
        let mut out = Vec::new();
        let data = &mut self.data;
        match catch_unwind(AssertUnwindSafe(|| call(data, args, argc, &mut out))) {
            Err(panic) => Err(Error::HostFunctionPanicked { name: name.to_owned(), panic: PanicPayload::of(&*panic) }),
            Ok(Ok(())) => {
                self.respond(Some(out))?;
                Ok(None)
            }
            Ok(Err(HostCallFailure::BadArguments(e))) => {
                self.respond_err(HostCallError::BadArguments, &format!("`{name}` {e}"))?;
                Ok(None)
            }
            Ok(Err(HostCallFailure::Failed(source))) => {
                self.respond_err(HostCallError::Failed, &source.to_string())?;
                Ok(Some(HostFailure::Failed { name: name.to_owned(), source: source.into() }))
            }
        }
    }

    fn log(&mut self) -> Result<(), Error> {
        let body = read_output(&self.memory, &self.layout, Message::Log)?;
        let (level, message) =
            wire::read_log(&body).map_err(|source| ProtocolError::Malformed { message: Message::Log, source })?;
        self.stats.log_lines += 1;
        let budget = self.config.limits.max_log_bytes.saturating_sub(self.stats.log_bytes);
        self.stats.log_bytes = self.stats.log_bytes.saturating_add(message.len() as u64);
        if (message.len() as u64) > budget {
            if self.config.limits.log_overflow == LogOverflow::EndCall {
                self.stats.log_lines_dropped += 1;
                return Err(Error::LimitExceeded { limit: Limit::LogBytes, value: self.config.limits.max_log_bytes });
            }
            if self.stats.log_lines_dropped == 0 {
                tracing::warn!(
                    target: "glint::guest",
                    limit = self.config.limits.max_log_bytes,
                    "guest log output exceeds the per-call limit; dropping the rest"
                );
            }
            self.stats.log_lines_dropped += 1;
            return Ok(());
        }
        let level = match LogLevel::from_number(level) {
            Some(LogLevel::Error) => tracing::Level::ERROR,
            Some(LogLevel::Warn) => tracing::Level::WARN,
            Some(LogLevel::Debug) => tracing::Level::DEBUG,
            Some(LogLevel::Trace) => tracing::Level::TRACE,
            Some(LogLevel::Info) | None => tracing::Level::INFO,
        };
        let record = LogRecord { level, message: sanitize(message) };
        match level {
            tracing::Level::ERROR => tracing::error!(target: "glint::guest", message = %record.message),
            tracing::Level::WARN => tracing::warn!(target: "glint::guest", message = %record.message),
            tracing::Level::INFO => tracing::info!(target: "glint::guest", message = %record.message),
            tracing::Level::DEBUG => tracing::debug!(target: "glint::guest", message = %record.message),
            tracing::Level::TRACE => tracing::trace!(target: "glint::guest", message = %record.message),
        }
        if let Some(hook) = &self.config.on_log {
            catch_unwind(AssertUnwindSafe(|| hook(&record)))
                .map_err(|panic| Error::CallbackPanicked { callback: "on_log", panic: PanicPayload::of(&*panic) })?;
        }
        Ok(())
    }

    fn abort(&self) -> Result<Error, Error> {
        let body = read_output(&self.memory, &self.layout, Message::Abort)?;
        Ok(match wire::read_abort(&body) {
            Ok((_code, message)) => Error::GuestPanic { message: sanitize(message) },
            Err(source) => ProtocolError::Malformed { message: Message::Abort, source }.into(),
        })
    }

    /// The CPU's exception frame for `vector`, read from the fault stack.
    pub(super) fn exception_frame(&self, vector: u8) -> Result<ExceptionFrame, Error> {
        let mut bytes = [0u8; 48];
        let size = ExceptionFrame::size(vector) as usize;
        self.memory.read(ExceptionFrame::address(vector), bytes.get_mut(..size).unwrap_or(&mut []))?;
        Ok(ExceptionFrame::decode(vector, &bytes))
    }

    /// Builds the fault report from the exception frame the CPU pushed on the fault stack, and
    /// writes a core file if the sandbox writes them.
    fn fault(&mut self, vector: u8, function: &str) -> Result<Error, Error> {
        let frame = self.exception_frame(vector)?;
        let kind = FaultKind::from_vector(vector);
        let address = if kind == FaultKind::PageFault { Some(self.vcpu.fault_address()) } else { None };
        let stack_overflow = address.is_some_and(|a| a >= self.layout.guard_addr && a < self.layout.stack_addr);
        let mut fault =
            GuestFault { kind, rip: frame.rip, address, error_code: frame.error_code, stack_overflow, core_dump: None };
        fault.core_dump = self.dump_core(vector, &fault, function);
        Ok(Error::GuestFault(fault))
    }
}
