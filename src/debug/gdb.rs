//! A GDB remote-protocol stub for one sandbox (feature `gdb`), on the `gdbstub` crate.
//!
//! The run loop stays in charge of the vCPU. When the guest stops (before its entry, at an
//! `int3`, after a single step, at a fault, or when gdb interrupts it), the run loop calls
//! [`GdbSession::stopped`] with a [`DebugTarget`] view of the stopped guest; the session reports
//! the stop to gdb and serves gdb's requests (registers, memory, breakpoints) until gdb resumes
//! the guest, and returns how to resume it. The protocol itself runs on a thread of its own,
//! which talks to the session over channels, so that it can also watch the connection for an
//! interrupt (Ctrl-C) while the guest runs.
//!
//! What gdb can do is limited to the guest's own state: memory accesses outside the guest's
//! regions (see [`super::guest_regions`]) fail, and register writes keep the segment selectors
//! and the privileged RFLAGS bits (IF, IOPL, NT, RF, VM, ...) as they were, so a debugger cannot
//! lift the guest out of CPL3 or give it port access. Software breakpoints are `int3` bytes the
//! session writes into guest code through host memory access (code stays read-only for the
//! guest) and removes again when gdb removes them, detaches or disconnects. The stub listens on
//! loopback addresses only, accepts one connection, and exists only when asked for.

use super::{readable_prefix, FpuRegs, GuestRegs, ProgramInfo, Region, Signal};
use crate::error::DebuggerError;
use crate::func::host::BoxError;
use crate::Error;
use gdbstub::common::Signal as GdbSignal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::auxv::{Auxv, AuxvOps};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep, SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use std::collections::BTreeMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The stopped guest, as the session sees it: registers and memory. Implemented by the run
/// loop over the vCPU (and by a fake in the tests). The session checks every address against
/// the guest's regions before it calls these.
pub(crate) trait DebugTarget {
    /// The guest's registers as of the stop.
    fn regs(&mut self) -> Result<(GuestRegs, FpuRegs), BoxError>;
    /// Replaces the guest's registers (already sanitised by the session).
    fn set_regs(&mut self, regs: &GuestRegs, fpu: &FpuRegs) -> Result<(), BoxError>;
    /// Copies guest memory at `addr` into `buf`.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BoxError>;
    /// Copies `bytes` into guest memory at `addr`, read-only code pages included.
    fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), BoxError>;
}

/// Why the guest stopped, as the run loop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Before the guest's first instruction.
    Entry,
    /// An exception reached glint's stub: `int3` (#BP, `rip` after the `int3`), a single step
    /// or the guest's own trap flag (#DB), or a fault.
    Exception { vector: u8 },
    /// The guest was interrupted at gdb's request.
    Interrupted,
}

/// How the run loop goes on after a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Run until the next stop.
    Continue,
    /// Run one instruction (set RFLAGS.TF; the #DB that follows is the next stop).
    Step,
    /// The debugger is gone (detached or disconnected); every breakpoint has been removed.
    /// Run on undebugged: a fault is then an ordinary fault.
    Detach,
    /// gdb asked to kill the guest: end the call.
    Kill,
}

/// How the debugged program ended, for gdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The guest finished its work.
    Exited(u8),
    /// The guest was stopped by a fault (or a kill, a deadline).
    Terminated(Signal),
}

/// Called from the protocol thread when gdb sends an interrupt while the guest runs; it must
/// make the run loop stop the guest and report [`Stop::Interrupted`].
pub(crate) type Interrupt = Arc<dyn Fn() + Send + Sync>;

/// A loopback socket waiting for gdb to connect, for
/// [`UninitSandbox::attach_gdb`](crate::UninitSandbox::attach_gdb) (feature `gdb`).
///
/// Bind it first (port 0 picks a free port; [`local_addr`](Self::local_addr) says which), tell
/// the person or test with gdb where to connect, then attach it to a sandbox: that waits for
/// the connection. One server serves one connection.
#[derive(Debug)]
pub struct GdbServer {
    listener: TcpListener,
}

fn socket_error(doing: String) -> impl FnOnce(io::Error) -> Error {
    move |source| DebuggerError::Socket { doing, source: Arc::new(source) }.into()
}

