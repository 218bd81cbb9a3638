//! ELF core files of a faulted guest, for `gdb <guest> <core>`.
//!
//! A core file is an ELF64 `ET_CORE` file: one `PT_NOTE` segment with the register notes Linux
//! writes (NT_PRSTATUS with the general registers and the signal, NT_FPREGSET, NT_PRPSINFO,
//! NT_SIGINFO with the faulting address, NT_AUXV so gdb finds where the PIE was loaded) and one
//! `PT_LOAD` segment per run of guest memory. Runs of at least [`MIN_HOLE_PAGES`] zero pages are
//! not stored (`p_filesz` < `p_memsz`; gdb reads them as zeros), so an untouched heap costs
//! nothing.
//!
//! Dumps are bounded: [`CoreDumpLimits::max_bytes`] caps one file (regions are kept in the
//! caller's priority order while they fit; the rest are left out and reported), and
//! [`CoreDumpLimits::max_files`] caps the files in the directory. File names are chosen here,
//! from a counter (`glint-<n>.core`, `n < max_files`), never from anything the guest wrote, and
//! each file is created with `O_CREAT | O_EXCL | O_NOFOLLOW` inside the configured directory, so
//! a guest can neither make the host write elsewhere nor fill the disk.

use super::{FpuRegs, GuestRegs, ProgramInfo, Region, Signal, FXSAVE_SIZE};
use crate::func::host::BoxError;
use glint_abi::layout::PAGE_SIZE;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bounds on the core files a sandbox writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreDumpLimits {
    /// Largest core file, in bytes. Memory regions that would not fit are left out, the stack
    /// and image first kept; a dump whose notes alone do not fit is not written.
    pub max_bytes: u64,
    /// Most core files in the directory (counting those already there, from any sandbox or
    /// process); once that many exist, further faults write none.
    pub max_files: u32,
}

impl Default for CoreDumpLimits {
    /// 64 MiB per file, 16 files.
    fn default() -> Self {
        CoreDumpLimits { max_bytes: 64 << 20, max_files: 16 }
    }
}

/// Where a sandbox writes its core files, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoreDumpConfig {
    pub dir: PathBuf,
    pub limits: CoreDumpLimits,
}

/// Highest [`CoreDumpLimits::max_files`] honoured: every dump may probe that many names.
pub(crate) const MAX_FILES_CAP: u32 = 4096;

/// Runs of zero pages at least this long are left out of the file; shorter ones are stored, so
/// a dump never needs more than one `PT_LOAD` per 64 KiB of memory.
pub(crate) const MIN_HOLE_PAGES: u64 = 16;

/// Why a core file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CoreDumpError {
    #[error("cannot create a core file in {}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write core file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} already holds {max_files} core files, the limit", dir.display())]
    LimitReached { dir: PathBuf, max_files: u32 },
    #[error("a core file needs {needed} bytes for its headers alone, over the {limit}-byte limit")]
    TooSmall { needed: u64, limit: u64 },
    #[error("memory regions overlap at {addr:#x}")]
    Overlap { addr: u64 },
    #[error("cannot read guest memory at {addr:#x}")]
    Memory {
        addr: u64,
        #[source]
        source: BoxError,
    },
    #[error("cannot write the core file")]
    Io(#[source] io::Error),
}

/// Everything about the faulted guest a core file records, besides its memory.
#[derive(Debug, Clone)]
pub(crate) struct CoreDump<'a> {
    /// Registers at the fault, as the guest had them.
    pub regs: GuestRegs,
    /// x87/SSE state, when known.
    pub fpu: Option<FpuRegs>,
    /// The exception vector.
    pub vector: u8,
    /// The exception's error code, for the vectors that push one.
    pub error_code: Option<u64>,
    /// The faulting address (CR2) of a page fault.
    pub fault_addr: Option<u64>,
    /// The program name gdb compares with the executable's file name (pr_fname, 15 bytes kept).
    pub program: &'a str,
    /// What was running (pr_psargs, 79 bytes kept): the function called.
    pub args: &'a str,
    /// Entry point and program headers, for gdb to relocate a PIE.
    pub program_info: ProgramInfo,
    /// The guest's memory, most important first (see [`super::dump_priority`]).
    pub regions: Vec<Region>,
}

