//! A tiny ELF64 writer for tests: raw guests (a few instructions, no toolchain) and malformed
//! images for the loader.
//!
//! Every field the loader checks can be set directly, including wrong ones; `build` lays the file
//! out (header, program headers, note, segment bytes at offsets congruent with their addresses)
//! and never validates anything. Also compiled into the crate's own unit tests (`src/image`).
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(
    clippy::cast_possible_truncation,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    reason = "test helper; sizes are small and chosen by the test"
)]

use glint_abi::layout::IMAGE_BASE;
use glint_abi::note::version_note;
use glint_abi::ABI_VERSION;

pub const ET_REL: u16 = 1;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const ET_CORE: u16 = 4;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const ELFCLASS32: u8 = 1;
pub const ELFCLASS64: u8 = 2;
pub const ELFDATA2LSB: u8 = 1;
pub const ELFDATA2MSB: u8 = 2;

pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;
pub const PT_TLS: u32 = 7;
pub const PT_GNU_STACK: u32 = 0x6474_e551;
pub const PT_GNU_RELRO: u32 = 0x6474_e552;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

pub const DT_NULL: u64 = 0;
pub const DT_NEEDED: u64 = 1;
pub const DT_RELA: u64 = 7;
pub const DT_RELASZ: u64 = 8;
pub const DT_RELAENT: u64 = 9;
pub const DT_REL: u64 = 17;
pub const DT_JMPREL: u64 = 23;
pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_RELATIVE: u32 = 8;

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;
const SHT_NOTE: u32 = 7;
const PAGE: u64 = 4096;

/// One program header and the file bytes behind it.
#[derive(Clone, Debug)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub vaddr: u64,
    /// Written into the file; `p_filesz` is its length unless `file_size` overrides it.
    pub data: Vec<u8>,
    pub mem_size: u64,
    /// Where `data` goes; by default the next offset congruent with `vaddr` modulo the page size.
    pub offset: Option<u64>,
    /// `p_filesz` as written in the header, whatever `data` holds.
    pub file_size: Option<u64>,
    pub align: u64,
}

impl Segment {
    /// A segment of any type whose memory size is the length of `data`.
    pub fn new(p_type: u32, flags: u32, vaddr: u64, data: &[u8]) -> Self {
        Segment {
            p_type,
            flags,
            vaddr,
            data: data.to_vec(),
            mem_size: data.len() as u64,
            offset: None,
            file_size: None,
            align: PAGE,
        }
    }

    /// A `PT_LOAD` segment.
    pub fn load(flags: u32, vaddr: u64, data: &[u8]) -> Self {
        Self::new(PT_LOAD, flags, vaddr, data)
    }

    pub fn mem_size(mut self, mem_size: u64) -> Self {
        self.mem_size = mem_size;
        self
    }

    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub fn file_size(mut self, file_size: u64) -> Self {
        self.file_size = Some(file_size);
        self
    }
}

/// One `Elf64_Rela`.
#[derive(Clone, Copy, Debug)]
pub struct Rela {
    /// Link-time address of the 8 bytes to patch.
    pub offset: u64,
    pub r_type: u32,
    pub addend: i64,
}

impl Rela {
    pub fn relative(offset: u64, addend: i64) -> Self {
        Rela { offset, r_type: R_X86_64_RELATIVE, addend }
    }
}

/// A dynamic section with a RELA table, laid out as a read-only `PT_LOAD` at `vaddr` holding the
/// dynamic array followed by the table, plus a `PT_DYNAMIC` over the array. Both program headers
/// come after the explicit segments, so `vaddr` should lie above them.
#[derive(Clone, Debug)]
pub struct Dynamic {
    pub vaddr: u64,
    pub relocations: Vec<Rela>,
    /// Entries written before `DT_RELA`/`DT_RELASZ`/`DT_RELAENT` (such as `DT_NEEDED`).
    pub extra: Vec<(u64, u64)>,
}

impl Dynamic {
    pub fn new(vaddr: u64, relocations: Vec<Rela>) -> Self {
        Dynamic { vaddr, relocations, extra: Vec::new() }
    }

    pub fn entry(mut self, tag: u64, value: u64) -> Self {
        self.extra.push((tag, value));
        self
    }

    /// The dynamic array and, after it, the relocation table.
    fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        let count = self.extra.len() as u64 + 4;
        let table_vaddr = self.vaddr + count * 16;
        let mut entries = self.extra.clone();
        entries.extend([
            (DT_RELA, table_vaddr),
            (DT_RELASZ, self.relocations.len() as u64 * 24),
            (DT_RELAENT, 24),
            (DT_NULL, 0),
        ]);
        let array = entries.iter().flat_map(|(tag, value)| le64(*tag).into_iter().chain(le64(*value))).collect();
        let table = self
            .relocations
            .iter()
            .flat_map(|r| le64(r.offset).into_iter().chain(le64(u64::from(r.r_type))).chain(le64(r.addend as u64)))
            .collect();
        (array, table)
    }
}

/// An ELF64 image under construction.
#[derive(Clone, Debug)]
pub struct RawElf {
    pub class: u8,
    pub data_encoding: u8,
    pub ident_version: u8,
    pub e_type: u16,
    pub machine: u16,
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// The glint ABI-version note with this version, or none.
    pub abi_note: Option<u32>,
    /// Put the note in a `SHT_NOTE` section (with a section header table) instead of a `PT_NOTE`.
    pub note_in_section: bool,
    pub dynamic: Option<Dynamic>,
    /// Header overrides, for broken program header tables.
    pub phoff: Option<u64>,
    pub phentsize: Option<u16>,
    pub phnum: Option<u16>,
}

