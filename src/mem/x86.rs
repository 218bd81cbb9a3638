//! Every x86-64 fact glint relies on, in one place: the structures that put a CPL3 guest in long
//! mode (page tables, GDT, IDT, TSS with its I/O permission bitmap, the CPL0 exception stubs),
//! the segments and control-register bits the vCPU starts with, the layout of the exception frame
//! the CPU pushes, and the one instruction the host ever decodes (the guest's `out` to RETURN).
//! Built as bytes, written once per sandbox; nothing here talks to KVM.

use super::layout::*;
use crate::image::GuestImage;
use glint_abi::layout::{BOOT_INFO_ADDR, PAGE_SIZE};
use glint_abi::port;

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_ACCESSED: u64 = 1 << 5;
const PTE_DIRTY: u64 = 1 << 6;
const PTE_NX: u64 = 1 << 63;

/// Kernel code selector (used only by the exception stubs).
pub(crate) const KERNEL_CS: u16 = 0x08;
/// User data selector, RPL 3.
pub(crate) const USER_DS: u16 = 0x18 | 3;
/// User code selector, RPL 3.
pub(crate) const USER_CS: u16 = 0x20 | 3;
/// TSS selector.
pub(crate) const TSS_SEL: u16 = 0x28;
/// GDT limit (7 eight-byte slots: null, 4 segments, 16-byte TSS).
pub(crate) const GDT_LIMIT: u16 = 7 * 8 - 1;
/// Exceptions have vectors 0..32; the IDT holds only those, so `int n` above them raises #GP.
pub(crate) const IDT_ENTRIES: u64 = 32;
/// IDT limit.
pub(crate) const IDT_LIMIT: u16 = (IDT_ENTRIES * 16 - 1) as u16;
/// Size of the TSS proper; the I/O bitmap follows.
const TSS_SIZE: usize = 104;
/// The I/O bitmap covers ports 0..256 (32 bytes) plus the terminating 0xff byte; ports past the
/// TSS limit are denied by the CPU without a bitmap.
const IOPB_BYTES: usize = 32;
/// TSS limit: the last byte is the bitmap terminator.
pub(crate) const TSS_LIMIT: u32 = (TSS_SIZE + IOPB_BYTES) as u32;
/// Bytes per exception stub.
const STUB_SIZE: u64 = 8;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// CR0 at entry: protected mode, paging, write protection honoured at CPL0, native FPU errors.
pub(crate) const ENTRY_CR0: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
/// CR3 at entry: the host-built PML4.
pub(crate) const ENTRY_CR3: u64 = PML4_ADDR;
/// CR4 at entry: PAE (required by long mode), SSE enabled with its exceptions.
pub(crate) const ENTRY_CR4: u64 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
/// EFER at entry: long mode enabled and active, no-execute pages.
pub(crate) const ENTRY_EFER: u64 = EFER_LME | EFER_LMA | EFER_NXE;
/// RFLAGS at entry: only the always-set bit 1 (IF clear, IOPL 0).
pub(crate) const ENTRY_RFLAGS: u64 = 0x2;
/// The GDT's guest address and limit, as GDTR holds them.
pub(crate) const GDT_BASE: u64 = GDT_ADDR;
/// The IDT's guest address, as IDTR holds it.
pub(crate) const IDT_BASE: u64 = IDT_ADDR;

/// A segment register's hidden part, as the vCPU is given it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentDesc {
    pub(crate) base: u64,
    pub(crate) limit: u32,
    pub(crate) selector: u16,
    /// The 4-bit type field.
    pub(crate) ty: u8,
    pub(crate) present: bool,
    pub(crate) dpl: u8,
    /// D/B: 32-bit default operand size (must be clear for 64-bit code).
    pub(crate) big: bool,
    /// S: a code or data segment (not a system segment).
    pub(crate) code_or_data: bool,
    /// L: 64-bit code.
    pub(crate) long: bool,
    pub(crate) granular: bool,
}

/// The guest's data segments (DS, ES, FS, GS, SS): flat, writable, DPL 3.
pub(crate) const USER_DATA_SEGMENT: SegmentDesc = SegmentDesc {
    base: 0,
    limit: 0xffff_ffff,
    selector: USER_DS,
    ty: 3,
    present: true,
    dpl: 3,
    big: true,
    code_or_data: true,
    long: false,
    granular: true,
};
/// The guest's code segment: 64-bit, readable, DPL 3.
pub(crate) const USER_CODE_SEGMENT: SegmentDesc =
    SegmentDesc { selector: USER_CS, ty: 11, big: false, long: true, ..USER_DATA_SEGMENT };