impl GdbServer {
    /// Listens on `addr`, which must be a loopback address.
    ///
    /// # Errors
    /// [`DebuggerError::NotLoopback`] for any other address, [`DebuggerError::Socket`] if the
    /// address cannot be bound.
    pub fn bind(addr: SocketAddr) -> Result<GdbServer, Error> {
        if !addr.ip().is_loopback() {
            return Err(DebuggerError::NotLoopback { addr }.into());
        }
        let listener = TcpListener::bind(addr).map_err(socket_error(format!("listen on {addr}")))?;
        Ok(GdbServer { listener })
    }

    /// The address gdb connects to (`target remote ADDR`).
    ///
    /// # Errors
    /// [`DebuggerError::Socket`] if the system cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(socket_error("read the listening address".into()))
    }

    /// Waits for gdb to connect, then starts the protocol for a guest whose memory is
    /// `regions`. The listener closes: one session, one client.
    pub(crate) fn accept(
        self,
        regions: Vec<Region>,
        program: ProgramInfo,
        interrupt: Interrupt,
    ) -> Result<GdbSession, Error> {
        let (stream, peer) = self.listener.accept().map_err(socket_error("accept a connection".into()))?;
        drop(self.listener);
        tracing::info!(%peer, "gdb connected");
        GdbSession::start(stream, regions, program, interrupt)
    }
}

/// Requests from the protocol thread to the stopped guest.
#[derive(Debug)]
enum ToVcpu {
    ReadRegs,
    WriteRegs(Box<(GuestRegs, FpuRegs)>),
    ReadMemory { addr: u64, len: usize },
    WriteMemory { addr: u64, bytes: Vec<u8> },
    AddBreakpoint(u64),
    RemoveBreakpoint(u64),
    Resume(Resume),
}

/// Answers and stop reports from the run loop to the protocol thread.
#[derive(Debug)]
enum FromVcpu {
    Stopped(SingleThreadStopReason<u64>),
    Regs(Box<(GuestRegs, FpuRegs)>),
    Bytes(Vec<u8>),
    Done(bool),
    Failed,
}

/// Largest memory read served at once (gdb's packets are far smaller).
const MAX_READ: usize = 64 << 10;
/// Longest a write to gdb may block before the session gives the client up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the protocol thread looks for an interrupt from gdb while the guest runs.
const POLL: Duration = Duration::from_millis(20);
const INT3: u8 = 0xcc;
/// The RFLAGS bits a CPL3 program may change itself with `popf` (CF, PF, AF, ZF, SF, DF, OF,
/// AC, ID); gdb may change these and no others. TF belongs to the session's single-stepping.
const USER_RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

/// The run loop's end of a debugging session.
#[derive(Debug)]
pub(crate) struct GdbSession {
    to_gdb: Sender<FromVcpu>,
    from_gdb: Receiver<ToVcpu>,
    /// A handle on the connection, to close it when the session ends whatever the thread does.
    stream: TcpStream,
    thread: Option<std::thread::JoinHandle<()>>,
    regions: Vec<Region>,
    /// Inserted breakpoints and the bytes the `int3`s replaced.
    breakpoints: BTreeMap<u64, u8>,
    stepping: bool,
    attached: bool,
    /// The last stop was at one of `breakpoints`.
    at_breakpoint: bool,
}

impl GdbSession {
    fn start(
        stream: TcpStream,
        regions: Vec<Region>,
        program: ProgramInfo,
        interrupt: Interrupt,
    ) -> Result<GdbSession, Error> {
        let (to_vcpu, from_gdb) = mpsc::channel();
        let (to_gdb, from_vcpu) = mpsc::channel();
        // A client that stops reading must not block the host for ever (the session's end
        // writes the exit report, and the sandbox's drop waits for that).
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(socket_error("set a write timeout".into()))?;
        let conn = stream.try_clone().map_err(socket_error("clone the connection".into()))?;
        let bridge = Bridge { to_vcpu, from_vcpu, auxv: program.auxv(), interrupt };
        let thread = std::thread::Builder::new()
            .name("glint-gdb".into())
            .spawn(move || serve_protocol(conn, bridge))
            .map_err(socket_error("start the protocol thread".into()))?;
        Ok(GdbSession {
            to_gdb,
            from_gdb,
            stream,
            thread: Some(thread),
            regions,
            breakpoints: BTreeMap::new(),
            stepping: false,
            attached: true,
            at_breakpoint: false,
        })
    }

    /// Whether gdb is still attached. Once it is not, the run loop runs the guest as usual.
    pub(crate) fn is_attached(&self) -> bool {
        self.attached
    }

