//! The test guest: one function per behaviour the host's tests check, hostile ones included.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use glint_guest::HostCallError;

// Round trips of every value type.
fn rt_unit() {}
fn rt_i32(v: i32) -> i32 {
    v
}
fn rt_u32(v: u32) -> u32 {
    v
}
fn rt_i64(v: i64) -> i64 {
    v
}
fn rt_u64(v: u64) -> u64 {
    v
}
fn rt_f32(v: f32) -> f32 {
    v
}
fn rt_f64(v: f64) -> f64 {
    v
}
fn rt_bool(v: bool) -> bool {
    v
}
fn rt_string(v: String) -> String {
    v
}
fn rt_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

/// Several parameters of different types, folded into one string.
fn mix(a: i32, b: u64, c: String, d: bool, e: f64, f: Vec<u8>) -> String {
    format!("{a}|{b}|{c}|{d}|{e}|{}", f.len())
}

/// A large result built in the guest.
fn make_bytes(len: u64, fill: u32) -> Vec<u8> {
    vec![fill as u8; len as usize]
}

// State.
static STATE: AtomicU64 = AtomicU64::new(0);
fn set_state(v: u64) {
    STATE.store(v, Ordering::Relaxed);
}
fn get_state() -> u64 {
    STATE.load(Ordering::Relaxed)
}

// Host calls.
fn host_add(a: i32, b: i32) -> Result<i32, HostCallError> {
    glint_guest::host::call("add", (a, b))
}
/// Calls `name` with no arguments and reports what came back, so tests can see the guest's view.
fn host_probe(name: String) -> String {
    match glint_guest::host::call::<String, _>(&name, ()) {
        Ok(v) => format!("ok:{v}"),
        Err(e) => format!("err:{}:{}", e.code, e.message),
    }
}
/// Propagates a host error as this function's own error.
fn host_fail_propagates() -> Result<String, HostCallError> {
    glint_guest::host::call("fail", ())
}
fn log_lines(n: u32) -> u32 {
    for i in 0..n {
        glint_guest::println!("line {i}");
    }
    n
}

// Failures.
fn panics(message: String) -> i32 {
    panic!("{message}")
}
fn returns_err(message: String) -> Result<i32, String> {
    Err(message)
}
fn ud2() {
    // SAFETY: raises #UD on purpose.
    unsafe { core::arch::asm!("ud2") }
}
fn read_unmapped(addr: u64) -> u64 {
    // SAFETY: not safe at all: the point is the page fault the host must report.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
fn write_to(addr: u64) {
    // SAFETY: faults on purpose (code pages are read-only).
    unsafe { core::ptr::write_volatile(addr as *mut u64, 0xbad) }
}
fn write_code() {
    write_to(write_code as *const () as u64)
}
fn gp_fault() {
    // SAFETY: a non-canonical address raises #GP on purpose.
    unsafe { core::arch::asm!("mov rax, [rax]", in("rax") 0x8000_0000_0000_0000u64) }
}
fn privileged() {
    // SAFETY: `hlt` at CPL3 raises #GP on purpose.
    unsafe { core::arch::asm!("hlt") }
}
fn divide_error() {
    // SAFETY: divides by zero on purpose (#DE); the asm hides it from Rust's check.
    unsafe { core::arch::asm!("xor edx, edx", "div ecx", in("ecx") 0u32, inout("eax") 1u32 => _, out("edx") _) }
}
fn breakpoint() {
    // SAFETY: raises #BP on purpose.
    unsafe { core::arch::asm!("int3") }
}
fn spin() -> u64 {
    let mut n = 0u64;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}
fn recurse(depth: u64) -> u64 {
    let buf = core::hint::black_box([depth as u8; 512]);
    if depth == 0 {
        return u64::from(buf[0]);
    }
    recurse(depth - 1) + u64::from(buf[1])
}
fn exec_heap() {
    let code: Vec<u8> = vec![0xc3]; // ret
                                    // SAFETY: jumping into the heap faults on purpose (heap pages are no-execute).
    let f: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr()) };
    f();
}

// Secrets for restore tests: memory (static and heap) and CPU state (SSE register, MXCSR).
static HEAP_SECRET: core::sync::atomic::AtomicPtr<u64> = core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
fn secrets_set(v: u64) {
    STATE.store(v, Ordering::Relaxed);
    let b = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(v));
    HEAP_SECRET.store(b, Ordering::Relaxed);
    // SAFETY: writes xmm5 and MXCSR (round toward zero); nothing in this soft-float guest uses them.
    unsafe {
        core::arch::asm!("movq xmm5, {v}", v = in(reg) v);
        let mut csr: u32 = 0;
        core::arch::asm!("stmxcsr [{p}]", p = in(reg) &mut csr);
        csr |= 0x6000;
        core::arch::asm!("ldmxcsr [{p}]", p = in(reg) &csr);
    }
}
fn secrets_get() -> String {
    let heap = HEAP_SECRET.load(Ordering::Relaxed);
    // SAFETY: the pointer is null or a leaked Box<u64> from `secrets_set`.
    let heap = if heap.is_null() { String::from("none") } else { format!("{}", unsafe { *heap }) };
    let xmm5: u64;
    let mut csr: u32 = 0;
    // SAFETY: reads xmm5 and MXCSR.
    unsafe {
        core::arch::asm!("movq {v}, xmm5", v = out(reg) xmm5);
        core::arch::asm!("stmxcsr [{p}]", p = in(reg) &mut csr);
    }
    format!("{}|{heap}|{xmm5}|{csr:#x}", STATE.load(Ordering::Relaxed))
}

glint_guest::exports!(
    secrets_set,
    secrets_get,
    rt_unit,
    rt_i32,
    rt_u32,
    rt_i64,
    rt_u64,
    rt_f32,
    rt_f64,
    rt_bool,
    rt_string,
    rt_bytes,
    mix,
    make_bytes,
    set_state,
    get_state,
    host_add,
    host_probe,
    host_fail_propagates,
    log_lines,
    panics,
    returns_err,
    ud2,
    read_unmapped,
    write_to,
    write_code,
    gp_fault,
    privileged,
    divide_error,
    breakpoint,
    spin,
    recurse,
    exec_heap,
);
