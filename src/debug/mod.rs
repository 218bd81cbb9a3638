//! Debugging guests: what a crash dump and a debugger may see of a sandbox, and how they see it.
//!
//! Both [`core`] (ELF core files written when a guest faults) and the gdb stub (feature `gdb`)
//! show a guest its own state and nothing else: the registers of its CPL3 context and the memory
//! regions [`guest_regions`] lists (image, boot info, buffers, heap, stack). The host-owned pages
//! below the boot info (page tables, GDT, IDT, TSS, exception stubs, fault stack) are never part
//! of either, so a dump or a debugger tells its reader nothing about the host that the guest
//! itself could not see.

pub(crate) mod core;
#[cfg(feature = "gdb")]
pub(crate) mod gdb;
#[cfg(test)]
mod testing;

use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::mem::x86::{page_map, PageKind};
use glint_abi::layout::{BOOT_INFO_ADDR, IMAGE_BASE, PAGE_SIZE};

/// The guest's general-purpose and segment registers, as a CPL3 program sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// The x87 and SSE state, in the FXSAVE layout's terms (which is also what KVM_GET_FPU reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FpuRegs {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word.
    pub fsw: u16,
    /// Abridged tag word: bit i set when ST(i)'s physical register is not empty.
    pub ftw: u8,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last x87 instruction pointer.
    pub fip: u64,
    /// Last x87 data pointer.
    pub fdp: u64,
    /// SSE control and status.
    pub mxcsr: u32,
    /// ST0..ST7 (80 bits each, in the low 10 bytes of 16).
    pub st: [[u8; 16]; 8],
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
}

/// Size of the FXSAVE image (the legacy region at the start of an XSAVE area, and a core file's
/// NT_FPREGSET).
pub(crate) const FXSAVE_SIZE: usize = 512;

impl FpuRegs {
    /// Decodes an FXSAVE image (64-bit layout).
    pub(crate) fn from_fxsave(b: &[u8; FXSAVE_SIZE]) -> FpuRegs {
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let mut f = FpuRegs {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftw: b[4],
            fop: u16_at(6),
            fip: u64_at(8),
            fdp: u64_at(16),
            mxcsr: u32_at(24),
            ..FpuRegs::default()
        };
        for (i, st) in f.st.iter_mut().enumerate() {
            st.copy_from_slice(&b[32 + i * 16..48 + i * 16]);
        }
        for (i, x) in f.xmm.iter_mut().enumerate() {
            x.copy_from_slice(&b[160 + i * 16..176 + i * 16]);
        }
        f
    }

    /// Writes these registers into an FXSAVE image, leaving its other bytes (MXCSR_MASK, the
    /// reserved area) as they are.
    pub(crate) fn write_fxsave(&self, b: &mut [u8; FXSAVE_SIZE]) {
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.ftw;
        b[6..8].copy_from_slice(&self.fop.to_le_bytes());
        b[8..16].copy_from_slice(&self.fip.to_le_bytes());
        b[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        for (i, st) in self.st.iter().enumerate() {
            b[32 + i * 16..48 + i * 16].copy_from_slice(st);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            b[160 + i * 16..176 + i * 16].copy_from_slice(x);
        }
    }

    /// The full x87 tag word (two bits per physical register: 0 valid, 1 zero, 2 special,
    /// 3 empty), derived from the abridged one the way the CPU's FSTENV would.
    #[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb stub uses it"))]
    pub(crate) fn full_tag_word(&self) -> u16 {
        let top = (self.fsw >> 11) & 7;
        let mut tags = 0u16;
        for phys in 0..8u16 {
            let tag = if self.ftw & (1 << phys) == 0 {
                3
            } else {
                // Physical register `phys` is ST((phys - top) mod 8).
                let st = usize::from((phys + 8 - top) % 8);
                let r = self.st.get(st).copied().unwrap_or_default();
                let exponent = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
                let mantissa = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
                match exponent {
                    0x7fff => 2,
                    0 if mantissa == 0 => 1,
                    0 => 2,
                    _ if mantissa & (1 << 63) != 0 => 0,
                    _ => 2,
                }
            };
            tags |= tag << (phys * 2);
        }
        tags
    }
}

/// How a guest stop reads as a POSIX signal, to gdb and in a core file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Arithmetic: #DE, #MF, #XM.
    Fpe,
    /// Breakpoint or single step: #BP, #DB.
    Trap,
    /// Invalid opcode: #UD.
    Ill,
    /// Memory and protection faults: #PF, #GP and most others.
    Segv,
    /// Bus errors: #NP, #SS, #AC, #MC (as Linux reports them).
    Bus,
    /// The host killed the call (deadline, kill).
    Kill,
}

