//! The test guest: one function per behaviour the host's tests check, hostile ones included.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use glint_guest::abi::layout::{BootInfo, BOOT_INFO_ADDR, BOOT_INFO_SIZE};
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
/// Handles a host error and fails for a reason of its own that quotes it: the caller must get
/// this function's error, not the host function's.
fn host_fail_own_error() -> Result<String, String> {
    match glint_guest::host::call::<String, _>("fail", ()) {
        Ok(v) => Ok(v),
        Err(e) => Err(format!("gave up after: {}", e.message)),
    }
}

glint_guest::imports! {
    /// Registered by the tests' builder (tests/common): `add(i32, i32) -> i32`.
    fn add(a: i32, b: i32) -> i32;
}

/// Calls the declared import `add` through its typed wrapper.
fn import_add(a: i32, b: i32) -> Result<i32, HostCallError> {
    add(a, b)
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

// Hostile behaviours of the catalogue (docs/SECURITY.md), for tests/hostile.rs.
// They bypass the guest library where the point is to send the host what the library never would.

/// The boot info, read directly (the guest library keeps its copy private).
fn boot() -> BootInfo {
    let mut raw = [0u8; BOOT_INFO_SIZE];
    // SAFETY: the host maps the boot-info page read-only at BOOT_INFO_ADDR.
    unsafe { core::ptr::copy_nonoverlapping(BOOT_INFO_ADDR as *const u8, raw.as_mut_ptr(), BOOT_INFO_SIZE) };
    BootInfo::from_bytes(&raw)
}

/// Leaves the VM through `port` (one byte, `out dx, al`), with whatever the buffers hold.
fn out(port: u16) {
    // SAFETY: an `out` only exits to the host (or faults); not `nomem`, so earlier buffer writes
    // are complete before it.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") 0u8, options(nostack)) }
}

/// The boot info as the host wrote it (88 bytes), so tests can aim at the guest's own regions.
fn boot_info() -> Vec<u8> {
    boot().to_bytes().to_vec()
}

/// Copies `bytes` (length prefix included, unchecked) to the start of the output buffer and
/// leaves through `port`. Empty `bytes` writes nothing, so the host sees whatever is there.
fn raw_frame(bytes: Vec<u8>, port: u32) {
    let b = boot();
    let n = bytes.len().min(b.output_size as usize);
    // SAFETY: the output buffer is `output_size` bytes of guest memory nothing else borrows now.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), b.output_addr as *mut u8, n) };
    out(port as u16);
}

/// `out` of 1, 2 or 4 bytes to any port.
fn port_out(port: u32, width: u32) {
    let port = port as u16;
    // SAFETY: port I/O exits to the host or faults; that is the point.
    unsafe {
        match width {
            1 => core::arch::asm!("out dx, al", in("dx") port, in("al") 0u8, options(nostack)),
            2 => core::arch::asm!("out dx, ax", in("dx") port, in("ax") 0u16, options(nostack)),
            _ => core::arch::asm!("out dx, eax", in("dx") port, in("eax") 0u32, options(nostack)),
        }
    }
}

/// `in al, dx` from any port.
fn port_in(port: u32) -> u32 {
    let v: u8;
    // SAFETY: as `port_out`.
    unsafe { core::arch::asm!("in al, dx", in("dx") port as u16, out("al") v, options(nostack)) };
    u32::from(v)
}

/// CPUID leaf/subleaf as 16 bytes: eax, ebx, ecx, edx.
fn cpuid(leaf: u32, subleaf: u32) -> Vec<u8> {
    #[allow(unused_unsafe, reason = "`__cpuid_count` is unsafe on older toolchains")]
    // SAFETY: every x86-64 CPU has CPUID.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx].iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn wrmsr(index: u32, value: u64) {
    // SAFETY: faults at CPL3 on purpose.
    unsafe { core::arch::asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32) }
}
fn rdmsr(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: faults at CPL3 on purpose.
    unsafe { core::arch::asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi) };
    (u64::from(hi) << 32) | u64::from(lo)
}
fn dr7_write(value: u64) {
    // SAFETY: faults at CPL3 on purpose.
    unsafe { core::arch::asm!("mov dr7, {v}", v = in(reg) value) }
}
fn swapgs() {
    // SAFETY: faults at CPL3 on purpose.
    unsafe { core::arch::asm!("swapgs") }
}
fn xsetbv(value: u64) {
    // SAFETY: faults at CPL3 on purpose.
    unsafe { core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32) }
}

