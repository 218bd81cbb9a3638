//! The x86-64 structures that put a CPL3 guest in long mode: page tables, GDT, IDT, TSS with its
//! I/O permission bitmap, and the CPL0 exception stubs. Built as bytes, written once per sandbox.

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
    let base = TSS_ADDR;
    let limit = u64::from(TSS_LIMIT);
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, DPL 0, busy 64-bit TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    put_u64(&mut g, 0x28, low);
    put_u64(&mut g, 0x30, base >> 32);
    g
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
        let off = STUBS_ADDR + v * STUB_SIZE;
        let dpl3 = v == 3;
        let attr: u64 = if dpl3 { 0xee } else { 0x8e };
        let low = (off & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (1 << 32) // IST1
            | (attr << 40)
            | (((off >> 16) & 0xffff) << 48);
        put_u64(&mut t, (v * 16) as usize, low);
        put_u64(&mut t, (v * 16 + 8) as usize, off >> 32);
    }
    t
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

/// Guest address of the exception frame the CPU pushed for `vector` on the fault stack: the
/// error code (for the vectors that push one), then `rip`, `cs`, `rflags`, `rsp`, `ss`.
#[cfg_attr(not(test), allow(dead_code, reason = "crash dumps and the gdb stub read it next"))]
pub(crate) fn fault_frame_addr(vector: u8) -> u64 {
    FAULT_STACK_TOP - if has_error_code(vector) { 48 } else { 40 }
}

/// Guest address where the stub for `vector` saved the guest's `rax`.
#[cfg_attr(not(test), allow(dead_code, reason = "crash dumps and the gdb stub read it next"))]
pub(crate) fn saved_rax_addr(vector: u8) -> u64 {
    fault_frame_addr(vector) - 8
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bitmap_admits_exactly_the_guest_ports() {
        let t = tss();
        let allowed: Vec<u16> =
            (0..256u16).filter(|&p| t[TSS_SIZE + usize::from(p) / 8] & (1 << (p % 8)) == 0).collect();
        let mut expected = port::GUEST_PORTS.to_vec();
        expected.sort_unstable();
        assert_eq!(allowed, expected);
        assert!(!allowed.contains(&port::EXCEPTION));
        assert_eq!(t[TSS_SIZE + IOPB_BYTES], 0xff);
    }

    #[test]
    fn stubs_fit_their_page_and_use_imm8_port() {
        const { assert!(IDT_ENTRIES * STUB_SIZE <= PAGE_SIZE) };
        const { assert!(port::EXCEPTION < 256) };
    }

    #[test]
    fn stubs_save_rax_then_report_the_vector_and_halt_for_good() {
        let s = stubs();
        for v in [0u8, 3, 14, 31] {
            let stub = &s[usize::from(v) * 8..][..8];
            assert_eq!(stub[0], 0x50, "push rax");
            assert_eq!(stub[1..3], [0xb0, v], "mov al, v");
            assert_eq!(stub[3..5], [0xe6, port::EXCEPTION as u8], "out imm8, al");
            assert_eq!(stub[5], 0xf4, "hlt");
            // jmp rel8 back to the hlt: the next instruction is at 8, the hlt at 5.
            assert_eq!(stub[6..8], [0xeb, (5i8 - 8) as u8]);
        }
        // The saved rax sits just below the frame, still on the fault stack.
        assert_eq!(saved_rax_addr(14), FAULT_STACK_TOP - 56);
        assert_eq!(saved_rax_addr(3), FAULT_STACK_TOP - 48);
        assert!(saved_rax_addr(14) >= FAULT_STACK_ADDR);
    }

    #[test]
    fn user_pages_are_nx_unless_code() {
        assert_ne!(pte(0x1000, PageKind::User { write: true, exec: false }) & PTE_NX, 0);
        assert_eq!(pte(0x1000, PageKind::User { write: false, exec: true }) & (PTE_NX | PTE_WRITE), 0);
        assert_eq!(pte(0x1000, PageKind::SystemRead) & PTE_USER, 0);
    }
}
