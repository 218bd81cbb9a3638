//! The harness of the hostile-guest tests (`tests/hostile/`): the bystander, recovery checks, the
//! raw-guest prelude, and running an inner test in a child process.

use super::elf::RawElf;
use super::{test_builder, testguest};
use glint::{Error, FaultKind, GuestFault, GuestImage, ProtocolError, Sandbox, SandboxBuilder, Value};
use glint_abi::layout::{BootInfo, IMAGE_BASE};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for: generous, because the machine is noisy.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
    true
}

/// A sandbox on its own thread calling `set_state`, `host_add` and `get_state` in a loop and
/// checking every answer, so any leak of state, signal or failure from a hostile sandbox into
/// another one shows up as a wrong value or an error here.
pub struct Bystander {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl Bystander {
    /// Starts the bystander and waits until it has completed a round, so it is running when the
    /// hostile part starts.
    pub fn start() -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (stop2, rounds2) = (stop.clone(), rounds.clone());
        let thread = thread::Builder::new()
            .name("bystander".into())
            .spawn(move || -> Result<u64, String> {
                let mut sb = test_builder()
                    .call_timeout(Some(PATIENCE))
                    .build(&testguest())
                    .and_then(|u| u.init())
                    .map_err(|e| format!("bystander setup: {e}"))?;
                let set = sb.typed_fn::<(u64,), ()>("set_state").map_err(|e| e.to_string())?;
                let get = sb.typed_fn::<(), u64>("get_state").map_err(|e| e.to_string())?;
                let add = sb.typed_fn::<(i32, i32), i32>("host_add").map_err(|e| e.to_string())?;
                let mut i = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    i += 1;
                    set.call(&mut sb, (i,)).map_err(|e| format!("round {i}: set_state: {e}"))?;
                    let sum = add.call(&mut sb, (i as i32, 1)).map_err(|e| format!("round {i}: host_add: {e}"))?;
                    if sum != (i as i32).wrapping_add(1) {
                        return Err(format!("round {i}: host_add returned {sum}"));
                    }
                    let got = get.call(&mut sb, ()).map_err(|e| format!("round {i}: get_state: {e}"))?;
                    if got != i {
                        return Err(format!("round {i}: get_state returned {got}"));
                    }
                    rounds2.fetch_add(1, Ordering::SeqCst);
                    thread::yield_now();
                }
                Ok(i)
            })
            .expect("spawn the bystander");
        let b = Bystander { stop, rounds, thread: Some(thread) };
        let running = wait_until(PATIENCE, || {
            b.rounds.load(Ordering::SeqCst) > 0 || b.thread.as_ref().is_some_and(JoinHandle::is_finished)
        });
        assert!(running, "the bystander did not complete a round within {PATIENCE:?}");
        b
    }

    /// Waits for one more complete round after the hostile part, stops the bystander and
    /// asserts that it never saw a wrong value or an error.
    pub fn finish(mut self) {
        let seen = self.rounds.load(Ordering::SeqCst);
        let thread = self.thread.take().expect("bystander thread");
        let alive = wait_until(PATIENCE, || self.rounds.load(Ordering::SeqCst) > seen || thread.is_finished());
        self.stop.store(true, Ordering::Relaxed);
        let result = thread.join().expect("the bystander thread panicked");
        let rounds = result.unwrap_or_else(|e| panic!("the bystander sandbox was disturbed: {e}"));
        assert!(alive && rounds > seen, "the bystander made no progress after the hostile part ({rounds} rounds)");
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        // A test that fails before `finish` must not leave the bystander spinning.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `act` while a [`Bystander`] calls on another thread; for hostile acts that leave no
/// sandbox to recover (refused images, failed initialisation, API misuse).
pub fn beside_bystander<T>(act: impl FnOnce() -> T) -> T {
    let bystander = Bystander::start();
    let out = act();
    bystander.finish();
    out
}

/// Runs the hostile `act` on `sb` while a [`Bystander`] calls on another thread, then asserts
/// that `sb` works again after `reset()` ([`assert_recovers`]). Returns what `act` returned, for
/// the test's own assertions on the exact error.
pub fn hostile<T>(sb: &mut Sandbox, act: impl FnOnce(&mut Sandbox) -> T) -> T {
    let out = beside_bystander(|| act(sb));
    assert_recovers(sb);
    out
}

/// A poisoned sandbox refuses calls; after `reset()` it answers correctly from its initial state.
pub fn assert_recovers(sb: &mut Sandbox) {
    let probe = if sb.signature("rt_i32").is_some() { "get_state" } else { "ok" };
    if sb.is_poisoned() {
        let refused = sb.call(probe, &[]);
        assert!(matches!(refused, Err(Error::Poisoned { .. })), "a poisoned sandbox answered: {refused:?}");
    }
    sb.reset().expect("reset");
    assert!(!sb.is_poisoned());
    if probe == "get_state" {
        assert_eq!(sb.call("rt_i32", &[Value::I32(-9)]).unwrap(), Value::I32(-9));
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0), "state survived the reset");
        // Every test-guest sandbox here comes from the test builder, which registers `add`.
        assert_eq!(sb.call("host_add", &[Value::I32(40), Value::I32(2)]).unwrap(), Value::I32(42));
    } else {
        assert_eq!(sb.call("ok", &[]).unwrap(), Value::I32(42));
    }
}

