//! The gdb stub (feature `gdb`) on a live guest, driven by a real gdb and by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use glint::{Error, GdbServer, GuestFault, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

fn fault_of(result: Result<Value, Error>) -> GuestFault {
    match result {
        Err(Error::GuestFault(f)) => f,
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

/// Runs gdb on the test guest on a thread, connecting to `addr` and running `commands`; the
/// thread returns what gdb printed. If gdb dies before it connects, the thread connects in its
/// place, so the test's `attach_gdb` returns (and the test fails) instead of waiting for ever.
fn spawn_gdb(addr: std::net::SocketAddr, commands: &[&str]) -> std::thread::JoinHandle<String> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"]);
    cmd.args(["-ex", &format!("target remote {addr}")]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd.arg(glint_guest_artifacts::TESTGUEST).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child: Child = cmd.spawn().unwrap();
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        let _ = TcpStream::connect(addr);
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("gdb said:\n{text}");
        text
    })
}

/// A deadline for debugged calls: far more than a gdb script takes, so that a regression fails
/// the test rather than hanging it.
const BOUND: Option<std::time::Duration> = Some(std::time::Duration::from_secs(60));

/// What every live-debugging test does in gdb: break at `debug_add_into`'s entry, where the C
/// convention has `a`, `b` in edi, esi and the caller's stack local in rdx; read them; step.
const AT_DEBUG_ADD: &[&str] = &[
    "break debug_add_into",
    "continue",
    "p $edi",
    "p $esi",
    "set language c",
    "set $sum = (int *) $rdx",
    "p/x $pc",
    "stepi",
    "p/x $pc",
    "finish",
    "p *$sum",
];

#[test]
fn gdb_breaks_reads_steps_and_continues_a_live_guest() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let server = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let gdb = spawn_gdb(server.local_addr().unwrap(), &[AT_DEBUG_ADD, &["delete", "continue"]].concat());
    let mut uninit = test_builder().call_timeout(BOUND).build(&testguest()).unwrap();
    uninit.attach_gdb(server).unwrap();
    let mut sb = uninit.init().unwrap();
    assert_eq!(sb.call("debug_add", &[Value::I32(2), Value::I32(3)]).unwrap(), Value::I32(5));
    drop(sb);
    let out = gdb.join().unwrap();
    assert!(out.contains("Breakpoint 1, debug_add_into ()"), "{out}");
    assert!(out.contains("$1 = 2\n") && out.contains("$2 = 3\n"), "{out}");
    // One step moved the guest by one instruction (of a few bytes).
    let pc = |n: usize| -> u64 {
        let line = out.lines().find(|l| l.starts_with(&format!("${n} = 0x"))).unwrap();
        u64::from_str_radix(&line[format!("${n} = 0x").len()..], 16).unwrap()
    };
    assert!(pc(4) > pc(3) && pc(4) - pc(3) < 16, "{out}");
    // The caller's local, in memory on its stack, holds the sum once the function returned.
    assert!(out.contains("$5 = 5\n"), "{out}");
    assert!(out.contains("exited normally"), "{out}");
}

#[test]
fn gdb_dying_mid_session_leaves_the_sandbox_and_the_host_working() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let server = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut commands = vec!["set breakpoint always-inserted on"];
    commands.extend_from_slice(&AT_DEBUG_ADD[..3]);
    // Gone without a word, its breakpoint still in the guest's code.
    commands.push("shell kill -9 $PPID");
    let gdb = spawn_gdb(server.local_addr().unwrap(), &commands);
    let mut uninit = test_builder().call_timeout(BOUND).build(&testguest()).unwrap();
    uninit.attach_gdb(server).unwrap();
    let mut sb = uninit.init().unwrap();
    assert_eq!(sb.call("debug_add", &[Value::I32(2), Value::I32(3)]).unwrap(), Value::I32(5));
    let out = gdb.join().unwrap();
    assert!(out.contains("Breakpoint 1, debug_add_into ()"), "{out}");
    // The breakpoint is gone from the code: more calls run undisturbed, and reset works.
    assert_eq!(sb.call("debug_add", &[Value::I32(40), Value::I32(2)]).unwrap(), Value::I32(42));
    sb.reset().unwrap();
    assert_eq!(sb.call("debug_add", &[Value::I32(1), Value::I32(1)]).unwrap(), Value::I32(2));
    assert!(!sb.is_poisoned());
    assert_eq!(common::test_sandbox().call("rt_i32", &[Value::I32(9)]).unwrap(), Value::I32(9));
}