/// What a written core file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CoreSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Regions left out because the file would have exceeded its limit.
    pub omitted: Vec<Region>,
}

/// Reads guest memory into the buffer, at a guest address.
pub(crate) type ReadMemory<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), BoxError> + 'a;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
/// `struct elf_prstatus` on x86-64.
const PRSTATUS_SIZE: usize = 336;
/// Offset of `pr_reg` in it.
const PRSTATUS_REG: usize = 112;
/// `struct elf_prpsinfo` on x86-64.
const PRPSINFO_SIZE: usize = 136;
/// `siginfo_t`.
const SIGINFO_SIZE: usize = 128;
/// Bytes read from guest memory at a time.
const CHUNK: usize = 64 << 10;

/// One `PT_LOAD`: `file` bytes of memory from `addr` stored, `mem` bytes described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    addr: u64,
    file: u64,
    mem: u64,
    flags: u32,
    offset: u64,
}

/// The layout of a core file, decided before any byte is written.
struct Plan {
    notes: Vec<u8>,
    segments: Vec<Segment>,
    total: u64,
    omitted: Vec<Region>,
}

/// Writes the core file of `dump` into `out`, reading memory through `read`, in at most
/// `max_bytes` bytes.
pub(crate) fn write_core(
    dump: &CoreDump<'_>,
    read: &mut ReadMemory<'_>,
    max_bytes: u64,
    out: &mut dyn Write,
) -> Result<CoreSummary, CoreDumpError> {
    let plan = plan(dump, read, max_bytes)?;
    let mut out = BufWriter::with_capacity(CHUNK, out);
    let mut written = 0u64;
    let mut put = |out: &mut BufWriter<&mut dyn Write>, bytes: &[u8]| -> Result<(), CoreDumpError> {
        written += bytes.len() as u64;
        if written > plan.total {
            // The plan is exact; writing more would break the size bound it checked.
            return Err(CoreDumpError::Io(io::Error::other("core file outgrew its plan")));
        }
        out.write_all(bytes).map_err(CoreDumpError::Io)
    };
    let phnum = plan.segments.len() + 1;
    put(&mut out, &elf_header(u16::try_from(phnum).unwrap_or(u16::MAX)))?;
    let notes_offset = EHDR_SIZE + PHDR_SIZE * phnum as u64;
    let notes_len = plan.notes.len() as u64;
    put(&mut out, &phdr(PT_NOTE, 0, notes_offset, 0, notes_len, notes_len, 4))?;
    for s in &plan.segments {
        put(&mut out, &phdr(PT_LOAD, s.flags, s.offset, s.addr, s.file, s.mem, PAGE_SIZE))?;
    }
    put(&mut out, &plan.notes)?;
    let mut at = notes_offset + notes_len;
    let zeros = vec![0u8; PAGE_SIZE as usize];
    let mut buf = vec![0u8; CHUNK];
    for s in &plan.segments {
        while at < s.offset {
            let n = (s.offset - at).min(PAGE_SIZE);
            put(&mut out, zeros.get(..n as usize).unwrap_or_default())?;
            at += n;
        }
        let mut done = 0u64;
        while done < s.file {
            let n = (s.file - done).min(CHUNK as u64);
            let chunk = buf.get_mut(..n as usize).unwrap_or_default();
            let addr = s.addr + done;
            read(addr, chunk).map_err(|source| CoreDumpError::Memory { addr, source })?;
            put(&mut out, chunk)?;
            done += n;
        }
        at += s.file;
    }
    debug_assert_eq!(at, plan.total);
    out.flush().map_err(CoreDumpError::Io)?;
    Ok(CoreSummary { bytes: at, omitted: plan.omitted })
}