/// The task register: the 64-bit TSS, busy.
pub(crate) const TASK_SEGMENT: SegmentDesc = SegmentDesc {
    base: TSS_ADDR,
    limit: TSS_LIMIT,
    selector: TSS_SEL,
    ty: 11,
    present: true,
    dpl: 0,
    big: false,
    code_or_data: false,
    long: false,
    granular: false,
};

/// What the CPU pushed on the fault stack when the guest raised exception `vector`: the
/// interrupted context, as an `iretq` would restore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExceptionFrame {
    pub(crate) error_code: Option<u64>,
    pub(crate) rip: u64,
    pub(crate) cs: u64,
    pub(crate) rflags: u64,
    pub(crate) rsp: u64,
    pub(crate) ss: u64,
}

impl ExceptionFrame {
    /// Bytes the frame takes on the fault stack (one more word with an error code).
    pub(crate) fn size(vector: u8) -> u64 {
        if has_error_code(vector) {
            48
        } else {
            40
        }
    }

    /// Where the frame of `vector` starts: the fault stack is empty when a CPL3 guest faults
    /// (IST1 resets it for every exception), so the frame ends at its top.
    pub(crate) fn address(vector: u8) -> u64 {
        FAULT_STACK_TOP - Self::size(vector)
    }

    /// Where the stub for `vector` saved the guest's `rax` (see [`stubs`]): just below the frame.
    pub(crate) fn saved_rax_address(vector: u8) -> u64 {
        Self::address(vector) - 8
    }

    /// Decodes the frame's words (read from [`address`](Self::address)).
    pub(crate) fn decode(vector: u8, bytes: &[u8; 48]) -> ExceptionFrame {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(bytes.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(w)
        };
        let (error_code, first) = if has_error_code(vector) { (Some(word(0)), 1) } else { (None, 0) };
        ExceptionFrame {
            error_code,
            rip: word(first),
            cs: word(first + 1),
            rflags: word(first + 2),
            rsp: word(first + 3),
            ss: word(first + 4),
        }
    }
}

/// The length of the instruction at the start of `code` if it is an `out` to the RETURN port
/// (`out dx, al` with `dx` = RETURN, or `out imm8, al`), with any prefixes; `rdx` is the guest's.
///
/// Hardware KVM reports an `out` exit with `rip` still on the instruction and skips it on the
/// next KVM_RUN only if `rip` is unchanged; kvm_pvm emulates the `out` and reports `rip` after
/// it. A snapshot must hold the address after the `out` in both cases.
pub(crate) fn return_out_len(code: &[u8], rdx: u64) -> Option<u64> {
    let prefixes = code
        .iter()
        .take_while(|&&b| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x40..=0x4f | 0x64..=0x67 | 0xf0 | 0xf2 | 0xf3))
        .count();
    match (code.get(prefixes), code.get(prefixes + 1)) {
        (Some(0xee), _) if rdx & 0xffff == u64::from(port::RETURN) => Some(prefixes as u64 + 1),
        (Some(0xe6), Some(&p)) if u16::from(p) == port::RETURN => Some(prefixes as u64 + 2),
        _ => None,
    }
}

/// Page-table flags for one guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// Supervisor read-only, no execute (GDT, IDT, TSS).
    SystemRead,
    /// Supervisor read-write, no execute (fault stack).
    SystemWrite,
    /// Supervisor read-only, executable (stubs).
    SystemCode,
    /// User page with these permissions.
    User { write: bool, exec: bool },
}

fn pte(addr: u64, kind: PageKind) -> u64 {
    let base = addr | PTE_PRESENT | PTE_ACCESSED;
    match kind {
        PageKind::SystemRead => base | PTE_NX,
        PageKind::SystemWrite => base | PTE_WRITE | PTE_DIRTY | PTE_NX,
        PageKind::SystemCode => base,
        PageKind::User { write, exec } => {
            let mut e = base | PTE_USER;
            if write {
                e |= PTE_WRITE | PTE_DIRTY;
            }
            if !exec {
                e |= PTE_NX;
            }
            e
        }
    }
}

