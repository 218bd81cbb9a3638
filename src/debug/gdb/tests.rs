//! The protocol side, proven with a real gdb against a fake target: the hello guest's loaded
//! bytes in a memory buffer, a register file, and a "CPU" that walks a scripted list of
//! instruction addresses, trapping on the `int3`s the session writes.

use super::*;
use crate::debug::testing::{gdb, LoadedGuest};
use crate::debug::Perms;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// The stopped "vCPU": registers and memory, as a real one would offer them.
struct Fake {
    regs: GuestRegs,
    fpu: FpuRegs,
    memory: Vec<u8>,
}

impl DebugTarget for Fake {
    fn regs(&mut self) -> Result<(GuestRegs, FpuRegs), BoxError> {
        Ok((self.regs, self.fpu))
    }

    fn set_regs(&mut self, regs: &GuestRegs, fpu: &FpuRegs) -> Result<(), BoxError> {
        self.regs = *regs;
        self.fpu = *fpu;
        Ok(())
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        let src = self.memory.get(addr as usize..addr as usize + buf.len()).ok_or("outside memory")?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), BoxError> {
        self.memory.get_mut(addr as usize..addr as usize + bytes.len()).ok_or("outside memory")?.copy_from_slice(bytes);
        Ok(())
    }
}

/// One scripted instruction.
#[derive(Clone, Copy, Debug)]
enum Insn {
    /// An ordinary instruction at this address; executing it sets `rax` to its index.
    At(u64),
    /// An instruction that raises this exception vector.
    Faults(u64, u8),
    /// A loop that runs until gdb interrupts it (once).
    Spins(u64),
}