/// The test builder (host functions `add`, `fail`, `hello`, `boom`) with a deadline, so no
/// hostile guest can hang a test.
pub fn builder() -> SandboxBuilder {
    test_builder().call_timeout(Some(Duration::from_secs(10)))
}

pub fn sandbox() -> Sandbox {
    builder().build(&testguest()).unwrap().init().unwrap()
}

pub fn fault_of<T: std::fmt::Debug>(result: Result<T, Error>) -> GuestFault {
    match result {
        Err(Error::GuestFault(f)) => f,
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

pub fn protocol_of<T: std::fmt::Debug>(result: Result<T, Error>) -> ProtocolError {
    match result {
        Err(Error::Protocol(e)) => e,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// The test guest's boot info, as it reads it.
pub fn boot_info(sb: &mut Sandbox) -> BootInfo {
    let bytes = sb.typed_fn::<(), Vec<u8>>("boot_info").unwrap().call(sb, ()).unwrap();
    BootInfo::from_bytes(&bytes.try_into().expect("88 bytes of boot info"))
}

/// A raw guest that behaves like a tiny guest library: at its entry it copies a function table
/// (exports `ok: () -> i32` and `hostile: () -> ()`, no imports) into the output buffer and returns; each call then
/// reads the function index from the input buffer. `ok` writes the outcome "i32 42" and returns;
/// `hostile` falls through to the bytes appended after the prelude, at [`HOSTILE_AT`]. `r12`
/// holds the input buffer's address and `r13` the output buffer's throughout.
///
/// ```text
///     mov r12, [rdi + 24]          ; BootInfo.input_addr
///     mov r13, [rdi + 40]          ; BootInfo.output_addr
///     lea rsi, [rip + table]
///     mov rdi, r13
///     mov ecx, table_end - table
///     rep movsb                    ; the export table frame -> output buffer
///     mov edx, 0xe0
///     out dx, al                   ; RETURN (init done)
/// loop:
///     mov eax, [r12 + 4]           ; call frame: u32 len, u32 index, u32 argc
///     test eax, eax
///     jnz hostile
///     mov dword [r13], 6           ; frame length
///     mov word [r13 + 4], 0x0100   ; status OK, tag i32
///     mov dword [r13 + 6], 42
///     mov edx, 0xe0
///     out dx, al                   ; RETURN
///     jmp loop
/// table:  .long 29, 2, 2; .ascii "ok"; .byte 0, 1; .long 7; .ascii "hostile"; .byte 0, 0; .long 0
/// hostile:                         ; the appended bytes
/// ```
pub const RAW_PRELUDE: [u8; 104] = [
    0x4c, 0x8b, 0x67, 0x18, 0x4c, 0x8b, 0x6f, 0x28, 0x48, 0x8d, 0x35, 0x38, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xef, 0xb9,
    0x21, 0x00, 0x00, 0x00, 0xf3, 0xa4, 0xba, 0xe0, 0x00, 0x00, 0x00, 0xee, 0x41, 0x8b, 0x44, 0x24, 0x04, 0x85, 0xc0,
    0x75, 0x40, 0x41, 0xc7, 0x45, 0x00, 0x06, 0x00, 0x00, 0x00, 0x66, 0x41, 0xc7, 0x45, 0x04, 0x00, 0x01, 0x41, 0xc7,
    0x45, 0x06, 0x2a, 0x00, 0x00, 0x00, 0xba, 0xe0, 0x00, 0x00, 0x00, 0xee, 0xeb, 0xd8, 0x1d, 0x00, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x6f, 0x6b, 0x00, 0x01, 0x07, 0x00, 0x00, 0x00, 0x68, 0x6f, 0x73, 0x74,
    0x69, 0x6c, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// Guest address of the first hostile byte.
pub const HOSTILE_AT: u64 = IMAGE_BASE + RAW_PRELUDE.len() as u64;

/// A ready raw guest running `code` when its `hostile` function is called.
pub fn raw_sandbox(code: &[u8]) -> Sandbox {
    raw_sandbox_with(&builder(), code)
}

/// [`raw_sandbox`] from `builder`, with the raw guests' short deadline.
pub fn raw_sandbox_with(builder: &SandboxBuilder, code: &[u8]) -> Sandbox {
    let mut bytes = RAW_PRELUDE.to_vec();
    bytes.extend_from_slice(code);
    let image = GuestImage::from_bytes(&RawElf::exec(&bytes).build()).unwrap();
    let mut sb = builder.clone().call_timeout(Some(RAW_TIMEOUT)).build(&image).unwrap().init().unwrap();
    assert_eq!(sb.call("ok", &[]).unwrap(), Value::I32(42), "the raw prelude works");
    sb
}

/// Builds a raw guest around `code`, calls `hostile` with a bystander running, checks recovery,
/// and returns the call's error.
pub fn raw_hostile(code: &[u8]) -> Error {
    let mut sb = raw_sandbox(code);
    hostile(&mut sb, |sb| {
        let err = sb.call("hostile", &[]).expect_err("the hostile code returned");
        assert_eq!(err.poisons(), sb.is_poisoned(), "{err}");
        err
    })
}

/// Asserts `err` is a fault of `kind` at `rip`.
pub fn assert_fault_at(err: Error, kind: FaultKind, rip: u64) -> GuestFault {
    let f = fault_of::<()>(Err(err));
    assert_eq!((f.kind, f.rip), (kind, rip), "{f}");
    f
}

/// A frame: length prefix and body.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Calls the test guest's `raw_frame`: `bytes` go to the output buffer as they are, then an
/// `out` to `port`.
pub fn raw_frame(sb: &mut Sandbox, bytes: &[u8], port: u16) -> Result<Value, Error> {
    sb.call("raw_frame", &[Value::Bytes(bytes.to_vec()), Value::U32(u32::from(port))])
}

/// Runs the inner test `name` of this binary in a child process (so process-wide counts or
/// signal masks are its own), killing it after `limit`. Returns whether it passed, and its output.
pub fn run_child(name: &str, limit: Duration) -> (bool, String) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
        .env("GLINT_HOSTILE_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match status {
        Some(s) => (s.success() && text.contains("1 passed"), text),
        None => (false, format!("{text}\n(killed after {limit:?})")),
    }
}

/// Whether this process is a child started by [`run_child`]; inner tests do nothing otherwise
/// (`cargo test -- --ignored` must not run them in the shared test process).
pub fn in_child() -> bool {
    let child = std::env::var("GLINT_HOSTILE_CHILD").as_deref() == Ok("1");
    if !child {
        eprintln!("note: inner test; it runs only in the child process its outer test starts");
    }
    child
}

/// Calls `name` while another thread kills it as soon as it runs.
pub fn call_and_kill(sb: &mut Sandbox, name: &str, args: &[Value]) -> Result<Value, Error> {
    let handle = sb.interrupt_handle();
    let killer = thread::spawn(move || wait_until(PATIENCE, || handle.kill()));
    let result = sb.call(name, args);
    assert!(killer.join().unwrap(), "kill() never found the call running");
    result
}

/// The raw sandboxes' deadline.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(1);