/// Every mapped page of a sandbox and how it is mapped; pages not listed are not present.
pub(crate) fn page_map(layout: &Layout, image: &GuestImage) -> Vec<(u64, PageKind)> {
    let mut pages = vec![
        (GDT_ADDR, PageKind::SystemRead),
        (IDT_ADDR, PageKind::SystemRead),
        (TSS_ADDR, PageKind::SystemRead),
        (STUBS_ADDR, PageKind::SystemCode),
    ];
    let mut range = |start: u64, end: u64, kind: PageKind| {
        pages.extend((start..end).step_by(PAGE_SIZE as usize).map(|a| (a, kind)));
    };
    range(FAULT_STACK_ADDR, FAULT_STACK_TOP, PageKind::SystemWrite);
    range(BOOT_INFO_ADDR, BOOT_INFO_ADDR + PAGE_SIZE, PageKind::User { write: false, exec: false });
    let data = PageKind::User { write: true, exec: false };
    range(layout.input_addr, layout.output_addr + layout.output_size, data);
    range(layout.heap_addr, layout.heap_addr + layout.heap_size, data);
    range(layout.stack_addr, layout.memory_size, data);
    pages.extend(image.pages().iter().map(|&(addr, p)| (addr, PageKind::User { write: p.write, exec: p.exec })));
    pages
}

/// Everything the host builds in the system region for `layout` and `image`: page tables, GDT,
/// IDT, TSS and exception stubs, as (guest address, bytes) pieces. Written into every new
/// sandbox; a snapshot file's pages are checked against it.
pub(crate) fn system_pieces(layout: &Layout, image: &GuestImage) -> Vec<(u64, Vec<u8>)> {
    let pages = page_map(layout, image);
    let mut pieces = page_tables(layout, &pages);
    pieces.push((GDT_ADDR, gdt()));
    pieces.push((IDT_ADDR, idt()));
    pieces.push((TSS_ADDR, tss()));
    pieces.push((STUBS_ADDR, stubs()));
    pieces
}

/// The four levels of page tables, as (guest address, bytes) pieces.
pub(crate) fn page_tables(layout: &Layout, pages: &[(u64, PageKind)]) -> Vec<(u64, Vec<u8>)> {
    let table_flags = PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_ACCESSED;
    let n_pt = layout.memory_size.div_ceil(2 << 20);
    let mut pml4 = vec![0u8; PAGE_SIZE as usize];
    put_u64(&mut pml4, 0, PDPT_ADDR | table_flags);
    let mut pdpt = vec![0u8; PAGE_SIZE as usize];
    put_u64(&mut pdpt, 0, PD_ADDR | table_flags);
    let mut pd = vec![0u8; PAGE_SIZE as usize];
    for i in 0..n_pt {
        put_u64(&mut pd, i as usize * 8, (PT_ADDR + i * PAGE_SIZE) | table_flags);
    }
    let mut pts = vec![0u8; (n_pt * PAGE_SIZE) as usize];
    for &(addr, kind) in pages {
        if addr < layout.memory_size {
            put_u64(&mut pts, (addr / PAGE_SIZE) as usize * 8, pte(addr, kind));
        }
    }
    vec![(PML4_ADDR, pml4), (PDPT_ADDR, pdpt), (PD_ADDR, pd), (PT_ADDR, pts)]
}

/// GDT: null, kernel code/data, user data/code (DPL 3), and the TSS descriptor (marked busy, as
/// KVM_SET_SREGS loads TR directly). Accessed bits are preset so the CPU never writes the table.
pub(crate) fn gdt() -> Vec<u8> {
    let mut g = vec![0u8; PAGE_SIZE as usize];
    put_u64(&mut g, 0x08, 0x00af_9b00_0000_ffff);
    put_u64(&mut g, 0x10, 0x00cf_9300_0000_ffff);
    put_u64(&mut g, 0x18, 0x00cf_f300_0000_ffff);
    put_u64(&mut g, 0x20, 0x00af_fb00_0000_ffff);
    let [low, high] = tss_descriptor(TSS_ADDR, TSS_LIMIT);
    put_u64(&mut g, 0x28, low);
    put_u64(&mut g, 0x30, high);
    g
}

/// The 16-byte long-mode descriptor of a busy 64-bit TSS at `base` with byte-granular `limit`
/// (below 1 MiB): present, DPL 0, the base's upper half and reserved zeros in the second word.
fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let limit = u64::from(limit);
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, DPL 0, busy 64-bit TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// Vectors whose exception pushes an error code.
pub(crate) fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// IDT: every exception vector goes to its stub on the IST1 fault stack. Only #BP is reachable
/// from CPL3 by `int3`; other `int n` raise #GP.
pub(crate) fn idt() -> Vec<u8> {
    let mut t = vec![0u8; PAGE_SIZE as usize];
    for v in 0..IDT_ENTRIES {
        let [low, high] = interrupt_gate(STUBS_ADDR + v * STUB_SIZE, v == 3);
        put_u64(&mut t, (v * 16) as usize, low);
        put_u64(&mut t, (v * 16 + 8) as usize, high);
    }
    t
}