impl Insn {
    fn addr(self) -> u64 {
        match self {
            Insn::At(a) | Insn::Faults(a, _) | Insn::Spins(a) => a,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Exited,
    Killed,
    Faulted(u8),
}

/// Plays the run loop: runs the script under the session's direction until it ends.
fn run(session: &mut GdbSession, fake: &mut Fake, script: &[Insn], interrupted: &AtomicBool) -> Ending {
    let mut at = 0usize;
    fake.regs.rip = script[0].addr();
    let mut resume = session.stopped(fake, Stop::Entry);
    loop {
        let stepping = match resume {
            Resume::Kill => return Ending::Killed,
            Resume::Step => true,
            Resume::Continue | Resume::Detach => false,
        };
        let stop = loop {
            let Some(&insn) = script.get(at) else {
                session.finished(Some(fake), Outcome::Exited(0));
                return Ending::Exited;
            };
            let addr = insn.addr();
            if fake.memory[addr as usize] == INT3 {
                fake.regs.rip = addr + 1;
                break Stop::Exception { vector: 3 };
            }
            match insn {
                Insn::Faults(_, vector) => break Stop::Exception { vector },
                Insn::Spins(_) if interrupted.swap(false, Ordering::SeqCst) => {
                    at += 1; // the loop ends once interrupted
                    break Stop::Interrupted;
                }
                Insn::Spins(_) if stepping => break Stop::Exception { vector: 1 },
                Insn::Spins(_) => std::thread::yield_now(),
                Insn::At(_) => {
                    at += 1;
                    fake.regs.rax = at as u64;
                    if let Some(next) = script.get(at) {
                        fake.regs.rip = next.addr();
                    }
                    if stepping && at < script.len() {
                        break Stop::Exception { vector: 1 };
                    }
                }
            }
        };
        if let Stop::Exception { vector } = stop {
            if !session.is_attached() || !matches!(vector, 1 | 3) {
                // Undebugged, or a fault: glint ends the call; gdb (if there) hears of it.
                resume = session.stopped(fake, stop);
                if resume != Resume::Kill {
                    session.finished(Some(fake), Outcome::Terminated(Signal::for_vector(vector)));
                }
                return Ending::Faulted(vector);
            }
        }
        resume = session.stopped(fake, stop);
    }
}

struct Setup {
    guest: LoadedGuest,
    fake: Fake,
    interrupted: Arc<AtomicBool>,
    listener: GdbServer,
    port: u16,
}

fn setup() -> Setup {
    let guest = LoadedGuest::hello();
    let rsp = guest.layout.stack_top() - 0x80;
    let mut memory = guest.memory.clone();
    memory[rsp as usize..rsp as usize + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    let regs = GuestRegs {
        rsp,
        rflags: 0x2,
        cs: 0x23,
        ss: 0x1b,
        ds: 0x1b,
        es: 0x1b,
        fs: 0x1b,
        gs: 0x1b,
        ..Default::default()
    };
    let fake = Fake { regs, fpu: FpuRegs { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }, memory };
    let listener = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    Setup { guest, fake, interrupted: Arc::new(AtomicBool::new(false)), listener, port }
}

/// Starts gdb on the hello guest with `commands` after connecting.
fn spawn_gdb(s: &Setup, commands: &[String]) -> Child {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx", "-ex", "set confirm off", "-ex", "set pagination off"]);
    cmd.args(["-ex", &format!("target remote 127.0.0.1:{}", s.port), "-ex", "set language c"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd.arg(s.guest.path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Accepts gdb, runs the script, and returns how it ended and what gdb printed.
fn session_with(mut s: Setup, mut child: Child, script: &[Insn]) -> (Ending, Fake, String, LoadedGuest) {
    let flag = Arc::clone(&s.interrupted);
    let interrupt: Interrupt = Arc::new(move || flag.store(true, Ordering::SeqCst));
    let regions = s.guest.regions.clone();
    let program = s.guest.program;
    // If gdb dies before it connects, unblock the accept so the test fails instead of hanging.
    let port = s.port;
    let watcher = std::thread::spawn(move || {
        let status = child.wait();
        let mut out = String::new();
        let mut err = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let _ = TcpStream::connect(("127.0.0.1", port));
        (status, out, err)
    });
    let mut session = s.listener.accept(regions, program, interrupt).unwrap();
    let ending = run(&mut session, &mut s.fake, script, &s.interrupted);
    drop(session);
    let (status, out, err) = watcher.join().unwrap();
    eprintln!("gdb ({status:?}) said:\n{out}\n{err}");
    (ending, s.fake, format!("{out}\n{err}"), s.guest)
}

/// Addresses of the first `n` bytes of a function: each one an "instruction", so gdb's choice
/// of breakpoint address after the prologue is on the path.
fn bytes_of(start: u64, n: u64) -> impl Iterator<Item = Insn> {
    (start..start + n).map(Insn::At)
}

fn code_bytes(guest: &LoadedGuest, memory: &[u8]) -> bool {
    guest.regions.iter().filter(|r| r.perms.exec).all(|r| {
        let range = r.addr as usize..r.end() as usize;
        memory[range.clone()] == guest.memory[range]
    })
}

#[test]
fn gdb_reads_breaks_steps_writes_and_sees_the_end() {
    if gdb().is_none() {
        return;
    }
    let s = setup();
    let entry = s.guest.program.entry;
    // Without debug info gdb knows functions by their symbols: `start::h<hash>` for Rust.
    let (start, start_name) = s.guest.function("glint_guest2rt5start");
    let heap = s.guest.layout.heap_addr;
    let script: Vec<Insn> = [Insn::At(entry), Insn::At(entry + 2)].into_iter().chain(bytes_of(start, 64)).collect();
    let child = spawn_gdb(
        &s,
        &[
            "p/x $pc".into(),
            "x/2xb $pc".into(),
            format!("break {start_name}"),
            "continue".into(),
            "p/x $pc".into(),
            "p $rax".into(),
            "x/gx $rsp".into(),
            "x/xb $pc".into(),
            "stepi".into(),
            "p/x $pc".into(),
            "set var $rbx = 0x1234".into(),
            "set var $eflags = 0x3246".into(),
            "set var $cs = 0x8".into(),
            "p *(int *)0x1000".into(),
            "p *(int *)0x88ff0".into(),
            format!("set var *(char *){heap:#x} = 0x5a"),
            "p $eflags".into(),
            "continue".into(),
        ],
    );
    let (ending, fake, out, guest) = session_with(s, child, &script);
    assert_eq!(ending, Ending::Exited, "{out}");
    // Connected and stopped at the entry, reading the real code bytes.
    assert!(out.contains(&format!("$1 = {entry:#x}")), "{out}");
    assert!(out.contains(&format!("{entry:#x} <_start>:\t0x31\t0xed")), "{out}");
    // The symbol resolved at the PIE's load address (from the auxv), the breakpoint was hit there.
    assert!(out.contains("Breakpoint 1 at ") && out.contains("file src/rt.rs"), "{out}");
    assert!(out.contains("Breakpoint 1, "), "{out}");
    let bp: u64 = (start..start + 64).find(|a| out.contains(&format!("$2 = {a:#x}"))).expect("pc at the breakpoint");
    assert!(out.contains(&format!("$3 = {}", script.iter().position(|i| i.addr() == bp).unwrap())), "{out}");
    assert!(out.contains("0x1122334455667788"), "{out}");
    // gdb sees the original code at the breakpoint, not the int3.
    let shown = out.lines().find(|l| l.starts_with(&format!("{bp:#x} <"))).expect("x/xb at the breakpoint");
    let orig = guest.memory[bp as usize];
    assert_ne!(orig, INT3);
    assert!(shown.ends_with(&format!("\t{orig:#04x}")), "{shown}");
    // One step moved to the next instruction.
    assert!(out.contains(&format!("$4 = {:#x}", bp + 1)), "{out}");
    // Host-owned pages (page tables, the fault stack) are not readable.
    assert!(out.contains("Cannot access memory at address 0x1000"), "{out}");
    assert!(out.contains("Cannot access memory at address 0x88ff0"), "{out}");
    // The end is reported as an exit.
    assert!(out.contains("exited normally"), "{out}");
    // Register and memory writes landed; privileged flags and segments did not change.
    assert_eq!(fake.regs.rbx, 0x1234);
    assert_eq!(fake.regs.rflags & 0x3000, 0, "IOPL stays 0");
    assert_eq!(fake.regs.rflags & 0x40, 0x40, "ZF was written");
    assert_eq!(fake.regs.cs, 0x23);
    assert_eq!(fake.memory[heap as usize], 0x5a);
    // Every int3 is gone again.
    assert!(code_bytes(&guest, &fake.memory));
}

#[test]
fn a_fault_is_reported_as_a_signal_and_ends_the_program() {
    if gdb().is_none() {
        return;
    }
    let s = setup();
    let entry = s.guest.program.entry;
    let script = [Insn::At(entry), Insn::At(entry + 2), Insn::Faults(entry + 6, 14)];
    let child = spawn_gdb(&s, &["continue".into(), "p/x $pc".into(), "continue".into()]);
    let (ending, _, out, _) = session_with(s, child, &script);
    assert_eq!(ending, Ending::Faulted(14));
    assert!(out.contains("Program received signal SIGSEGV"), "{out}");
    assert!(out.contains(&format!("= {:#x}", entry + 6)), "{out}");
    assert!(out.contains("Program terminated with signal SIGSEGV"), "{out}");
}

#[test]
fn gdb_dying_mid_session_leaves_the_guest_running_and_its_code_intact() {
    if gdb().is_none() {
        return;
    }
    let s = setup();
    let start = s.guest.symbol("glint_guest2rt5start");
    let script: Vec<Insn> = bytes_of(start, 8).collect();
    let child = spawn_gdb(
        &s,
        &[
            "set breakpoint always-inserted on".into(),
            format!("break *{:#x}", start + 4),
            "continue".into(),
            "p $pc".into(),
            // Abruptly: no detach, breakpoint still inserted.
            "shell kill -9 $PPID".into(),
        ],
    );
    let (ending, fake, out, guest) = session_with(s, child, &script);
    assert!(out.contains("Breakpoint 1, "), "{out}");
    assert_eq!(ending, Ending::Exited, "the guest ran on to its end");
    assert!(code_bytes(&guest, &fake.memory), "the int3 was removed");
}

#[test]
fn kill_ends_the_call() {
    if gdb().is_none() {
        return;
    }
    let s = setup();
    let entry = s.guest.program.entry;
    let child = spawn_gdb(&s, &["kill".into()]);
    let (ending, _, out, _) = session_with(s, child, &[Insn::At(entry), Insn::At(entry + 2)]);
    assert_eq!(ending, Ending::Killed, "{out}");
}

/// Reads from `c` until `until` has been seen (or the peer closed).
fn read_until(c: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !String::from_utf8_lossy(&got).contains(until) {
        if Read::read(c, &mut b).unwrap_or(0) == 0 {
            break;
        }
        got.push(b[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Runs the script against a client speaking the protocol by hand.
fn raw_session(script: &[Insn], client: impl FnOnce(TcpStream) -> String + Send + 'static) -> (Ending, String, Fake) {
    let mut s = setup();
    let port = s.port;
    let client = std::thread::spawn(move || client(TcpStream::connect(("127.0.0.1", port)).unwrap()));
    let flag = Arc::clone(&s.interrupted);
    let interrupt: Interrupt = Arc::new(move || flag.store(true, Ordering::SeqCst));
    let mut session = s.listener.accept(s.guest.regions.clone(), s.guest.program, interrupt).unwrap();
    let ending = run(&mut session, &mut s.fake, script, &s.interrupted);
    drop(session);
    (ending, client.join().unwrap(), s.fake)
}

/// An interrupt while the guest spins stops it with SIGINT; a hang-up then lets it finish.
#[test]
fn an_interrupt_stops_a_running_guest() {
    let entry = LoadedGuest::hello().program.entry;
    let script = [Insn::At(entry), Insn::Spins(entry + 2), Insn::At(entry + 4)];
    let (ending, stop, _) = raw_session(&script, |mut c| {
        Write::write_all(&mut c, b"+$?#3f").unwrap();
        let first = read_until(&mut c, "#");
        assert!(first.contains("$S05") || first.contains("$T05"), "{first:?}");
        Write::write_all(&mut c, b"+$c#63").unwrap();
        Write::write_all(&mut c, b"\x03").unwrap();
        read_until(&mut c, "#") // hangs up while stopped
    });
    assert!(stop.contains("$S02") || stop.contains("$T02"), "SIGINT reported: {stop:?}");
    assert_eq!(ending, Ending::Exited);
}

/// Garbage, bad checksums and an abrupt hang-up end the session, never the host.
#[test]
fn garbage_and_hang_ups_are_survived() {
    let guest = LoadedGuest::hello();
    let start = guest.symbol("glint_guest2rt5start");
    let script: Vec<Insn> = bytes_of(start, 4).collect();
    let (ending, _, fake) = raw_session(&script, move |mut c| {
        // A breakpoint inserted by hand, then garbage, then gone.
        let z = format!("Z0,{:x},1", start + 2);
        let sum = z.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        Write::write_all(&mut c, format!("+${z}#{sum:02x}").as_bytes()).unwrap();
        let ok = read_until(&mut c, "#");
        // The stub may hang up at any point of this (a broken pipe here is its right).
        let _ = Write::write_all(&mut c, b"\xff\x00garbage$zz#00$m0,99999999999999999999#00");
        let _ = Write::write_all(&mut c, &[b'$'; 5000]);
        assert!(ok.contains("$OK#"), "{ok:?}");
        ok
    });
    assert_eq!(ending, Ending::Exited);
    assert!(code_bytes(&guest, &fake.memory), "the hand-made breakpoint was removed");
}

#[test]
fn only_loopback_addresses_are_served() {
    for addr in ["0.0.0.0:0", "192.0.2.1:1234"] {
        let e = GdbServer::bind(addr.parse().unwrap()).unwrap_err();
        assert!(matches!(e, Error::Debugger(DebuggerError::NotLoopback { .. })), "{e}");
    }
    let l = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(l.local_addr().unwrap().ip().is_loopback());
}

#[test]
fn registers_round_trip_through_gdbs_layout() {
    let regs = GuestRegs {
        rax: 1,
        rbx: 2,
        rcx: 3,
        rdx: 4,
        rsi: 5,
        rdi: 6,
        rbp: 7,
        rsp: 8,
        r8: 9,
        r9: 10,
        r10: 11,
        r11: 12,
        r12: 13,
        r13: 14,
        r14: 15,
        r15: 16,
        rip: 17,
        rflags: 0x246,
        ..Default::default()
    };
    let mut fpu = FpuRegs {
        fcw: 0x37f,
        fsw: 7 << 11,
        ftw: 0x80,
        fop: 3,
        fip: 0x1234,
        fdp: 0x5678,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    fpu.st[0][..10].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    fpu.xmm[15] = [9; 16];
    let g = to_gdb(&regs, &fpu);
    assert_eq!(g.regs[7], 8, "gdb's order: rax rbx rcx rdx rsi rdi rbp rsp");
    assert_eq!(g.fpu.ftag, 0x3fff);
    let (r2, f2) = from_gdb(&g);
    assert_eq!(r2, regs);
    assert_eq!(f2, fpu);
}

#[test]
fn memory_outside_the_guest_and_breakpoints_there_are_refused() {
    let s = setup();
    let mut fake = s.fake;
    let regions = vec![Region { addr: 0x20_0000, len: 0x1000, perms: Perms { read: true, write: false, exec: true } }];
    let (to_gdb, _rx) = mpsc::channel();
    let (_tx, from_gdb) = mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut session = GdbSession {
        to_gdb,
        from_gdb,
        stream,
        thread: None,
        regions,
        breakpoints: BTreeMap::new(),
        stepping: false,
        attached: true,
        at_breakpoint: false,
    };
    assert!(matches!(session.read_memory(&mut fake, 0x1000, 8), FromVcpu::Failed));
    assert!(matches!(session.read_memory(&mut fake, 0x20_0ffc, 8), FromVcpu::Bytes(b) if b.len() == 4));
    assert!(matches!(session.write_memory(&mut fake, 0x20_0ffc, &[0; 8]), FromVcpu::Failed));
    assert!(!session.add_breakpoint(&mut fake, 0x88000));
    let orig = fake.memory[0x20_0010];
    assert!(session.add_breakpoint(&mut fake, 0x20_0010));
    assert_eq!(fake.memory[0x20_0010], INT3);
    // Writing over a breakpoint changes what it restores; reading shows the written byte.
    assert!(matches!(session.write_memory(&mut fake, 0x20_0010, &[0x90]), FromVcpu::Done(true)));
    assert_eq!(fake.memory[0x20_0010], INT3);
    assert!(matches!(session.read_memory(&mut fake, 0x20_0010, 1), FromVcpu::Bytes(b) if b == [0x90]));
    assert!(session.remove_breakpoint(&mut fake, 0x20_0010));
    assert_eq!(fake.memory[0x20_0010], 0x90);
    assert_ne!(orig, INT3);
}