    /// Reports `stop` to gdb and serves it until it resumes the guest; returns how to resume.
    /// A breakpoint the session inserted is reported with `rip` moved back onto it.
    pub(crate) fn stopped(&mut self, target: &mut dyn DebugTarget, stop: Stop) -> Resume {
        if !self.attached {
            return Resume::Detach;
        }
        let stepping = std::mem::take(&mut self.stepping);
        self.at_breakpoint = false;
        let reason = match stop {
            Stop::Entry => None,
            Stop::Interrupted => Some(SingleThreadStopReason::Signal(GdbSignal::SIGINT)),
            Stop::Exception { vector: 3 } => Some(self.breakpoint_hit(target)),
            Stop::Exception { vector: 1 } if stepping => Some(SingleThreadStopReason::DoneStep),
            Stop::Exception { vector } => Some(SingleThreadStopReason::Signal(gdb_signal(Signal::for_vector(vector)))),
        };
        if let Some(reason) = reason {
            tracing::debug!(?reason, "guest stopped for gdb");
            if self.to_gdb.send(FromVcpu::Stopped(reason)).is_err() {
                return self.detach(target);
            }
        }
        self.serve(target)
    }

    /// Tells gdb how the program ended and closes the session. With the guest's `target`, the
    /// breakpoints are removed first, so its code is as it was (without, the guest's memory is
    /// going away).
    pub(crate) fn finished(&mut self, target: Option<&mut dyn DebugTarget>, outcome: Outcome) {
        if !self.attached {
            return;
        }
        match target {
            Some(target) => self.remove_breakpoints(target),
            None => self.breakpoints.clear(),
        }
        self.attached = false;
        let reason = match outcome {
            Outcome::Exited(code) => SingleThreadStopReason::Exited(code),
            Outcome::Terminated(signal) => SingleThreadStopReason::Terminated(gdb_signal(signal)),
        };
        tracing::debug!(?reason, "debugged program ended");
        // The thread reports it and ends the protocol; if it is gone already, so is gdb.
        let _ = self.to_gdb.send(FromVcpu::Stopped(reason));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Puts the original bytes back into `buf` (guest memory read from `addr`) where the session
    /// has inserted breakpoints: what a snapshot taken while debugging must hold.
    pub(crate) fn original_bytes(&self, addr: u64, buf: &mut [u8]) {
        for (&at, &orig) in self.breakpoints.range(addr..addr.saturating_add(buf.len() as u64)) {
            if let Some(b) = buf.get_mut((at - addr) as usize) {
                *b = orig;
            }
        }
    }

    /// Inserts the breakpoints again after the guest's memory was restored from a snapshot (which
    /// holds the original bytes, see [`original_bytes`](Self::original_bytes)).
    pub(crate) fn reinsert_breakpoints(&mut self, target: &mut dyn DebugTarget) {
        for (&addr, orig) in &mut self.breakpoints {
            let mut now = [0u8];
            if target.read_memory(addr, &mut now).is_ok() && now[0] != INT3 {
                *orig = now[0];
                if let Err(error) = target.write_memory(addr, &[INT3]) {
                    tracing::warn!(addr = format_args!("{addr:#x}"), %error, "could not insert a breakpoint again");
                }
            }
        }
    }

    /// Whether the last stop was at a breakpoint the session inserted (its `rip` then moved
    /// back onto the `int3`), rather than at one of the guest's own.
    pub(crate) fn stopped_at_breakpoint(&self) -> bool {
        self.at_breakpoint
    }

    fn breakpoint_hit(&mut self, target: &mut dyn DebugTarget) -> SingleThreadStopReason<u64> {
        let trap = SingleThreadStopReason::Signal(GdbSignal::SIGTRAP);
        let Ok((mut regs, fpu)) = target.regs() else { return trap };
        let at = regs.rip.wrapping_sub(1);
        if !self.breakpoints.contains_key(&at) {
            return trap; // the guest's own int3
        }
        regs.rip = at;
        match target.set_regs(&regs, &fpu) {
            Ok(()) => {
                self.at_breakpoint = true;
                SingleThreadStopReason::SwBreak(())
            }
            Err(_) => trap,
        }
    }

    fn serve(&mut self, target: &mut dyn DebugTarget) -> Resume {
        loop {
            let Ok(request) = self.from_gdb.recv() else { return self.detach(target) };
            let reply = match request {
                ToVcpu::Resume(Resume::Kill) => {
                    self.remove_breakpoints(target);
                    self.attached = false;
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Resume::Kill;
                }
                ToVcpu::Resume(Resume::Detach) => return self.detach(target),
                ToVcpu::Resume(how) => {
                    self.stepping = how == Resume::Step;
                    return how;
                }
                ToVcpu::ReadRegs => match target.regs() {
                    Ok(regs) => FromVcpu::Regs(Box::new(regs)),
                    Err(error) => failed("read registers", &error),
                },
                ToVcpu::WriteRegs(new) => self.write_regs(target, &new.0, &new.1),
                ToVcpu::ReadMemory { addr, len } => self.read_memory(target, addr, len),
                ToVcpu::WriteMemory { addr, bytes } => self.write_memory(target, addr, &bytes),
                ToVcpu::AddBreakpoint(addr) => FromVcpu::Done(self.add_breakpoint(target, addr)),
                ToVcpu::RemoveBreakpoint(addr) => FromVcpu::Done(self.remove_breakpoint(target, addr)),
            };
            if self.to_gdb.send(reply).is_err() {
                return self.detach(target);
            }
        }
    }

    fn write_regs(&mut self, target: &mut dyn DebugTarget, new: &GuestRegs, fpu: &FpuRegs) -> FromVcpu {
        let (old, _) = match target.regs() {
            Ok(regs) => regs,
            Err(error) => return failed("read registers", &error),
        };
        let regs = GuestRegs {
            rflags: (old.rflags & !USER_RFLAGS) | (new.rflags & USER_RFLAGS),
            cs: old.cs,
            ss: old.ss,
            ds: old.ds,
            es: old.es,
            fs: old.fs,
            gs: old.gs,
            fs_base: old.fs_base,
            gs_base: old.gs_base,
            ..*new
        };
        let fpu = FpuRegs { mxcsr: fpu.mxcsr & 0xffff, ..*fpu };
        match target.set_regs(&regs, &fpu) {
            Ok(()) => FromVcpu::Done(true),
            Err(error) => failed("write registers", &error),
        }
    }

    fn read_memory(&mut self, target: &mut dyn DebugTarget, addr: u64, len: usize) -> FromVcpu {
        let n = readable_prefix(&self.regions, addr, len.min(MAX_READ) as u64);
        if n == 0 {
            return FromVcpu::Failed;
        }
        let mut bytes = vec![0u8; n as usize];
        if let Err(error) = target.read_memory(addr, &mut bytes) {
            return failed("read memory", &error);
        }
        // Show the code as it is, not the int3s we put there.
        for (&at, &orig) in self.breakpoints.range(addr..addr + n) {
            if let Some(b) = bytes.get_mut((at - addr) as usize) {
                *b = orig;
            }
        }
        FromVcpu::Bytes(bytes)
    }

    fn write_memory(&mut self, target: &mut dyn DebugTarget, addr: u64, bytes: &[u8]) -> FromVcpu {
        let len = bytes.len() as u64;
        if readable_prefix(&self.regions, addr, len) != len {
            return FromVcpu::Failed;
        }
        // A write over an inserted breakpoint changes what it will restore, and keeps the int3.
        let mut bytes = bytes.to_vec();
        for (&at, orig) in self.breakpoints.range_mut(addr..addr + len) {
            if let Some(b) = bytes.get_mut((at - addr) as usize) {
                *orig = std::mem::replace(b, INT3);
            }
        }
        match target.write_memory(addr, &bytes) {
            Ok(()) => FromVcpu::Done(true),
            Err(error) => failed("write memory", &error),
        }
    }

    fn add_breakpoint(&mut self, target: &mut dyn DebugTarget, addr: u64) -> bool {
        if self.breakpoints.contains_key(&addr) {
            return true;
        }
        if readable_prefix(&self.regions, addr, 1) != 1 {
            return false;
        }
        let mut orig = [0u8];
        if target.read_memory(addr, &mut orig).is_err() || target.write_memory(addr, &[INT3]).is_err() {
            return false;
        }
        self.breakpoints.insert(addr, orig[0]);
        true
    }

    fn remove_breakpoint(&mut self, target: &mut dyn DebugTarget, addr: u64) -> bool {
        match self.breakpoints.remove(&addr) {
            Some(orig) => target.write_memory(addr, &[orig]).is_ok(),
            None => false,
        }
    }

    fn remove_breakpoints(&mut self, target: &mut dyn DebugTarget) {
        for (addr, orig) in std::mem::take(&mut self.breakpoints) {
            if let Err(error) = target.write_memory(addr, &[orig]) {
                tracing::warn!(addr = format_args!("{addr:#x}"), %error, "could not remove a breakpoint");
            }
        }
    }

    fn detach(&mut self, target: &mut dyn DebugTarget) -> Resume {
        if self.attached {
            tracing::info!("gdb detached; the guest runs on undebugged");
        }
        self.remove_breakpoints(target);
        self.attached = false;
        let _ = self.stream.shutdown(Shutdown::Both);
        Resume::Detach
    }
}

impl Drop for GdbSession {
    /// A session still attached when the sandbox goes away ends as an exit: the guest did all it
    /// was asked to.
    fn drop(&mut self) {
        self.finished(None, Outcome::Exited(0));
        // Unblocks the protocol thread wherever it still waits: on the socket, or on a channel
        // (whose sender this replaces, so it disconnects).
        let _ = self.stream.shutdown(Shutdown::Both);
        self.to_gdb = mpsc::channel().0;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn failed(what: &str, error: &BoxError) -> FromVcpu {
    tracing::debug!(%error, "gdb request failed: {what}");
    FromVcpu::Failed
}

fn gdb_signal(signal: Signal) -> GdbSignal {
    match signal {
        Signal::Fpe => GdbSignal::SIGFPE,
        Signal::Trap => GdbSignal::SIGTRAP,
        Signal::Ill => GdbSignal::SIGILL,
        Signal::Segv => GdbSignal::SIGSEGV,
        Signal::Bus => GdbSignal::SIGBUS,
        Signal::Kill => GdbSignal::SIGKILL,
    }
}

/// The protocol thread's view of the guest: every request goes to the run loop.
struct Bridge {
    to_vcpu: Sender<ToVcpu>,
    from_vcpu: Receiver<FromVcpu>,
    auxv: Vec<u8>,
    interrupt: Interrupt,
}

/// Why the protocol thread gave up.
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("the sandbox ended the debugging session")]
    VcpuGone,
    #[error("the sandbox answered out of turn")]
    OutOfTurn,
}

impl Bridge {
    fn request(&mut self, request: ToVcpu) -> Result<FromVcpu, TargetError<BridgeError>> {
        self.to_vcpu.send(request).map_err(|_| TargetError::Fatal(BridgeError::VcpuGone))?;
        match self.from_vcpu.recv() {
            Ok(FromVcpu::Stopped(_)) => Err(TargetError::Fatal(BridgeError::OutOfTurn)),
            Ok(reply) => Ok(reply),
            Err(_) => Err(TargetError::Fatal(BridgeError::VcpuGone)),
        }
    }