#[test]
fn a_fault_under_gdb_is_a_signal_then_the_end_of_the_program() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let server = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let gdb = spawn_gdb(server.local_addr().unwrap(), &["continue", "bt 1", "continue"]);
    let mut uninit = test_builder().call_timeout(BOUND).build(&testguest()).unwrap();
    uninit.attach_gdb(server).unwrap();
    let mut sb = uninit.init().unwrap();
    let fault = fault_of(sb.call("divide_error", &[]));
    let out = gdb.join().unwrap();
    assert!(out.contains("Program received signal SIGFPE"), "{out}");
    assert!(out.contains("divide_error () at test/testguest/src/main.rs"), "{out}");
    assert!(out.contains("Program terminated with signal SIGFPE"), "{out}");
    assert!(sb.is_poisoned());
    assert_eq!(fault.kind, glint::FaultKind::DivideError);
}

/// Undoes the remote protocol's run-length encoding: `X*n` is X and (n - 29) more of it.
fn run_length_decoded(packet: &str) -> String {
    let mut out = String::new();
    let mut chars = packet.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let count = chars.next().unwrap() as usize - 29;
            let last = out.chars().last().unwrap();
            out.extend(std::iter::repeat_n(last, count));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads from `c` until `until` has been seen or the peer closed.
fn read_until(c: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !String::from_utf8_lossy(&got).contains(until) {
        if c.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        got.push(b[0]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Ctrl-C reaches a guest spinning with interrupts off, on the real vCPU: gdb's interrupt stops
/// it (SIGINT) without ending the call, and `kill` then ends the call.
#[test]
fn an_interrupt_stops_a_spinning_guest_and_kill_ends_the_call() {
    require_kvm!();
    let server = GdbServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let (calling, call_started) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        c.write_all(b"+$?#3f").unwrap();
        read_until(&mut c, "#");
        c.write_all(b"+$c#63").unwrap(); // through initialisation, into the call of `spin`
        call_started.recv().unwrap();
        // An interrupt that lands before the vCPU enters stops the call at its start instead.
        c.write_all(b"\x03").unwrap();
        let stop = read_until(&mut c, "#");
        c.write_all(b"+$g#67").unwrap();
        let regs = read_until(&mut c, "#");
        c.write_all(b"+$k#6b").unwrap();
        // Stay connected until the stub hangs up: a client that vanishes is a detach, and the
        // guest would spin on undebugged.
        read_until(&mut c, "never sent");
        (stop, regs)
    });
    let mut uninit = test_builder().call_timeout(BOUND).build(&testguest()).unwrap();
    uninit.attach_gdb(server).unwrap();
    let mut sb = uninit.init().unwrap();
    calling.send(()).unwrap();
    let result = sb.call("spin", &[]);
    let (stop, regs) = client.join().unwrap();
    assert!(stop.contains("$S02") || stop.contains("$T02"), "SIGINT reported: {stop:?}");
    // The `g` reply: 16 registers and rip (8 bytes each), eflags (4), then cs (4): the guest's
    // user code selector, so it was stopped at CPL3.
    let body = run_length_decoded(regs.split('$').nth(1).unwrap().trim_end_matches('#'));
    let cs = &body[(17 * 8 + 4) * 2..(17 * 8 + 8) * 2];
    assert_eq!(cs, "23000000", "{regs:?}");
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    // The host goes on.
    assert_eq!(common::test_sandbox().call("rt_i32", &[Value::I32(9)]).unwrap(), Value::I32(9));
}
