//! Crash dumps of faulting guests (docs/DEBUGGING.md), opened by a real gdb.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{temp_dir, test_builder, testguest};
use glint::{CoreDumpLimits, Error, GuestFault, PoolConfig, SandboxPool, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lowest address of the guest's own memory (the boot-info page); everything below is the
/// host's: page tables, GDT, IDT, TSS, exception stubs, fault stack.
const GUEST_START: u64 = glint_abi::layout::BOOT_INFO_ADDR;

fn fault_of(result: Result<Value, Error>) -> GuestFault {
    match result {
        Err(Error::GuestFault(f)) => f,
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

/// `gdb -batch` with `commands` on `args`; its stdout and stderr together.
fn gdb_batch(commands: &[&str], args: &[&str]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = cmd.args(args).output().unwrap();
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn core_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn a_faulting_guest_leaves_a_core_gdb_opens_at_the_faulting_function() {
    require_kvm!();
    if !common::gdb() {
        return;
    }
    let dir = temp_dir("cores");
    let mut sb =
        test_builder().core_dumps(&dir, CoreDumpLimits::default()).build(&testguest()).unwrap().init().unwrap();
    // `divide_error` runs `div ecx` with eax = 1, ecx = 0: #DE, whose stub overwrote al with 0.
    let fault = fault_of(sb.call("divide_error", &[]));
    let core = fault.core_dump.clone().expect("a core file");
    assert_eq!(core, dir.join("glint-0.core"));
    assert!(Error::GuestFault(fault.clone()).to_string().ends_with(&format!("core dumped to {}", core.display())));
    let out = gdb_batch(
        &["bt", "p $rax", "p $rcx", "p/x $pc", "x/x 0x1000", "x/x 0x89ff8"],
        &[glint_guest_artifacts::TESTGUEST, core.to_str().unwrap()],
    );
    assert!(out.contains("Program terminated with signal SIGFPE"), "{out}");
    // The faulting function by name and source line, and the frames up to the entry point.
    assert!(out.contains("#0  ") && out.contains("divide_error () at test/testguest/src/main.rs:"), "{out}");
    // (The export's call is a closure in src/export.rs since arguments are decoded before it runs.)
    assert!(out.contains("src/export.rs:"), "{out}");
    assert!(out.contains("start () at src/rt.rs:") && out.contains("in _start ()"), "{out}");
    // Registers at the fault: rax as the guest had it (the stub saved it), rip from the frame.
    assert!(out.contains("$1 = 1\n") && out.contains("$2 = 0\n"), "{out}");
    assert!(out.contains(&format!("$3 = {:#x}", fault.rip)), "{out}");
    // The page tables and the fault stack are not in the file.
    assert!(out.contains("Cannot access memory at address 0x1000"), "{out}");
    assert!(out.contains("Cannot access memory at address 0x89ff8"), "{out}");
    assert!(!out.contains("may not match"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_core_holds_the_guests_own_memory_and_nothing_below_it() {
    require_kvm!();
    let dir = temp_dir("cores");
    let mut sb =
        test_builder().core_dumps(&dir, CoreDumpLimits::default()).build(&testguest()).unwrap().init().unwrap();
    let info = sb.call("boot_info", &[]).unwrap();
    let fault = fault_of(sb.call("write_to", &[Value::U64(0x10)]));
    assert_eq!((fault.address, fault.error_code.map(|c| c & 2)), (Some(0x10), Some(2)));
    let bytes = std::fs::read(fault.core_dump.unwrap()).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
    let loads: Vec<_> =
        elf.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD).collect();
    assert!(loads.iter().all(|p| p.p_vaddr >= GUEST_START), "{loads:?}");
    // The stack (ending at the top of guest memory) and the code are there, code executable.
    let Value::Bytes(info) = info else { panic!("boot_info returns bytes") };
    let memory_size = u64::from_le_bytes(info[16..24].try_into().unwrap());
    assert!(loads.iter().any(|p| p.p_vaddr + p.p_memsz == memory_size && p.p_flags & 2 != 0));
    assert!(loads.iter().any(|p| p.p_flags & 1 != 0 && p.p_flags & 2 == 0 && p.p_filesz > 0));
    // Untouched memory costs nothing: far below the 16 MiB of guest memory.
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_guest_faulting_in_a_loop_writes_at_most_max_files_cores_of_at_most_max_bytes() {
    require_kvm!();
    let dir = temp_dir("cores");
    let limits = CoreDumpLimits { max_files: 3, max_bytes: 128 << 10 };
    let pool = SandboxPool::new(&test_builder().core_dumps(&dir, limits), &testguest(), PoolConfig::default()).unwrap();
    let mut dumped = Vec::new();
    for _ in 0..10 {
        let fault = fault_of(pool.call("divide_error", &[]));
        dumped.extend(fault.core_dump);
    }
    assert_eq!(dumped.len(), 3);
    assert_eq!(core_files(&dir), dumped);
    for path in &dumped {
        assert!(std::fs::metadata(path).unwrap().len() <= 128 << 10);
    }
    // The pool is fine: the next call works.
    assert_eq!(pool.call("rt_i32", &[Value::I32(7)]).unwrap(), Value::I32(7));
    // Freeing a name lets the next fault use it.
    std::fs::remove_file(&dumped[1]).unwrap();
    assert_eq!(fault_of(pool.call("divide_error", &[])).core_dump.as_ref(), Some(&dumped[1]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_the_option_no_core_is_written() {
    require_kvm!();
    let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    assert_eq!(fault_of(sb.call("divide_error", &[])).core_dump, None);
}