fn plan(dump: &CoreDump<'_>, read: &mut ReadMemory<'_>, max_bytes: u64) -> Result<Plan, CoreDumpError> {
    let mut sorted: Vec<&Region> = dump.regions.iter().filter(|r| r.len > 0).collect();
    sorted.sort_unstable_by_key(|r| r.addr);
    for w in sorted.windows(2) {
        if let [a, b] = w {
            if a.end() > b.addr {
                return Err(CoreDumpError::Overlap { addr: b.addr });
            }
        }
    }
    let notes = notes(dump);
    let fixed = EHDR_SIZE + PHDR_SIZE + notes.len() as u64;
    if fixed > max_bytes {
        return Err(CoreDumpError::TooSmall { needed: fixed, limit: max_bytes });
    }
    // Pick regions in priority order while the file stays within bounds. The data of each
    // segment starts at a file offset congruent to its address modulo the page size (as
    // `p_align` promises), so each may cost up to a page of padding: counted, to stay exact.
    let mut kept: Vec<Segment> = Vec::new();
    let mut data = 0u64;
    let mut omitted = Vec::new();
    for region in dump.regions.iter().filter(|r| r.len > 0) {
        let segments = scan(region, read)?;
        let extra_data: u64 = segments.iter().map(|s| s.file + if s.file > 0 { PAGE_SIZE } else { 0 }).sum();
        let headers = fixed + PHDR_SIZE * (kept.len() + segments.len()) as u64;
        let total = headers.div_ceil(PAGE_SIZE) * PAGE_SIZE + data + extra_data;
        if total > max_bytes || kept.len() + segments.len() + 1 > usize::from(u16::MAX - 1) {
            omitted.push(*region);
            continue;
        }
        data += extra_data;
        kept.extend(segments);
    }
    kept.sort_unstable_by_key(|s| s.addr);
    let headers = fixed + PHDR_SIZE * kept.len() as u64;
    let data_start = headers.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut at = data_start;
    for s in &mut kept {
        if s.file > 0 {
            let want = s.addr % PAGE_SIZE;
            at += (want + PAGE_SIZE - at % PAGE_SIZE) % PAGE_SIZE;
            s.offset = at;
            at += s.file;
        } else {
            s.offset = at;
        }
    }
    // With no stored data the file ends with the notes, not at a padded page boundary.
    let total = if kept.iter().any(|s| s.file > 0) { at } else { headers };
    for s in &mut kept {
        s.offset = s.offset.min(total);
    }
    Ok(Plan { notes, segments: kept, total, omitted })
}

/// Splits a region into segments: stored runs of pages, each followed by the run of zero pages
/// after it when that run is long enough to leave out.
fn scan(region: &Region, read: &mut ReadMemory<'_>) -> Result<Vec<Segment>, CoreDumpError> {
    let flags = (if region.perms.read { PF_R } else { 0 })
        | (if region.perms.write { PF_W } else { 0 })
        | (if region.perms.exec { PF_X } else { 0 });
    // Which pages (from the region's start, in PAGE_SIZE steps) hold a non-zero byte.
    let mut nonzero = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < region.len {
        let n = (region.len - done).min(CHUNK as u64);
        let chunk = buf.get_mut(..n as usize).unwrap_or_default();
        let addr = region.addr + done;
        read(addr, chunk).map_err(|source| CoreDumpError::Memory { addr, source })?;
        nonzero.extend(chunk.chunks(PAGE_SIZE as usize).map(|p| p.iter().any(|&b| b != 0)));
        done += n;
    }
    let page_len = |i: usize| -> u64 { (region.len - i as u64 * PAGE_SIZE).min(PAGE_SIZE) };
    let mut segments: Vec<Segment> = Vec::new();
    let mut i = 0;
    while i < nonzero.len() {
        // A stored run: non-zero pages and short zero runs between them.
        let start = i;
        let mut end = i;
        while end < nonzero.len() {
            if nonzero.get(end) == Some(&true) {
                end += 1;
                continue;
            }
            let zeros = nonzero.get(end..).unwrap_or_default().iter().take_while(|&&z| !z).count();
            let is_tail = end + zeros == nonzero.len();
            if zeros as u64 >= MIN_HOLE_PAGES || is_tail {
                break;
            }
            end += zeros;
        }
        let zeros = nonzero.get(end..).unwrap_or_default().iter().take_while(|&&z| !z).count();
        let file: u64 = (start..end).map(page_len).sum();
        let mem: u64 = file + (end..end + zeros).map(page_len).sum::<u64>();
        segments.push(Segment { addr: region.addr + start as u64 * PAGE_SIZE, file, mem, flags, offset: 0 });
        i = end + zeros;
    }
    Ok(segments)
}