impl RawElf {
    /// A little-endian x86-64 ELF64 of type `e_type` with the right ABI note and nothing else.
    pub fn new(e_type: u16) -> Self {
        RawElf {
            class: ELFCLASS64,
            data_encoding: ELFDATA2LSB,
            ident_version: 1,
            e_type,
            machine: EM_X86_64,
            entry: 0,
            segments: Vec::new(),
            abi_note: Some(ABI_VERSION),
            note_in_section: false,
            dynamic: None,
            phoff: None,
            phentsize: None,
            phnum: None,
        }
    }

    /// An ET_EXEC guest whose only segment is `code` (read + execute) at `IMAGE_BASE`, which is
    /// also the entry point: `RawElf::exec(&[0x0f, 0x0b])` is a guest that starts with `ud2`.
    pub fn exec(code: &[u8]) -> Self {
        Self::new(ET_EXEC).entry(IMAGE_BASE).segment(Segment::load(PF_R | PF_X, IMAGE_BASE, code))
    }

    /// An ET_DYN guest linked at `link_base` whose only segment is `code` (read + execute),
    /// entered at its first byte.
    pub fn pie(code: &[u8], link_base: u64) -> Self {
        Self::new(ET_DYN).entry(link_base).segment(Segment::load(PF_R | PF_X, link_base, code))
    }

    pub fn entry(mut self, entry: u64) -> Self {
        self.entry = entry;
        self
    }

    pub fn segment(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    pub fn abi_note(mut self, version: Option<u32>) -> Self {
        self.abi_note = version;
        self
    }

    pub fn dynamic(mut self, dynamic: Dynamic) -> Self {
        self.dynamic = Some(dynamic);
        self
    }

    /// Lays the image out. Overrides are written as given, even when they make no sense.
    pub fn build(&self) -> Vec<u8> {
        let mut segments = self.segments.clone();
        let mut dynamic_index = None;
        if let Some(dynamic) = &self.dynamic {
            let (array, table) = dynamic.bytes();
            let mut blob = array.clone();
            blob.extend_from_slice(&table);
            segments.push(Segment::load(PF_R, dynamic.vaddr, &blob));
            // Its offset is copied from the PT_LOAD above once that is placed.
            dynamic_index = Some(segments.len());
            segments.push(Segment::new(PT_DYNAMIC, PF_R | PF_W, dynamic.vaddr, &array));
        }
        let note = self.abi_note.map(version_note);
        if let (Some(note), false) = (note, self.note_in_section) {
            let mut seg = Segment::new(PT_NOTE, PF_R, 0, &note);
            seg.align = 4;
            segments.push(seg);
        }

        let phnum = segments.len() as u64;
        let mut out = vec![0u8; (EHDR_SIZE + phnum * PHDR_SIZE) as usize];
        let mut offsets = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let offset = if Some(i) == dynamic_index {
                offsets[i - 1]
            } else {
                let offset = seg.offset.unwrap_or_else(|| {
                    let cursor = out.len() as u64;
                    if seg.p_type == PT_LOAD {
                        let want = seg.vaddr % PAGE;
                        cursor + (want + PAGE - cursor % PAGE) % PAGE
                    } else {
                        cursor.next_multiple_of(8)
                    }
                });
                write_at(&mut out, offset, &seg.data);
                offset
            };
            offsets.push(offset);
        }

        let mut shoff = 0;
        let mut shnum = 0;
        if let (Some(note), true) = (note, self.note_in_section) {
            let note_offset = out.len() as u64;
            out.extend_from_slice(&note);
            shoff = out.len().next_multiple_of(8) as u64;
            shnum = 2;
            let mut sh = vec![0u8; SHDR_SIZE as usize];
            put32(&mut sh, 4, SHT_NOTE);
            put64(&mut sh, 24, note_offset);
            put64(&mut sh, 32, note.len() as u64);
            put64(&mut sh, 48, 4);
            write_at(&mut out, shoff + SHDR_SIZE, &sh);
        }

        let mut ident = [0u8; 16];
        ident[..4].copy_from_slice(b"\x7fELF");
        ident[4] = self.class;
        ident[5] = self.data_encoding;
        ident[6] = self.ident_version;
        out[..16].copy_from_slice(&ident);
        put16(&mut out, 16, self.e_type);
        put16(&mut out, 18, self.machine);
        put32(&mut out, 20, 1);
        put64(&mut out, 24, self.entry);
        put64(&mut out, 32, self.phoff.unwrap_or(EHDR_SIZE));
        put64(&mut out, 40, shoff);
        put16(&mut out, 52, EHDR_SIZE as u16);
        put16(&mut out, 54, self.phentsize.unwrap_or(PHDR_SIZE as u16));
        put16(&mut out, 56, self.phnum.unwrap_or(phnum as u16));
        put16(&mut out, 58, SHDR_SIZE as u16);
        put16(&mut out, 60, shnum);

        for (i, (seg, offset)) in segments.iter().zip(offsets).enumerate() {
            let at = (EHDR_SIZE + i as u64 * PHDR_SIZE) as usize;
            put32(&mut out, at, seg.p_type);
            put32(&mut out, at + 4, seg.flags);
            put64(&mut out, at + 8, offset);
            put64(&mut out, at + 16, seg.vaddr);
            put64(&mut out, at + 24, seg.vaddr);
            put64(&mut out, at + 32, seg.file_size.unwrap_or(seg.data.len() as u64));
            put64(&mut out, at + 40, seg.mem_size);
            put64(&mut out, at + 48, seg.align);
        }
        out
    }
}

fn le64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

fn write_at(out: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if out.len() < end {
        out.resize(end, 0);
    }
    out[start..end].copy_from_slice(data);
}

fn put16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