/// A present 64-bit interrupt gate to `offset` in the kernel code segment on IST1, DPL 3 when
/// CPL3 may raise it with `int n` (only `int3`), DPL 0 otherwise.
fn interrupt_gate(offset: u64, user: bool) -> [u64; 2] {
    let attr: u64 = if user { 0xee } else { 0x8e };
    let low = (offset & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (1 << 32) // IST1
        | (attr << 40)
        | (((offset >> 16) & 0xffff) << 48);
    [low, offset >> 32]
}

/// TSS: RSP0 and IST1 point at the fault stack; the I/O bitmap admits only the guest ports.
pub(crate) fn tss() -> Vec<u8> {
    let mut t = vec![0u8; PAGE_SIZE as usize];
    put_u64(&mut t, 4, FAULT_STACK_TOP);
    put_u64(&mut t, 36, FAULT_STACK_TOP);
    t[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    let bitmap = &mut t[TSS_SIZE..=TSS_SIZE + IOPB_BYTES];
    bitmap.fill(0xff);
    for p in port::GUEST_PORTS {
        let p = usize::from(p);
        bitmap[p / 8] &= !(1 << (p % 8));
    }
    t
}

/// The stubs: `push rax; mov al, vector; out EXCEPTION, al; 1: hlt; jmp 1b`. Two emulated
/// instructions per fault; the host reads the CPU's exception frame from the fault stack, and
/// the guest's `rax` (whose low byte the stub overwrites) just below it, for crash dumps and
/// debuggers.
pub(crate) fn stubs() -> Vec<u8> {
    let mut s = vec![0u8; PAGE_SIZE as usize];
    for v in 0..IDT_ENTRIES as u8 {
        let at = usize::from(v) * STUB_SIZE as usize;
        s[at..at + 8].copy_from_slice(&[0x50, 0xb0, v, 0xe6, port::EXCEPTION as u8, 0xf4, 0xeb, 0xfd]);
    }
    s
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The structures decoded as the CPU reads them, and checked against what it requires: these
/// catch on any host what kvm_pvm would forgive (it runs CPL3 code on the host's own segments).
#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::image::test_elf;
    use crate::image::GuestImage;
    use crate::mem::MemoryConfig;
    use glint_abi::layout::IMAGE_BASE;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// A segment descriptor as the CPU decodes it.
    #[derive(Debug, PartialEq, Eq)]
    struct Descriptor {
        base: u64,
        limit: u32,
        /// The 4-bit type field.
        ty: u8,
        /// S: code/data (true) or system (false).
        code_or_data: bool,
        dpl: u8,
        present: bool,
        long: bool,
        default_big: bool,
        granular: bool,
    }

    fn descriptor(gdt: &[u8], selector: u16) -> Descriptor {
        let at = usize::from(selector & !7);
        let d = u64_at(gdt, at);
        let access = (d >> 40) as u8;
        let flags = (d >> 52) as u8;
        let mut base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
        if access & 0x10 == 0 {
            // A system descriptor in long mode is 16 bytes: the next 4 hold base bits 32..64.
            base |= (u64_at(gdt, at + 8) & 0xffff_ffff) << 32;
        }
        Descriptor {
            base,
            limit: ((d & 0xffff) | (((d >> 48) & 0xf) << 16)) as u32,
            ty: access & 0xf,
            code_or_data: access & 0x10 != 0,
            dpl: (access >> 5) & 3,
            present: access & 0x80 != 0,
            long: flags & 0x2 != 0,
            default_big: flags & 0x4 != 0,
            granular: flags & 0x8 != 0,
        }
    }

    #[test]
    fn user_selectors_name_present_ring3_segments_of_the_right_kind() {
        let gdt = gdt();
        // RPL 3 on both, and an index inside the GDT's limit.
        assert_eq!(USER_CS & 3, 3);
        assert_eq!(USER_DS & 3, 3);
        for sel in [KERNEL_CS, USER_CS, USER_DS, TSS_SEL] {
            assert_ne!(sel & !7, 0, "selector {sel:#x} is the null selector");
            assert!(u32::from(sel & !7) + 7 <= u32::from(GDT_LIMIT), "selector {sel:#x} past the GDT limit");
        }
        let cs = descriptor(&gdt, USER_CS);
        assert!(cs.present && cs.code_or_data && cs.long && !cs.default_big, "{cs:?}");
        assert_eq!(cs.ty & 0b1010, 0b1010, "user code is code and readable: {cs:?}");
        assert_eq!(cs.dpl, 3, "user code DPL matches its RPL");
        let ds = descriptor(&gdt, USER_DS);
        assert!(ds.present && ds.code_or_data && ds.granular && ds.limit == 0xfffff, "{ds:?}");
        assert_eq!(ds.ty & 0b1010, 0b0010, "user data is data and writable: {ds:?}");
        assert_eq!(ds.dpl, 3, "user data DPL matches its RPL");
        let kcs = descriptor(&gdt, KERNEL_CS);
        assert!(kcs.present && kcs.code_or_data && kcs.long && !kcs.default_big && kcs.ty & 0b1000 != 0, "{kcs:?}");
        assert_eq!(kcs.dpl, 0);
        // Accessed bits preset: the CPU never needs to write the (read-only) table.
        for sel in [KERNEL_CS, USER_CS, USER_DS] {
            assert_eq!(descriptor(&gdt, sel).ty & 1, 1, "{sel:#x} accessed");
        }
    }

    #[test]
    fn the_tss_descriptor_points_at_the_tss_with_its_exact_limit() {
        let tss_d = descriptor(&gdt(), TSS_SEL);
        assert_eq!(
            tss_d,
            Descriptor {
                base: TSS_ADDR,
                limit: TSS_LIMIT,
                ty: 0xb, // 64-bit TSS, busy (KVM_SET_SREGS loads TR directly)
                code_or_data: false,
                dpl: 0,
                present: true,
                long: false,
                default_big: false,
                granular: false,
            }
        );
        assert_eq!(TSS_SEL & 3, 0);
        // The second word holds base bits 32..64 and, above them, zeros the CPU requires.
        assert_eq!(u64_at(&gdt(), usize::from(TSS_SEL) + 8) >> 32, 0, "reserved half of the TSS descriptor");
    }

    /// glint's TSS sits low, where the base's upper bytes and the limit's upper nibble are zero;
    /// the encoding must still place every field where the CPU reads it.
    #[test]
    fn tss_descriptors_encode_every_base_and_limit_bit_where_the_cpu_reads_them() {
        for (base, limit) in
            [(0x1234_5678_9abc_d000, 0xf_5a5a), (0xffff_ffff_ffff_f000, 0xf_ffff), (TSS_ADDR, TSS_LIMIT)]
        {
            let [low, high] = tss_descriptor(base, limit);
            let mut table = [0u8; 16];
            table[..8].copy_from_slice(&low.to_le_bytes());
            table[8..].copy_from_slice(&high.to_le_bytes());
            let d = descriptor(&table, 0);
            assert_eq!((d.base, d.limit, d.ty, d.present, d.dpl, d.code_or_data), (base, limit, 0xb, true, 0, false));
            assert!(!d.granular, "a byte-granular limit");
            assert_eq!(high >> 32, 0, "reserved bits of the second word");
        }
    }

    #[test]
    fn every_exception_vector_has_a_present_interrupt_gate_to_its_stub_on_ist1() {
        let idt = idt();
        assert_eq!(usize::from(IDT_LIMIT) + 1, IDT_ENTRIES as usize * 16);
        for v in 0..IDT_ENTRIES as usize {
            let lo = u64_at(&idt, v * 16);
            let hi = u64_at(&idt, v * 16 + 8);
            let offset = (lo & 0xffff) | ((lo >> 48) << 16) | ((hi & 0xffff_ffff) << 32);
            let selector = ((lo >> 16) & 0xffff) as u16;
            let ist = (lo >> 32) & 7;
            let access = (lo >> 40) as u8;
            assert_eq!(offset, STUBS_ADDR + v as u64 * STUB_SIZE, "vector {v}");
            assert_eq!(selector, KERNEL_CS, "vector {v}");
            assert_eq!(ist, 1, "vector {v} switches to the host's fault stack");
            assert_eq!(access & 0x80, 0x80, "vector {v} present");
            assert_eq!(access & 0x1f, 0x0e, "vector {v} is a 64-bit interrupt gate (IF cleared)");
            let dpl = (access >> 5) & 3;
            assert_eq!(dpl, if v == 3 { 3 } else { 0 }, "vector {v}: only int3 may be raised from CPL3");
        }
    }

    /// glint's stubs sit low, where an offset's upper bits are zero; the encoding must still put
    /// every offset bit where the CPU reads it, and zeros in the reserved upper half.
    #[test]
    fn interrupt_gates_encode_every_offset_bit_where_the_cpu_reads_it() {
        for offset in [0x1234_5678_9abc_def0, 0xffff_ffff_ffff_fff8, STUBS_ADDR] {
            for user in [false, true] {
                let [lo, hi] = interrupt_gate(offset, user);
                assert_eq!((lo & 0xffff) | ((lo >> 48) << 16) | ((hi & 0xffff_ffff) << 32), offset);
                assert_eq!(hi >> 32, 0, "reserved half of the gate");
                assert_eq!(((lo >> 16) & 0xffff) as u16, KERNEL_CS);
                assert_eq!((lo >> 32) & 0xff, 1, "IST1, and zeros above it");
                assert_eq!((lo >> 40) as u8, if user { 0xee } else { 0x8e });
            }
        }
    }

    #[test]
    fn the_tss_gives_the_fault_stack_and_a_bitmap_covering_every_port_to_its_limit() {
        let t = tss();
        assert_eq!(u64_at(&t, 4), FAULT_STACK_TOP, "RSP0");
        assert_eq!(u64_at(&t, 36), FAULT_STACK_TOP, "IST1");
        let iopb = usize::from(u16::from_le_bytes([t[102], t[103]]));
        assert_eq!(iopb, TSS_SIZE, "the I/O bitmap starts right after the TSS");
        // The CPU reads two bitmap bytes per access and refuses any that lies past the limit, so
        // the bitmap must run to the limit, end in 0xff, and deny all but the guest ports.
        let limit = TSS_LIMIT as usize;
        assert_eq!(t[limit], 0xff, "terminator at the limit");
        let ports = (limit - iopb) * 8;
        assert_eq!(ports, 256, "the bitmap covers 0..256; every port above is beyond the limit");
        for p in 0..ports {
            let denied = t[iopb + p / 8] & (1 << (p % 8)) != 0;
            assert_eq!(denied, !port::GUEST_PORTS.contains(&(p as u16)), "port {p:#x}");
        }
        assert!(t[limit + 1..].iter().all(|&b| b == 0), "nothing past the limit matters, and nothing is there");
    }

    #[test]
    fn stubs_report_their_vector_on_the_exception_port_and_halt() {
        let s = stubs();
        for v in 0..IDT_ENTRIES as usize {
            let stub = &s[v * STUB_SIZE as usize..][..STUB_SIZE as usize];
            // push rax; mov al, v; out EXCEPTION, al; hlt; jmp back to the hlt (at 5, from 8).
            assert_eq!(stub, &[0x50, 0xb0, v as u8, 0xe6, port::EXCEPTION as u8, 0xf4, 0xeb, 0xfd], "vector {v}");
        }
        const { assert!(IDT_ENTRIES * STUB_SIZE <= PAGE_SIZE) };
    }

    /// The page-table entry that maps `addr`, walking the four levels as the CPU does, with the
    /// permissions every level grants (U/S and R/W are the AND of all levels, NX the OR).
    fn walk(tables: &[(u64, Vec<u8>)], addr: u64) -> Option<(u64, bool, bool, bool)> {
        let read = |table: u64, index: u64| -> u64 {
            let (base, bytes) = tables
                .iter()
                .find(|(base, bytes)| table >= *base && table < *base + bytes.len() as u64)
                .unwrap_or_else(|| panic!("table {table:#x} is not one the host built"));
            u64_at(bytes, (table - base + index * 8) as usize)
        };
        let mut table = PML4_ADDR;
        let (mut user, mut write, mut nx) = (true, true, false);
        // The bits by their architectural positions (SDM Vol. 3 §4.5), not glint's constants.
        let (present, rw, us, accessed, dirty, large, no_exec) = (1, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 63);
        for level in (0..4).rev() {
            let e = read(table, (addr >> (12 + 9 * level)) & 0x1ff);
            if e & present == 0 {
                return None;
            }
            user &= e & us != 0;
            write &= e & rw != 0;
            nx |= e & no_exec != 0;
            assert_eq!(e & large, 0, "no large pages");
            // Preset, so the CPU never writes to the host's page tables (on hardware KVM such a
            // write would dirty them behind the host's back).
            assert_ne!(e & accessed, 0, "{addr:#x}: level {level} entry is not marked accessed");
            if level == 0 && e & rw != 0 {
                assert_ne!(e & dirty, 0, "{addr:#x}: writable page is not marked dirty");
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        Some((table, user, write, nx))
    }

    #[test]
    fn page_tables_grant_each_region_exactly_its_permissions() {
        let elf = test_elf::RawElf::exec(&[0x0f, 0x0b])
            .segment(test_elf::Segment::load(test_elf::PF_R | test_elf::PF_W, IMAGE_BASE + 0x1000, &[1; 16]))
            .build();
        let image = GuestImage::from_bytes(&elf).unwrap();
        let layout = Layout::new(&MemoryConfig::default(), &image).unwrap();
        let tables = page_tables(&layout, &page_map(&layout, &image));
        let expect = |addr: u64, user: bool, write: bool, exec: bool| {
            let (frame, u, w, nx) = walk(&tables, addr).unwrap_or_else(|| panic!("{addr:#x} not mapped"));
            assert_eq!(frame, addr & !(PAGE_SIZE - 1), "{addr:#x} identity-mapped");
            assert_eq!((u, w, !nx), (user, write, exec), "{addr:#x}: (user, write, exec)");
        };
        let unmapped = |addr: u64| assert!(walk(&tables, addr).is_none(), "{addr:#x} must not be mapped");
        // Host-owned: the page tables themselves unmapped, the rest supervisor-only.
        unmapped(0);
        for t in [PML4_ADDR, PDPT_ADDR, PD_ADDR, PT_ADDR] {
            unmapped(t);
        }
        expect(GDT_ADDR, false, false, false);
        expect(IDT_ADDR, false, false, false);
        expect(TSS_ADDR, false, false, false);
        expect(STUBS_ADDR, false, false, true);
        expect(FAULT_STACK_ADDR, false, true, false);
        expect(FAULT_STACK_TOP - PAGE_SIZE, false, true, false);
        // The guest's own.
        expect(BOOT_INFO_ADDR, true, false, false);
        expect(IMAGE_BASE, true, false, true);
        expect(IMAGE_BASE + 0x1000, true, true, false);
        expect(layout.input_addr, true, true, false);
        expect(layout.output_addr + layout.output_size - 1, true, true, false);
        expect(layout.heap_addr, true, true, false);
        expect(layout.heap_addr + layout.heap_size - 1, true, true, false);
        unmapped(layout.guard_addr);
        expect(layout.stack_addr, true, true, false);
        expect(layout.memory_size - 1, true, true, false);
        unmapped(layout.memory_size);
        // No page anywhere is both writable and executable for the guest.
        for page in (0..layout.memory_size).step_by(PAGE_SIZE as usize) {
            if let Some((_, user, write, nx)) = walk(&tables, page) {
                assert!(!write || nx, "{page:#x} is writable and executable (user {user})");
            }
        }
    }

    /// What the CPU requires of the entry state for 64-bit code with NX pages and SSE, bit by
    /// architectural position (SDM Vol. 3 §2.5, §2.2.1), independent of glint's constants.
    #[test]
    fn the_entry_control_registers_are_long_mode_with_paging_nx_and_sse() {
        let bit = |v: u64, n: u32| v & (1 << n) != 0;
        for (n, name) in [(0, "PE"), (1, "MP"), (4, "ET"), (5, "NE"), (16, "WP"), (31, "PG")] {
            assert!(bit(ENTRY_CR0, n), "CR0.{name} (bit {n}) must be set");
        }
        assert!(!bit(ENTRY_CR0, 2) && !bit(ENTRY_CR0, 3), "CR0.EM and CR0.TS would make SSE fault");
        for (n, name) in [(5, "PAE"), (9, "OSFXSR"), (10, "OSXMMEXCPT")] {
            assert!(bit(ENTRY_CR4, n), "CR4.{name} (bit {n}) must be set");
        }
        assert!(!bit(ENTRY_CR4, 12), "CR4.LA57 would need five levels of page tables");
        for (n, name) in [(8, "LME"), (10, "LMA"), (11, "NXE")] {
            assert!(bit(ENTRY_EFER, n), "EFER.{name} (bit {n}) must be set");
        }
        assert!(!bit(ENTRY_EFER, 0), "EFER.SCE: the guest has no syscall target");
        assert_eq!(ENTRY_CR3 & 0xfff, 0, "CR3 holds a page-aligned PML4 and no flags");
        assert_eq!(ENTRY_RFLAGS, 0x2, "only the reserved bit 1: IF clear, IOPL 0, TF clear");
    }

    /// A limit is the last byte of the table's last entry (SDM Vol. 3 §3.5.1, §6.10): whole
    /// descriptors only, ending with the TSS's 16 bytes (the GDT's last entry), and one 16-byte
    /// gate per exception vector.
    #[test]
    fn the_gdt_and_idt_limits_end_exactly_at_their_last_entries() {
        let gdt_bytes = u32::from(GDT_LIMIT) + 1;
        assert_eq!(gdt_bytes % 8, 0, "GDT limit {GDT_LIMIT} does not end on a descriptor");
        assert_eq!(gdt_bytes, u32::from(TSS_SEL) + 16, "the TSS descriptor is the GDT's last entry");
        assert_eq!(u32::from(IDT_LIMIT) + 1, 32 * 16, "one 16-byte gate per exception vector, 0..32");
    }

    /// What every new sandbox gets written, and what a snapshot file's host pages are checked
    /// against: each structure the host builds, at its own address, and nothing else.
    #[test]
    fn the_system_region_is_every_host_built_structure_at_its_address() {
        let image = GuestImage::from_bytes(&test_elf::RawElf::exec(&[0x0f, 0x0b]).build()).unwrap();
        let layout = Layout::new(&MemoryConfig::default(), &image).unwrap();
        let mut pieces = system_pieces(&layout, &image);
        pieces.sort_by_key(|p| p.0);
        let mut want = page_tables(&layout, &page_map(&layout, &image));
        want.extend([(GDT_ADDR, gdt()), (IDT_ADDR, idt()), (TSS_ADDR, tss()), (STUBS_ADDR, stubs())]);
        want.sort_by_key(|p| p.0);
        assert_eq!(pieces, want);
        for pair in pieces.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a.0 + a.1.len() as u64 <= b.0, "{:#x} overlaps {:#x}", a.0, b.0);
        }
        assert!(walk(&pieces, IMAGE_BASE).is_some(), "the pieces' page tables map the image");
    }

    #[test]
    fn the_saved_rax_sits_just_below_the_frame_on_the_fault_stack() {
        assert_eq!(ExceptionFrame::saved_rax_address(14), FAULT_STACK_TOP - 56);
        assert_eq!(ExceptionFrame::saved_rax_address(3), FAULT_STACK_TOP - 48);
        assert!(ExceptionFrame::saved_rax_address(14) >= FAULT_STACK_ADDR);
    }

    #[test]
    fn the_entry_segments_match_their_descriptors_in_the_gdt() {
        let gdt = gdt();
        for (d, sel) in [(USER_CODE_SEGMENT, USER_CS), (USER_DATA_SEGMENT, USER_DS), (TASK_SEGMENT, TSS_SEL)] {
            let desc = descriptor(&gdt, sel);
            assert_eq!(d.selector, sel);
            assert_eq!(
                (d.present, d.dpl, d.code_or_data, d.long, d.big),
                (desc.present, desc.dpl, desc.code_or_data, desc.long, desc.default_big),
                "{sel:#x}"
            );
            assert_eq!(d.ty | u8::from(d.code_or_data), desc.ty, "{sel:#x}: type (accessed preset in the GDT)");
        }
        assert_eq!(ENTRY_EFER & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(ENTRY_CR0 & (CR0_PE | CR0_PG | CR0_WP), CR0_PE | CR0_PG | CR0_WP);
        assert_eq!(ENTRY_CR4 & CR4_PAE, CR4_PAE, "long mode needs PAE");
        assert_eq!(ENTRY_RFLAGS & (1 << 9), 0, "interrupts stay disabled");
    }

    #[test]
    fn exception_frames_decode_with_and_without_an_error_code() {
        let words: Vec<u8> = (1..=6u64).flat_map(|w| (w * 0x1000).to_le_bytes()).collect();
        let bytes: [u8; 48] = words.try_into().unwrap();
        let pf = ExceptionFrame::decode(14, &bytes);
        assert_eq!(
            (pf.error_code, pf.rip, pf.cs, pf.rflags, pf.rsp, pf.ss),
            (Some(0x1000), 0x2000, 0x3000, 0x4000, 0x5000, 0x6000)
        );
        assert_eq!(ExceptionFrame::address(14), FAULT_STACK_TOP - 48);
        let ud = ExceptionFrame::decode(6, &bytes);
        assert_eq!((ud.error_code, ud.rip, ud.ss), (None, 0x1000, 0x5000));
        assert_eq!(ExceptionFrame::address(6), FAULT_STACK_TOP - 40);
    }

    #[test]
    fn the_return_out_is_recognised_in_both_encodings_and_nothing_else_is() {
        let ret = u64::from(port::RETURN);
        assert_eq!(return_out_len(&[0xee, 0x90], ret), Some(1));
        assert_eq!(return_out_len(&[0xee], ret + 1), None, "out dx, al to another port");
        assert_eq!(return_out_len(&[0xe6, port::RETURN as u8], 0), Some(2));
        assert_eq!(return_out_len(&[0xe6, port::LOG as u8], 0), None);
        assert_eq!(return_out_len(&[0x66, 0x2e, 0xee], ret), Some(3), "prefixes count");
        assert_eq!(return_out_len(&[0xef], ret), None, "out dx, eax is not the guest's crossing");
        assert_eq!(return_out_len(&[], ret), None);
    }

    #[test]
    fn user_pages_are_nx_unless_code() {
        assert_ne!(pte(0x1000, PageKind::User { write: true, exec: false }) & PTE_NX, 0);
        assert_eq!(pte(0x1000, PageKind::User { write: false, exec: true }) & (PTE_NX | PTE_WRITE), 0);
        assert_eq!(pte(0x1000, PageKind::SystemRead) & PTE_USER, 0);
    }
}