fn elf_header(phnum: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(EHDR_SIZE as usize);
    h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]); // ELF64, little-endian, v1, SYSV ABI
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    h.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    h.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    h.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&phnum.to_le_bytes());
    h.extend_from_slice(&[0; 6]); // no section headers
    h
}

fn phdr(kind: u32, flags: u32, offset: u64, addr: u64, file: u64, mem: u64, align: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(PHDR_SIZE as usize);
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    for v in [offset, addr, 0, file, mem, align] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p
}

fn note(out: &mut Vec<u8>, kind: u32, desc: &[u8]) {
    const NAME: &[u8] = b"CORE\0";
    out.extend_from_slice(&(NAME.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(NAME);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out.extend_from_slice(desc);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// `user_regs_struct` order, as `pr_reg` holds it.
fn user_regs(r: &GuestRegs) -> [u64; 27] {
    const NOT_A_SYSCALL: u64 = u64::MAX; // orig_rax
    [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        NOT_A_SYSCALL,
        r.rip,
        r.cs,
        r.rflags,
        r.rsp,
        r.ss,
        r.fs_base,
        r.gs_base,
        r.ds,
        r.es,
        r.fs,
        r.gs,
    ]
}

/// `si_code` as Linux would set it for this fault.
fn si_code(dump: &CoreDump<'_>) -> i32 {
    const SEGV_MAPERR: i32 = 1;
    const SEGV_ACCERR: i32 = 2;
    const ILL_ILLOPN: i32 = 2;
    const FPE_INTDIV: i32 = 1;
    const TRAP_BRKPT: i32 = 1;
    const TRAP_TRACE: i32 = 2;
    const SI_KERNEL: i32 = 0x80;
    match (dump.vector, dump.error_code) {
        (14, Some(code)) if code & 1 != 0 => SEGV_ACCERR,
        (14, _) => SEGV_MAPERR,
        (6, _) => ILL_ILLOPN,
        (0, _) => FPE_INTDIV,
        (3, _) => TRAP_BRKPT,
        (1, _) => TRAP_TRACE,
        _ => SI_KERNEL,
    }
}

fn notes(dump: &CoreDump<'_>) -> Vec<u8> {
    const PID: i32 = 1;
    let signal = Signal::for_vector(dump.vector).linux_number();
    let mut out = Vec::new();

    let mut prstatus = [0u8; PRSTATUS_SIZE];
    put(&mut prstatus, 0, &i32::from(signal).to_le_bytes()); // pr_info.si_signo
    put(&mut prstatus, 4, &si_code(dump).to_le_bytes()); // pr_info.si_code
    put(&mut prstatus, 12, &i16::from(signal).to_le_bytes()); // pr_cursig
    for (field, offset) in [(PID, 32), (0, 36), (PID, 40), (PID, 44)] {
        put(&mut prstatus, offset, &field.to_le_bytes()); // pid, ppid, pgrp, sid
    }
    for (i, v) in user_regs(&dump.regs).iter().enumerate() {
        put(&mut prstatus, PRSTATUS_REG + i * 8, &v.to_le_bytes());
    }
    put(&mut prstatus, PRSTATUS_REG + 27 * 8, &i32::from(dump.fpu.is_some()).to_le_bytes()); // pr_fpvalid
    note(&mut out, NT_PRSTATUS, &prstatus);

    if let Some(f) = &dump.fpu {
        let mut fx = [0u8; FXSAVE_SIZE];
        f.write_fxsave(&mut fx);
        put(&mut fx, 28, &0xffffu32.to_le_bytes()); // mxcsr_mask
        note(&mut out, NT_FPREGSET, &fx);
    }

    let mut psinfo = [0u8; PRPSINFO_SIZE];
    put(&mut psinfo, 1, b"R"); // pr_sname
    for (field, offset) in [(PID, 24), (0, 28), (PID, 32), (PID, 36)] {
        put(&mut psinfo, offset, &field.to_le_bytes());
    }
    put(&mut psinfo, 40, truncated(dump.program, 15)); // pr_fname[16], NUL-terminated
    put(&mut psinfo, 56, truncated(dump.args, 79)); // pr_psargs[80]
    note(&mut out, NT_PRPSINFO, &psinfo);

    let mut siginfo = [0u8; SIGINFO_SIZE];
    put(&mut siginfo, 0, &i32::from(signal).to_le_bytes());
    put(&mut siginfo, 8, &si_code(dump).to_le_bytes());
    let addr = dump.fault_addr.unwrap_or(if dump.vector == 14 { 0 } else { dump.regs.rip });
    put(&mut siginfo, 16, &addr.to_le_bytes()); // _sigfault.si_addr
    note(&mut out, NT_SIGINFO, &siginfo);

    note(&mut out, NT_AUXV, &dump.program_info.auxv());
    out
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &[u8] {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.as_bytes().get(..end).unwrap_or_default()
}

/// Writes `dump` as a new core file in `dir`, named `glint-<n>.core` for the lowest `n` below
/// `limits.max_files` not taken yet. Returns the path and what was written.
pub(crate) fn write_core_file(
    dir: &Path,
    limits: &CoreDumpLimits,
    dump: &CoreDump<'_>,
    read: &mut ReadMemory<'_>,
) -> Result<(PathBuf, CoreSummary), CoreDumpError> {
    let max_files = limits.max_files.min(MAX_FILES_CAP);
    let (path, mut file) = (0..max_files)
        .find_map(|n| {
            let path = dir.join(format!("glint-{n}.core"));
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path);
            match opened {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                other => Some(other.map(|f| (path, f))),
            }
        })
        .ok_or_else(|| CoreDumpError::LimitReached { dir: dir.to_path_buf(), max_files })?
        .map_err(|source| CoreDumpError::Create { dir: dir.to_path_buf(), source })?;
    match write_core(dump, read, limits.max_bytes, &mut file).and_then(|s| {
        file.sync_all().map_err(CoreDumpError::Io)?;
        Ok(s)
    }) {
        Ok(summary) => Ok((path, summary)),
        Err(e) => {
            // A partial file would only mislead whoever opens it, and would take a slot.
            drop(file);
            let _ = std::fs::remove_file(&path);
            Err(match e {
                CoreDumpError::Io(source) => CoreDumpError::Write { path, source },
                other => other,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::Perms;
    use goblin::elf::note::Note;
    use goblin::elf::Elf;

    const RW: Perms = Perms { read: true, write: true, exec: false };
    const RX: Perms = Perms { read: true, write: false, exec: true };

    /// A sparse guest memory: pages by address.
    struct Memory(Vec<(u64, Vec<u8>)>);

    impl Memory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BoxError> {
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                *b = self
                    .0
                    .iter()
                    .find(|(start, bytes)| a >= *start && a < start + bytes.len() as u64)
                    .map(|(start, bytes)| bytes[(a - start) as usize])
                    .ok_or_else(|| format!("{a:#x} unmapped"))?;
            }
            Ok(())
        }
    }

    fn dump(regions: Vec<Region>) -> CoreDump<'static> {
        CoreDump {
            regs: GuestRegs {
                rip: 0x20_1234,
                rsp: 0x7f_ff00,
                rax: 42,
                r15: 15,
                rflags: 0x10246,
                cs: 0x23,
                ss: 0x1b,
                ..Default::default()
            },
            fpu: Some(FpuRegs { fcw: 0x37f, mxcsr: 0x1f80, xmm: [[7; 16]; 16], ..Default::default() }),
            vector: 14,
            error_code: Some(6),
            fault_addr: Some(0xdead_0000),
            program: "hello-with-a-very-long-name",
            args: "add",
            program_info: ProgramInfo { entry: 0x20_21b0, phdr: Some((0x20_0040, 9)) },
            regions,
        }
    }

    fn build(dump: &CoreDump<'_>, mem: &Memory, max: u64) -> (Vec<u8>, CoreSummary) {
        let mut out = Vec::new();
        let summary = write_core(dump, &mut |a, b| mem.read(a, b), max, &mut out).unwrap();
        assert_eq!(summary.bytes, out.len() as u64);
        (out, summary)
    }

    fn notes(bytes: &[u8]) -> Vec<Note<'_>> {
        let elf = Elf::parse(bytes).unwrap();
        elf.iter_note_headers(bytes).unwrap().map(|n| n.unwrap()).collect()
    }

    #[test]
    fn parses_back_with_registers_signal_and_memory() {
        let stack: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        let code = vec![0xccu8; PAGE_SIZE as usize];
        let mem = Memory(vec![(0x20_1000, code.clone()), (0x7f_e000, stack.clone())]);
        let regions = vec![
            Region { addr: 0x7f_e000, len: 2 * PAGE_SIZE, perms: RW },
            Region { addr: 0x20_1000, len: PAGE_SIZE, perms: RX },
        ];
        let (bytes, summary) = build(&dump(regions), &mem, 1 << 20);
        assert!(summary.omitted.is_empty());
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
        assert_eq!(elf.header.e_machine, goblin::elf::header::EM_X86_64);
        let loads: Vec<_> = elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD).collect();
        assert_eq!(loads.len(), 2);
        // Ascending addresses, contents at their offsets, permissions kept.
        assert_eq!((loads[0].p_vaddr, loads[0].p_flags), (0x20_1000, PF_R | PF_X));
        assert_eq!((loads[1].p_vaddr, loads[1].p_flags), (0x7f_e000, PF_R | PF_W));
        assert_eq!(&bytes[loads[0].file_range()], &code[..]);
        assert_eq!(&bytes[loads[1].file_range()], &stack[..]);
        assert!(loads.iter().all(|p| p.p_offset % PAGE_SIZE == p.p_vaddr % PAGE_SIZE));

        let notes = notes(&bytes);
        let kinds: Vec<u32> = notes.iter().map(|n| n.n_type).collect();
        assert_eq!(kinds, [NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_SIGINFO, NT_AUXV]);
        assert!(notes.iter().all(|n| n.name == "CORE"));
        let prstatus = notes[0].desc;
        assert_eq!(prstatus.len(), PRSTATUS_SIZE);
        assert_eq!(i16::from_le_bytes([prstatus[12], prstatus[13]]), 11); // SIGSEGV
        let reg = |i: usize| u64::from_le_bytes(prstatus[PRSTATUS_REG + i * 8..][..8].try_into().unwrap());
        assert_eq!(
            (reg(0), reg(10), reg(15), reg(16), reg(18), reg(19)),
            (15, 42, u64::MAX, 0x20_1234, 0x10246, 0x7f_ff00)
        );
        assert_eq!(&notes[1].desc[160..176], &[7; 16]);
        assert_eq!(&notes[2].desc[40..56], b"hello-with-a-ve\0");
        assert_eq!(&notes[2].desc[56..60], b"add\0");
        assert_eq!(&notes[3].desc[16..24], &0xdead_0000u64.to_le_bytes());
        assert_eq!(i32::from_le_bytes(notes[3].desc[8..12].try_into().unwrap()), 1); // SEGV_MAPERR
        assert_eq!(notes[4].desc, ProgramInfo { entry: 0x20_21b0, phdr: Some((0x20_0040, 9)) }.auxv());
    }

    #[test]
    fn long_zero_runs_are_left_out_of_the_file() {
        // 64 pages: data, 20 zero pages, data, 3 zero pages, data, then zeros to the end.
        let pages = 64u64;
        let mut heap = vec![0u8; (pages * PAGE_SIZE) as usize];
        for p in [0u64, 21, 25] {
            heap[(p * PAGE_SIZE + 17) as usize] = 1;
        }
        let mem = Memory(vec![(0x40_0000, heap.clone())]);
        let (bytes, _) =
            build(&dump(vec![Region { addr: 0x40_0000, len: pages * PAGE_SIZE, perms: RW }]), &mem, 1 << 20);
        let elf = Elf::parse(&bytes).unwrap();
        let loads: Vec<_> = elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD).collect();
        let shape: Vec<(u64, u64, u64)> = loads
            .iter()
            .map(|p| ((p.p_vaddr - 0x40_0000) / PAGE_SIZE, p.p_filesz / PAGE_SIZE, p.p_memsz / PAGE_SIZE))
            .collect();
        assert_eq!(shape, [(0, 1, 21), (21, 5, 43)]);
        // What is stored is the memory; what is left out was zero.
        for p in &loads {
            let start = (p.p_vaddr - 0x40_0000) as usize;
            assert_eq!(&bytes[p.file_range()], &heap[start..start + p.p_filesz as usize]);
            assert!(heap[start + p.p_filesz as usize..start + p.p_memsz as usize].iter().all(|&b| b == 0));
        }
        assert!(bytes.len() < 8 * PAGE_SIZE as usize, "{} bytes", bytes.len());
    }

    #[test]
    fn an_all_zero_region_costs_no_file_bytes() {
        let mem = Memory(vec![(0x40_0000, vec![0; 4 * PAGE_SIZE as usize])]);
        let (bytes, _) = build(&dump(vec![Region { addr: 0x40_0000, len: 4 * PAGE_SIZE, perms: RW }]), &mem, 1 << 20);
        let elf = Elf::parse(&bytes).unwrap();
        let load = elf.program_headers.iter().find(|p| p.p_type == PT_LOAD).unwrap();
        assert_eq!((load.p_filesz, load.p_memsz), (0, 4 * PAGE_SIZE));
        assert!(load.p_offset <= bytes.len() as u64);
    }

    #[test]
    fn regions_that_do_not_fit_are_left_out_in_priority_order() {
        let ones = |n: u64| vec![1u8; (n * PAGE_SIZE) as usize];
        let mem = Memory(vec![(0x10_0000, ones(4)), (0x20_0000, ones(2)), (0x30_0000, ones(8))]);
        let stack = Region { addr: 0x10_0000, len: 4 * PAGE_SIZE, perms: RW };
        let image = Region { addr: 0x20_0000, len: 2 * PAGE_SIZE, perms: RX };
        let heap = Region { addr: 0x30_0000, len: 8 * PAGE_SIZE, perms: RW };
        let limit = 10 * PAGE_SIZE;
        let (bytes, summary) = build(&dump(vec![stack, heap, image]), &mem, limit);
        assert!(bytes.len() as u64 <= limit);
        assert_eq!(summary.omitted, [heap]);
        let elf = Elf::parse(&bytes).unwrap();
        let addrs: Vec<u64> = elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD).map(|p| p.p_vaddr).collect();
        assert_eq!(addrs, [0x10_0000, 0x20_0000]);

        // Exactly at the limit is fine; the limit is never exceeded, whatever it is.
        for limit in (0..40).map(|i| i * 1000 + 900) {
            let mut out = Vec::new();
            match write_core(&dump(vec![stack, heap, image]), &mut |a, b| mem.read(a, b), limit, &mut out) {
                Ok(s) => assert!(s.bytes <= limit && out.len() as u64 == s.bytes),
                Err(CoreDumpError::TooSmall { needed, .. }) => assert!(needed > limit),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn overlapping_regions_and_unreadable_memory_are_errors() {
        let mem = Memory(vec![(0x10_0000, vec![1; 2 * PAGE_SIZE as usize])]);
        let a = Region { addr: 0x10_0000, len: 2 * PAGE_SIZE, perms: RW };
        let b = Region { addr: 0x10_1000, len: PAGE_SIZE, perms: RW };
        let mut out = Vec::new();
        let e = write_core(&dump(vec![a, b]), &mut |x, y| mem.read(x, y), 1 << 20, &mut out).unwrap_err();
        assert!(matches!(e, CoreDumpError::Overlap { addr: 0x10_1000 }), "{e}");
        let c = Region { addr: 0x50_0000, len: PAGE_SIZE, perms: RW };
        let e = write_core(&dump(vec![c]), &mut |x, y| mem.read(x, y), 1 << 20, &mut out).unwrap_err();
        assert!(matches!(e, CoreDumpError::Memory { addr: 0x50_0000, .. }), "{e}");
    }

    #[test]
    fn files_are_bounded_in_number_and_never_replace_anything() {
        let dir = tempdir();
        let mem = Memory(vec![(0x10_0000, vec![1; PAGE_SIZE as usize])]);
        let d = dump(vec![Region { addr: 0x10_0000, len: PAGE_SIZE, perms: RW }]);
        let limits = CoreDumpLimits { max_bytes: 1 << 20, max_files: 3 };
        // A symlink where a core would go is skipped, not followed.
        let target = dir.join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.join("glint-1.core")).unwrap();
        let mut written = Vec::new();
        for _ in 0..5 {
            match write_core_file(&dir, &limits, &d, &mut |a, b| mem.read(a, b)) {
                Ok((path, summary)) => {
                    assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.bytes);
                    written.push(path);
                }
                Err(CoreDumpError::LimitReached { max_files: 3, .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(written, [dir.join("glint-0.core"), dir.join("glint-2.core")]);
        assert!(!target.exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&written[0]).unwrap().permissions().mode() & 0o777, 0o600);
        // A failed dump leaves no file behind.
        std::fs::remove_file(&written[1]).unwrap();
        let e = write_core_file(
            &dir,
            &limits,
            &dump(vec![Region { addr: 0x90_0000, len: PAGE_SIZE, perms: RW }]),
            &mut |a, b| mem.read(a, b),
        )
        .unwrap_err();
        assert!(matches!(e, CoreDumpError::Memory { .. }), "{e}");
        assert!(!dir.join("glint-2.core").exists());
        let e = write_core_file(&dir.join("missing"), &limits, &d, &mut |a, b| mem.read(a, b)).unwrap_err();
        assert!(matches!(e, CoreDumpError::Create { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// gdb opens a core of the real hello guest: registers, the faulting function, memory
    /// (stored and left out), the signal and the faulting address.
    #[test]
    fn gdb_reads_a_core_of_the_hello_guest() {
        if crate::debug::testing::gdb().is_none() {
            return;
        }
        let guest = crate::debug::testing::LoadedGuest::hello();
        let start = guest.symbol("glint_guest2rt5start");
        let rsp = guest.layout.stack_top() - 0x100;
        let mut memory = guest.memory.clone();
        memory[(rsp as usize)..(rsp as usize + 8)].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let mut regions = guest.regions.clone();
        regions.sort_by_key(|r| crate::debug::dump_priority(&guest.layout, r));
        let core = CoreDump {
            regs: GuestRegs {
                rip: start + 4,
                rsp,
                rax: 0x4242,
                rflags: 0x246,
                cs: 0x23,
                ss: 0x1b,
                ..Default::default()
            },
            fpu: Some(FpuRegs { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }),
            vector: 14,
            error_code: Some(4),
            fault_addr: Some(0x10),
            program: "hello",
            args: "add",
            program_info: guest.program,
            regions,
        };
        let dir = tempdir();
        let limits = CoreDumpLimits::default();
        let read = &mut |a: u64, b: &mut [u8]| -> Result<(), BoxError> {
            b.copy_from_slice(&memory[a as usize..a as usize + b.len()]);
            Ok(())
        };
        let (path, summary) = write_core_file(&dir, &limits, &core, read).unwrap();
        assert!(summary.omitted.is_empty());
        // The untouched heap is not stored: the file is far smaller than the memory.
        assert!(summary.bytes < 256 << 10, "{} bytes", summary.bytes);
        let heap_probe = guest.layout.heap_addr + (1 << 20);
        let code_bytes: Vec<String> =
            memory[start as usize..start as usize + 4].iter().map(|b| format!("0x{b:02x}")).collect();
        let (out, err) = crate::debug::testing::run_gdb(&[
            "-ex",
            "set language c",
            "-ex",
            "bt",
            "-ex",
            "p/x $rip",
            "-ex",
            "p/x $rax",
            "-ex",
            "p/x *(unsigned long *)$rsp",
            "-ex",
            &format!("x/4xb {start:#x}"),
            "-ex",
            &format!("p/x *(unsigned long *){heap_probe:#x}"),
            "-ex",
            "p $_siginfo._sifields._sigfault.si_addr",
            guest.path,
            path.to_str().unwrap(),
        ]);
        // The guests carry line tables (guest/bins/Cargo.toml): the frame has its source line.
        assert!(out.contains("in start () at src/rt.rs:"), "{out}\n{err}");
        assert!(out.contains(&format!("{:#x}", start + 4)), "{out}");
        assert!(out.contains("0x4242"), "{out}");
        assert!(out.contains("0x1122334455667788"), "{out}");
        assert!(out.contains(&code_bytes.join("\t")), "{out}");
        assert!(out.contains("= 0x0\n"), "a left-out zero page reads as zero: {out}");
        assert!(out.contains("(void *) 0x10"), "{out}");
        assert!(err.contains("SIGSEGV") || out.contains("SIGSEGV"), "{out}\n{err}");
        assert!(!err.contains("may not match"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("glint-core-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