    fn resume(&mut self, how: Resume) -> Result<(), BridgeError> {
        self.to_vcpu.send(ToVcpu::Resume(how)).map_err(|_| BridgeError::VcpuGone)
    }
}

fn serve_protocol(conn: TcpStream, mut bridge: Bridge) {
    let result = GdbStub::new(conn).run_blocking::<EventLoop>(&mut bridge);
    match result {
        Ok(DisconnectReason::Kill) => {
            tracing::info!("gdb killed the guest");
            let _ = bridge.resume(Resume::Kill);
        }
        Ok(reason) => tracing::info!(?reason, "gdb session ended"),
        Err(error) => tracing::info!(%error, "gdb session ended"),
    }
    // Dropping the bridge tells a run loop still waiting on gdb that it is gone.
}

fn to_gdb(r: &GuestRegs, f: &FpuRegs) -> X86_64CoreRegs {
    let mut g = X86_64CoreRegs {
        regs: [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ],
        eflags: r.rflags as u32,
        rip: r.rip,
        ..Default::default()
    };
    g.segments.cs = r.cs as u32;
    g.segments.ss = r.ss as u32;
    g.segments.ds = r.ds as u32;
    g.segments.es = r.es as u32;
    g.segments.fs = r.fs as u32;
    g.segments.gs = r.gs as u32;
    for (dst, src) in g.st.iter_mut().zip(&f.st) {
        dst.copy_from_slice(src.get(..10).unwrap_or(&[0; 10]));
    }
    g.fpu.fctrl = u32::from(f.fcw);
    g.fpu.fstat = u32::from(f.fsw);
    g.fpu.ftag = u32::from(f.full_tag_word());
    g.fpu.fop = u32::from(f.fop);
    g.fpu.fioff = f.fip as u32;
    g.fpu.fooff = f.fdp as u32;
    for (dst, src) in g.xmm.iter_mut().zip(&f.xmm) {
        *dst = u128::from_le_bytes(*src);
    }
    g.mxcsr = f.mxcsr;
    g
}

fn from_gdb(g: &X86_64CoreRegs) -> (GuestRegs, FpuRegs) {
    let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = g.regs;
    let regs = GuestRegs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        rsp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: g.rip,
        rflags: u64::from(g.eflags),
        ..Default::default() // segments: the session keeps the guest's own
    };
    let mut fpu = FpuRegs {
        fcw: g.fpu.fctrl as u16,
        fsw: g.fpu.fstat as u16,
        fop: g.fpu.fop as u16,
        fip: u64::from(g.fpu.fioff),
        fdp: u64::from(g.fpu.fooff),
        mxcsr: g.mxcsr,
        ..Default::default()
    };
    // Abridged tag: a register is in use unless its two-bit tag says empty (3).
    fpu.ftw = (0..8).filter(|i| (g.fpu.ftag >> (i * 2)) & 3 != 3).fold(0u8, |t, i| t | (1 << i));
    for (dst, src) in fpu.st.iter_mut().zip(&g.st) {
        if let Some(d) = dst.get_mut(..10) {
            d.copy_from_slice(src);
        }
    }
    for (dst, src) in fpu.xmm.iter_mut().zip(&g.xmm) {
        *dst = src.to_le_bytes();
    }
    (regs, fpu)
}