// CPU state a tenant could try to leave behind (restore must put all of it back).
fn x87_cw_set(cw: u32) {
    let cw = cw as u16;
    // SAFETY: loads the x87 control word; this soft-float guest never uses the x87 unit.
    unsafe { core::arch::asm!("fldcw [{p}]", p = in(reg) &cw) }
}
fn x87_cw_get() -> u32 {
    let mut cw = 0u16;
    // SAFETY: stores the x87 control word.
    unsafe { core::arch::asm!("fnstcw [{p}]", p = in(reg) &mut cw) };
    u32::from(cw)
}
/// Puts `v` in the upper 128 bits of ymm7 (AVX; #UD where the CPU or CR4 does not allow it).
fn ymm_set(v: u64) {
    // SAFETY: writes ymm6/ymm7, which nothing in this soft-float guest uses.
    unsafe { core::arch::asm!("vmovq xmm6, {v}", "vinsertf128 ymm7, ymm7, xmm6, 1", v = in(reg) v) }
}
fn ymm_get() -> u64 {
    let v: u64;
    // SAFETY: reads ymm7 through xmm6, which nothing in this soft-float guest uses.
    unsafe { core::arch::asm!("vextractf128 xmm6, ymm7, 1", "vmovq {v}, xmm6", v = out(reg) v) };
    v
}
/// Broadcasts `v` into zmm31 and its low 16 bits into k7 (AVX-512; #UD without it).
fn zmm_set(v: u64) {
    // SAFETY: writes xmm6, zmm31 and k7, which nothing in this soft-float guest uses.
    unsafe { core::arch::asm!("vmovq xmm6, {v}", "vpbroadcastq zmm31, xmm6", "kmovw k7, {v:e}", v = in(reg) v) }
}
fn zmm_get() -> String {
    let (hi, k): (u64, u32);
    // SAFETY: reads zmm31 and k7 through ymm6.
    unsafe {
        core::arch::asm!(
            "vextracti64x4 ymm6, zmm31, 1",
            "vmovq {hi}, xmm6",
            "kmovw {k:e}, k7",
            hi = out(reg) hi,
            k = out(reg) k,
        )
    };
    format!("{hi:#x}|{k:#x}")
}
/// `wrfsbase` / `wrgsbase` (#UD unless CR4.FSGSBASE, or the host's CR4 under kvm_pvm, allows it).
fn fsbase_set(v: u64) {
    // SAFETY: the guest has no TLS; nothing uses the FS base.
    unsafe { core::arch::asm!("wrfsbase {v}", v = in(reg) v) }
}
fn fsbase_get() -> u64 {
    let v: u64;
    // SAFETY: reads the FS base.
    unsafe { core::arch::asm!("rdfsbase {v}", v = out(reg) v) };
    v
}
fn gsbase_set(v: u64) {
    // SAFETY: nothing in the guest uses the GS base.
    unsafe { core::arch::asm!("wrgsbase {v}", v = in(reg) v) }
}
fn gsbase_get() -> u64 {
    let v: u64;
    // SAFETY: reads the GS base.
    unsafe { core::arch::asm!("rdgsbase {v}", v = out(reg) v) };
    v
}