impl Signal {
    /// The signal an exception vector raises, as Linux maps them for a user process.
    pub(crate) fn for_vector(vector: u8) -> Signal {
        match vector {
            0 | 16 | 19 => Signal::Fpe,
            1 | 3 => Signal::Trap,
            6 => Signal::Ill,
            11 | 12 | 17 | 18 => Signal::Bus,
            _ => Signal::Segv,
        }
    }

    /// The Linux x86-64 signal number (what a core file's NT_PRSTATUS carries).
    pub(crate) fn linux_number(self) -> u8 {
        match self {
            Signal::Ill => 4,
            Signal::Trap => 5,
            Signal::Bus => 7,
            Signal::Fpe => 8,
            Signal::Kill => 9,
            Signal::Segv => 11,
        }
    }
}

/// What the guest may do with a region, beyond existing in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

/// A run of guest memory the guest itself can see, with the permissions its page tables give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub addr: u64,
    pub len: u64,
    pub perms: Perms,
}

impl Region {
    /// One past the last byte.
    pub(crate) fn end(&self) -> u64 {
        self.addr.saturating_add(self.len)
    }

    #[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb stub uses it"))]
    fn contains(&self, addr: u64) -> bool {
        addr >= self.addr && addr < self.end()
    }
}

/// The guest's own memory: every page its page tables map for CPL3, merged into runs of equal
/// permissions (one region never spans two of boot info, image, input, output, heap, stack), ascending. Host-owned pages (supervisor-only or unmapped) are never included.
pub(crate) fn guest_regions(layout: &Layout, image: &GuestImage) -> Vec<Region> {
    let mut pages: Vec<(u64, Perms)> = page_map(layout, image)
        .into_iter()
        .filter_map(|(addr, kind)| match kind {
            PageKind::User { write, exec } => Some((addr, Perms { read: true, write, exec })),
            PageKind::SystemRead | PageKind::SystemWrite | PageKind::SystemCode => None,
        })
        .collect();
    pages.sort_unstable_by_key(|&(addr, _)| addr);
    pages.dedup_by_key(|&mut (addr, _)| addr);
    // Keep the buffers, heap and stack apart even where they touch, so a size-bounded dump can
    // keep one and drop another.
    let boundaries = [IMAGE_BASE, layout.input_addr, layout.output_addr, layout.heap_addr, layout.stack_addr];
    let mut regions: Vec<Region> = Vec::new();
    for (addr, perms) in pages {
        match regions.last_mut() {
            Some(last) if last.end() == addr && last.perms == perms && !boundaries.contains(&addr) => {
                last.len += PAGE_SIZE
            }
            _ => regions.push(Region { addr, len: PAGE_SIZE, perms }),
        }
    }
    regions
}

/// The order in which a size-bounded dump keeps regions: the stack (where a backtrace starts),
/// the image (code and statics), the boot info, the output and input buffers, then the heap.
pub(crate) fn dump_priority(layout: &Layout, region: &Region) -> u8 {
    if region.addr >= layout.stack_addr {
        0
    } else if region.addr >= layout.heap_addr {
        5
    } else if region.addr >= layout.output_addr {
        3
    } else if region.addr >= layout.input_addr {
        4
    } else if region.addr == BOOT_INFO_ADDR {
        2
    } else {
        1
    }
}