impl Target for Bridge {
    type Arch = X86_64_SSE;
    type Error = BridgeError;

    #[inline(always)]
    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_auxv(&mut self) -> Option<AuxvOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for Bridge {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        match self.request(ToVcpu::ReadRegs)? {
            FromVcpu::Regs(r) => {
                *regs = to_gdb(&r.0, &r.1);
                Ok(())
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        match self.request(ToVcpu::WriteRegs(Box::new(from_gdb(regs))))? {
            FromVcpu::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.request(ToVcpu::ReadMemory { addr: start_addr, len: data.len() })? {
            FromVcpu::Bytes(bytes) => {
                let n = bytes.len().min(data.len());
                data.get_mut(..n).unwrap_or_default().copy_from_slice(bytes.get(..n).unwrap_or_default());
                Ok(n)
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_addrs(&mut self, start_addr: u64, data: &[u8]) -> TargetResult<(), Self> {
        match self.request(ToVcpu::WriteMemory { addr: start_addr, bytes: data.to_vec() })? {
            FromVcpu::Done(true) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Bridge {
    /// A signal gdb asks to deliver (after a fault) is dropped: glint ends a faulted call.
    fn resume(&mut self, _signal: Option<GdbSignal>) -> Result<(), Self::Error> {
        Bridge::resume(self, Resume::Continue)
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Bridge {
    fn step(&mut self, _signal: Option<GdbSignal>) -> Result<(), Self::Error> {
        Bridge::resume(self, Resume::Step)
    }
}

impl Breakpoints for Bridge {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Bridge {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.request(ToVcpu::AddBreakpoint(addr))? {
            FromVcpu::Done(done) => Ok(done),
            _ => Ok(false),
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.request(ToVcpu::RemoveBreakpoint(addr))? {
            FromVcpu::Done(done) => Ok(done),
            _ => Ok(false),
        }
    }
}

impl Auxv for Bridge {
    fn get_auxv(&self, offset: u64, length: usize, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let rest = usize::try_from(offset).ok().and_then(|o| self.auxv.get(o..)).unwrap_or_default();
        let n = rest.len().min(length).min(buf.len());
        buf.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
        Ok(n)
    }
}

enum EventLoop {}

impl run_blocking::BlockingEventLoop for EventLoop {
    type Target = Bridge;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut Bridge,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<BridgeError, <TcpStream as Connection>::Error>,
    > {
        use run_blocking::{Event, WaitForStopReasonError};
        loop {
            match target.from_vcpu.recv_timeout(POLL) {
                Ok(FromVcpu::Stopped(reason)) => return Ok(Event::TargetStopped(reason)),
                Ok(_) => return Err(WaitForStopReasonError::Target(BridgeError::OutOfTurn)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WaitForStopReasonError::Target(BridgeError::VcpuGone))
                }
                Err(RecvTimeoutError::Timeout) => {
                    if conn.peek().map_err(WaitForStopReasonError::Connection)?.is_some() {
                        let byte = ConnectionExt::read(conn).map_err(WaitForStopReasonError::Connection)?;
                        return Ok(Event::IncomingData(byte));
                    }
                }
            }
        }
    }

    /// The guest runs on the run loop's thread: ask it to stop, and report the stop it makes.
    fn on_interrupt(target: &mut Bridge) -> Result<Option<Self::StopReason>, BridgeError> {
        (target.interrupt)();
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