/// Loads `sel` into DS, ES, FS and GS (a null selector, or one the CPU accepts at CPL3; anything
/// else raises #GP). Under kvm_pvm these are the vCPU thread's own registers.
fn sel_set(sel: u32) {
    let s = sel as u16;
    // SAFETY: segment loads only change what this guest's later memory accesses use; in 64-bit
    // mode DS/ES bases are ignored, and nothing in the guest uses FS or GS.
    unsafe { core::arch::asm!("mov ds, {s:x}", "mov es, {s:x}", "mov fs, {s:x}", "mov gs, {s:x}", s = in(reg) s) }
}
/// DS | ES << 16 | FS << 32 | GS << 48.
fn sel_get() -> u64 {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reads segment selectors.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
        )
    };
    u64::from(ds) | u64::from(es) << 16 | u64::from(fs) << 32 | u64::from(gs) << 48
}
/// Loads `sel` into SS (the stack keeps working: 64-bit mode ignores the SS base and limit).
fn ss_set(sel: u32) {
    let s = sel as u16;
    // SAFETY: as `sel_set`; the stack pointer is untouched.
    unsafe { core::arch::asm!("mov ss, {s:x}", s = in(reg) s) }
}
fn ss_get() -> u32 {
    let ss: u16;
    // SAFETY: reads SS.
    unsafe { core::arch::asm!("mov {0:x}, ss", out(reg) ss) };
    u32::from(ss)
}
/// `wrpkru` (protection keys; #UD where CR4.PKE is clear). Keeps key 0 accessible, so the guest
/// can still touch its own memory.
fn pkru_set(v: u32) {
    // SAFETY: PKRU gates only accesses to pages with a non-zero key; the caller keeps key 0 open.
    unsafe { core::arch::asm!("wrpkru", in("eax") v & !3, in("ecx") 0u32, in("edx") 0u32) }
}
fn pkru_get() -> u32 {
    let v: u32;
    // SAFETY: reads PKRU.
    unsafe { core::arch::asm!("rdpkru", out("eax") v, in("ecx") 0u32, out("edx") _) };
    v
}
/// Sets RFLAGS.AC (alignment check) and leaves it set: a flag a tenant could leave behind.
fn ac_set() {
    // SAFETY: `stac` is privileged; `popfq` with AC is not. With CR0.AM clear it checks nothing.
    unsafe { core::arch::asm!("pushfq", "or qword ptr [rsp], 0x40000", "popfq") }
}
fn rflags_get() -> u64 {
    let f: u64;
    // SAFETY: reads RFLAGS.
    unsafe { core::arch::asm!("pushfq", "pop {f}", f = out(reg) f) };
    f
}
/// Plants x87 stack contents: `v` (as a float) pushed onto the x87 register stack, left there.
fn x87_push(v: u64) {
    let f = v as f64;
    // SAFETY: pushes onto the x87 stack, which this soft-float guest never uses.
    unsafe { core::arch::asm!("fld qword ptr [{p}]", p = in(reg) &f) }
}
/// The x87 status word (TOP says how many values were pushed) and tag word, as FNSTENV sees them.
fn x87_env() -> u64 {
    let mut env = [0u16; 14];
    // SAFETY: stores the 28-byte x87 environment into a local buffer, then reloads it (FNSTENV
    // masks exceptions as a side effect; FLDENV puts them back).
    unsafe { core::arch::asm!("fnstenv [{p}]", "fldenv [{p}]", p = in(reg) env.as_mut_ptr()) };
    u64::from(env[2]) | u64::from(env[4]) << 16
}
/// Sets SSE state, then faults in the same call: the restore after a fault must reset it too.
fn secrets_then_fault(v: u64) {
    secrets_set(v);
    ymm_set(v);
    // SAFETY: raises #UD on purpose.
    unsafe { core::arch::asm!("ud2") }
}
/// What `lsl` reveals about the host through the host's per-CPU GDT entry (Linux's CPUNODE
/// segment, selector 0x7b, the vgetcpu trick) and what `rdpid` returns; 0xffff_ffff when the
/// instruction fails or faults is caught as ZF clear.
fn lsl_cpunode() -> u64 {
    let (limit, ok): (u32, u8);
    // SAFETY: `lsl` only reads a descriptor's limit, or clears ZF.
    unsafe {
        core::arch::asm!("lsl {l:e}, {s:e}", "setz {ok}", l = out(reg) limit, s = in(reg) 0x7bu32, ok = out(reg_byte) ok)
    };
    if ok == 1 {
        u64::from(limit)
    } else {
        0xffff_ffff
    }
}
fn rdpid() -> u64 {
    let v: u64;
    // SAFETY: reads TSC_AUX (#UD where RDPID is absent).
    unsafe { core::arch::asm!("rdpid {v}", v = out(reg) v) };
    v
}
/// Writes `value` at `addr` (a page of the guest's own memory), for restore tests that read it back.
fn poke(addr: u64, value: u64) {
    // SAFETY: the caller aims at the guest's own writable memory; a wrong address just faults.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}
fn peek(addr: u64) -> u64 {
    // SAFETY: as `poke`.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
/// Sum of `len` bytes at `addr`, to check a region's contents cheaply.
fn sum_bytes(addr: u64, len: u64) -> u64 {
    // SAFETY: as `poke`; reads only.
    (0..len).map(|i| u64::from(unsafe { core::ptr::read_volatile((addr + i) as *const u8) })).sum()
}

/// Bytes kept on the heap across calls (until a restore), for tests of what a snapshot carries.
static KEPT: GuestCell<Vec<Vec<u8>>> = GuestCell::new(Vec::new());
/// Keeps a heap copy of `bytes`; returns how many buffers are kept.
fn keep(bytes: Vec<u8>) -> u64 {
    KEPT.with(|k| {
        k.push(bytes);
        k.len() as u64
    })
}
/// The sum of every kept byte.
fn kept_sum() -> u64 {
    KEPT.with(|k| k.iter().flatten().map(|&b| u64::from(b)).sum())
}

/// A cell for the single-threaded guest (one vCPU, no interrupts).
struct GuestCell<T>(core::cell::UnsafeCell<T>);
// SAFETY: the guest has one thread and nothing preempts it, so no two accesses overlap.
unsafe impl<T> Sync for GuestCell<T> {}
impl<T> GuestCell<T> {
    const fn new(v: T) -> Self {
        GuestCell(core::cell::UnsafeCell::new(v))
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: single-threaded and not re-entered (see the `Sync` impl), so this is the only
        // reference while `f` runs.
        f(unsafe { &mut *self.0.get() })
    }
}

/// A 1 MiB array on the stack: more than the default 256 KiB stack.
fn big_stack_array(index: u64) -> u64 {
    let a = core::hint::black_box([7u8; 1 << 20]);
    u64::from(a[index as usize % a.len()])
}
/// One allocation of `n` bytes (`u64::MAX` overflows the capacity computation first).
fn alloc_bytes(n: u64) -> u64 {
    let v: Vec<u8> = Vec::with_capacity(n as usize);
    core::hint::black_box(&v);
    v.capacity() as u64
}
/// Leaks allocations of `size` bytes until the heap runs out (which panics).
fn alloc_until_oom(size: u64) -> u64 {
    loop {
        core::hint::black_box(Vec::<u8>::with_capacity(size as usize).leak());
    }
}
/// Fills the input and output buffers and the whole heap (allocator state included) with `fill`;
/// returns the number of pages written. The guest library cannot allocate afterwards.
fn dirty_memory(fill: u32) -> u64 {
    let b = boot();
    let mut pages = 0;
    for (addr, size) in [(b.input_addr, b.input_size), (b.output_addr, b.output_size), (b.heap_addr, b.heap_size)] {
        // SAFETY: guest memory the host gave this guest; nothing borrows it across this call
        // (the arguments are decoded, the result is written afterwards).
        unsafe { core::ptr::write_bytes(addr as *mut u8, fill as u8, size as usize) };
        pages += size / 4096;
    }
    pages
}
/// Calls whatever is at `addr`.
fn jump_to(addr: u64) {
    // SAFETY: faults on purpose (no page the guest may write is executable).
    unsafe { core::arch::asm!("call {a}", a = in(reg) addr, clobber_abi("C")) }
}
/// Executes a `ret` placed on its own stack.
fn exec_stack() {
    let code = core::hint::black_box([0xc3u8; 16]);
    jump_to(code.as_ptr() as u64);
}

/// Logs until the deadline.
fn log_forever() -> u64 {
    let mut n = 0u64;
    loop {
        glint_guest::println!("flood {n}");
        n = n.wrapping_add(1);
    }
}
/// `n` host calls to `add`.
fn host_calls(n: u64) -> Result<u64, HostCallError> {
    for i in 0..n {
        let r: i32 = glint_guest::host::call("add", (1, 2))?;
        if r != 3 {
            panic!("host call {i} returned {r}");
        }
    }
    Ok(n)
}
/// Calls `name` with no arguments and propagates its error.
fn host_call_named(name: String) -> Result<String, HostCallError> {
    glint_guest::host::call(&name, ())
}
/// Calls `name` with one string (wrong arity or types for most host functions).
fn host_call_str(name: String, a: String) -> Result<i32, HostCallError> {
    glint_guest::host::call(&name, (a,))
}
/// Calls `name` with two strings.
fn host_call_str2(name: String, a: String, b: String) -> Result<i32, HostCallError> {
    glint_guest::host::call(&name, (a, b))
}
/// Sends `len` bytes to `name`, reporting what came back.
fn host_call_bytes(name: String, len: u64) -> String {
    match glint_guest::host::call::<u64, _>(&name, (vec![0xabu8; len as usize],)) {
        Ok(v) => format!("ok:{v}"),
        Err(e) => format!("err:{}:{}", e.code, e.message),
    }
}
/// Asks `name` for bytes, reporting their length or the error.
fn host_fetch_bytes(name: String) -> String {
    match glint_guest::host::call::<Vec<u8>, _>(&name, ()) {
        Ok(v) => format!("ok:{}", v.len()),
        Err(e) => format!("err:{}:{}", e.code, e.message),
    }
}
/// Calls `sleep_ms`, then logs and changes state: visible if the host ever resumed it.
fn host_sleep_then_log(ms: u32) -> Result<u32, HostCallError> {
    let r: u32 = glint_guest::host::call("sleep_ms", (ms,))?;
    STATE.store(0xdead, Ordering::Relaxed);
    glint_guest::println!("resumed after the host call");
    Ok(r)
}
/// Sends `len` bytes of 0xAA to `keep`, scribbles 0x55 over the whole output buffer (where the
/// request was), then sends 16 bytes of 0xBB.
fn host_keep_then_scribble(len: u64) -> Result<u64, HostCallError> {
    let first: u64 = glint_guest::host::call("keep", (vec![0xaau8; len as usize],))?;
    let b = boot();
    // SAFETY: the output buffer is guest memory nothing borrows between host calls.
    unsafe { core::ptr::write_bytes(b.output_addr as *mut u8, 0x55, b.output_size as usize) };
    let second: u64 = glint_guest::host::call("keep", (vec![0xbbu8; 16],))?;
    Ok(first + second)
}
/// Pure computation for about `n` iterations.
fn busy(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = core::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
    }
    acc
}

/// For the gdb stub's tests: an export that calls a function gdb can break on at its exact
/// entry, where the C calling convention puts `a` and `b` in `edi` and `esi` and the address of
/// the caller's local `sum` (on the stack) in `rdx`; the local holds `a + b` once it returns.
fn debug_add(a: i32, b: i32) -> i32 {
    let mut sum = 0;
    debug_add_into(a, b, &mut sum);
    core::hint::black_box(sum)
}
#[inline(never)]
#[no_mangle]
extern "C" fn debug_add_into(a: i32, b: i32, sum: &mut i32) {
    *sum = a.wrapping_add(b);
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
    boot_info,
    raw_frame,
    port_out,
    port_in,
    cpuid,
    wrmsr,
    rdmsr,
    dr7_write,
    swapgs,
    xsetbv,
    x87_cw_set,
    x87_cw_get,
    ymm_set,
    ymm_get,
    zmm_set,
    zmm_get,
    fsbase_set,
    fsbase_get,
    gsbase_set,
    gsbase_get,
    big_stack_array,
    alloc_bytes,
    alloc_until_oom,
    dirty_memory,
    jump_to,
    exec_stack,
    log_forever,
    host_calls,
    host_call_named,
    host_call_str,
    host_call_str2,
    host_call_bytes,
    host_fetch_bytes,
    host_sleep_then_log,
    host_keep_then_scribble,
    busy,
    sel_set,
    sel_get,
    ss_set,
    ss_get,
    pkru_set,
    pkru_get,
    ac_set,
    rflags_get,
    x87_push,
    x87_env,
    secrets_then_fault,
    lsl_cpunode,
    rdpid,
    poke,
    peek,
    sum_bytes,
    keep,
    debug_add,
    kept_sum,
    host_fail_own_error,
    import_add,
);