/// How many bytes from `addr` onwards lie in `regions` without a gap, up to `len`.
#[cfg_attr(not(feature = "gdb"), allow(dead_code, reason = "the gdb stub uses it"))]
pub(crate) fn readable_prefix(regions: &[Region], addr: u64, len: u64) -> u64 {
    let mut at = addr;
    let end = addr.saturating_add(len);
    while at < end {
        match regions.iter().find(|r| r.contains(at)) {
            Some(r) => at = r.end().min(end),
            None => break,
        }
    }
    at - addr
}

/// Where the guest program's headers are, for a debugger to find how the image was relocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgramInfo {
    /// The relocated entry point (AT_ENTRY): gdb derives a PIE's load offset from it.
    pub entry: u64,
    /// Guest address of the program headers, their count (AT_PHDR, AT_PHNUM), when loaded.
    pub phdr: Option<(u64, u64)>,
}

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;

impl ProgramInfo {
    /// The entry point and program headers of a loaded image.
    pub(crate) fn of(image: &GuestImage) -> ProgramInfo {
        ProgramInfo { entry: image.entry(), phdr: image.program_headers() }
    }

    /// The auxiliary vector a Linux process would have (NT_AUXV, `qXfer:auxv:read`): enough for
    /// gdb to relocate a PIE's symbols to where glint loaded it.
    pub(crate) fn auxv(&self) -> Vec<u8> {
        let mut pairs = vec![(AT_PAGESZ, PAGE_SIZE), (AT_ENTRY, self.entry)];
        if let Some((addr, count)) = self.phdr {
            pairs.extend([(AT_PHDR, addr), (AT_PHENT, 56), (AT_PHNUM, count)]);
        }
        pairs.push((AT_NULL, 0));
        pairs.iter().flat_map(|&(k, v)| k.to_le_bytes().into_iter().chain(v.to_le_bytes())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::layout::SYSTEM_END;
    use crate::mem::MemoryConfig;

    fn hello() -> GuestImage {
        GuestImage::from_file(glint_guest_artifacts::HELLO).unwrap()
    }

    #[test]
    fn regions_are_the_guests_pages_only() {
        let image = hello();
        let layout = Layout::new(&MemoryConfig::default(), &image).unwrap();
        let regions = guest_regions(&layout, &image);
        assert!(regions.windows(2).all(|w| w[0].end() <= w[1].addr), "sorted, disjoint: {regions:?}");
        // Nothing host-owned: every region is at or above the boot-info page, past the system region.
        const { assert!(SYSTEM_END <= BOOT_INFO_ADDR) };
        assert!(regions.iter().all(|r| r.addr >= BOOT_INFO_ADDR));
        assert_eq!(
            regions[0],
            Region { addr: BOOT_INFO_ADDR, len: PAGE_SIZE, perms: Perms { read: true, ..Perms::default() } }
        );
        // The guard page below the stack is not mapped, so the stack is its own region.
        let stack = regions.last().unwrap();
        assert_eq!((stack.addr, stack.end()), (layout.stack_addr, layout.memory_size));
        assert!(regions.iter().all(|r| !(r.addr..r.end()).contains(&layout.guard_addr)));
        // The code is executable and read-only; data is never executable.
        assert!(regions
            .iter()
            .any(|r| r.perms.exec && !r.perms.write && r.addr <= image.entry() && image.entry() < r.end()));
        assert!(regions.iter().all(|r| !(r.perms.exec && r.perms.write)));
        for (addr, priority) in
            [(layout.stack_addr, 0), (layout.output_addr, 3), (layout.input_addr, 4), (layout.heap_addr, 5)]
        {
            let r = regions.iter().find(|r| r.addr == addr).unwrap();
            assert_eq!(dump_priority(&layout, r), priority);
        }
        assert_eq!(regions.iter().find(|r| r.addr == layout.heap_addr).unwrap().end(), layout.guard_addr);
    }

    #[test]
    fn program_headers_are_found_where_the_pie_was_loaded() {
        let bytes = std::fs::read(glint_guest_artifacts::HELLO).unwrap();
        let image = GuestImage::from_bytes(&bytes).unwrap();
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        let info = ProgramInfo::of(&image);
        assert_eq!(info.phdr, Some((IMAGE_BASE + elf.header.e_phoff, u64::from(elf.header.e_phnum))));
        assert_eq!(info.entry, IMAGE_BASE + elf.header.e_entry);
        // The headers gdb reads there are the file's.
        let (addr, n) = info.phdr.unwrap();
        let seg = image.segments().iter().find(|s| s.addr <= addr && addr < s.addr + s.data.len() as u64).unwrap();
        let at = (addr - seg.addr) as usize;
        let off = elf.header.e_phoff as usize;
        assert_eq!(seg.data[at..at + n as usize * 56], bytes[off..off + n as usize * 56]);
    }

    #[test]
    fn readable_prefix_stops_at_gaps() {
        let p = Perms::default();
        let regions = [Region { addr: 0x1000, len: 0x1000, perms: p }, Region { addr: 0x2000, len: 0x1000, perms: p }];
        assert_eq!(readable_prefix(&regions, 0x1800, 0x1000), 0x1000);
        assert_eq!(readable_prefix(&regions, 0x2800, 0x1000), 0x800);
        assert_eq!(readable_prefix(&regions, 0x800, 0x1000), 0);
        assert_eq!(readable_prefix(&regions, u64::MAX - 4, 100), 0);
    }

    #[test]
    fn vectors_map_to_linux_signals() {
        assert_eq!(Signal::for_vector(14).linux_number(), 11);
        assert_eq!(Signal::for_vector(6).linux_number(), 4);
        assert_eq!(Signal::for_vector(3).linux_number(), 5);
        assert_eq!(Signal::for_vector(1).linux_number(), 5);
        assert_eq!(Signal::for_vector(0).linux_number(), 8);
        assert_eq!(Signal::for_vector(13).linux_number(), 11);
        assert_eq!(Signal::for_vector(17).linux_number(), 7);
    }

    #[test]
    fn fxsave_images_round_trip() {
        let mut image = [0u8; FXSAVE_SIZE];
        for (i, b) in image.iter_mut().enumerate() {
            *b = i as u8;
        }
        let f = FpuRegs::from_fxsave(&image);
        assert_eq!((f.fcw, f.fsw, f.ftw, f.fop, f.mxcsr), (0x0100, 0x0302, 4, 0x0706, 0x1b1a_1918));
        assert_eq!(f.fip, 0x0f0e_0d0c_0b0a_0908);
        assert_eq!(f.xmm[15][15], (160 + 15 * 16 + 15) as u8);
        let mut out = [0xeeu8; FXSAVE_SIZE];
        f.write_fxsave(&mut out);
        assert_eq!(out[..5], image[..5]);
        assert_eq!(out[5], 0xee, "reserved byte untouched");
        assert_eq!(out[6..28], image[6..28]);
        assert_eq!(out[28..32], [0xee; 4], "MXCSR_MASK untouched");
        assert_eq!(out[32..416], image[32..416]);
        assert!(out[416..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn tag_word_follows_the_abridged_one() {
        let mut f = FpuRegs::default();
        assert_eq!(f.full_tag_word(), 0xffff);
        // ST0 = 1.0 in physical register 7 (top = 7).
        f.fsw = 7 << 11;
        f.ftw = 1 << 7;
        f.st[0] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f, 0, 0, 0, 0, 0, 0];
        assert_eq!(f.full_tag_word(), 0x3fff);
    }

    #[test]
    fn auxv_pairs_end_with_null() {
        let a = ProgramInfo { entry: 0x20_21b0, phdr: Some((0x20_0040, 9)) }.auxv();
        assert_eq!(a.len(), 6 * 16);
        assert_eq!(a[16..24], AT_ENTRY.to_le_bytes());
        assert_eq!(a[24..32], 0x20_21b0u64.to_le_bytes());
        assert_eq!(a[a.len() - 16..], [0u8; 16]);
    }
}
