//! Why a guest image was refused.

use std::path::PathBuf;

use goblin::elf::dynamic::tag_to_str;
use goblin::elf::header::{et_to_str, machine_to_str, EM_X86_64};
use goblin::elf::reloc::r_to_str;

/// Why [`GuestImage`](super::GuestImage) refused an ELF file.
///
/// Segment indices (`index`) count entries of the program header table from 0, as `readelf -l`
/// lists them; section indices count the section header table. Addresses are the ones written in
/// the file (link-time virtual addresses), before a PIE is moved to its load base.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read guest image {}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The file is larger than any guest image glint would load; reading stopped at the limit.
    #[error("guest image {} is larger than the {limit:#x}-byte limit", path.display())]
    FileTooLarge {
        /// The file that was being read.
        path: PathBuf,
        /// The largest file glint reads.
        limit: u64,
    },
    /// The input is empty.
    #[error("the guest image is empty")]
    Empty,
    /// The input does not start with the ELF magic `\x7fELF`.
    #[error("not an ELF file (starts with {magic:02x?})")]
    NotElf {
        /// Up to the first four bytes of the input.
        magic: Vec<u8>,
    },
    /// `EI_CLASS` is not `ELFCLASS64`.
    #[error("the ELF class is {class}, not 64-bit (ELFCLASS64 = 2)")]
    NotElf64 {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// `EI_DATA` is not `ELFDATA2LSB`.
    #[error("the ELF data encoding is {data}, not little-endian (ELFDATA2LSB = 1)")]
    NotLittleEndian {
        /// The `EI_DATA` byte.
        data: u8,
    },
    /// `EI_VERSION` is not `EV_CURRENT`.
    #[error("the ELF identification version is {version}, not 1 (EV_CURRENT)")]
    UnsupportedElfVersion {
        /// The `EI_VERSION` byte.
        version: u8,
    },
    /// The input ends inside the 64-byte ELF header.
    #[error("the {len}-byte file ends inside the 64-byte ELF header")]
    TruncatedHeader {
        /// Length of the input in bytes.
        len: usize,
    },
    /// `e_machine` is not x86-64.
    #[error("machine {machine} ({}) is not x86-64 ({EM_X86_64})", machine_to_str(*machine))]
    WrongMachine {
        /// The `e_machine` field.
        machine: u16,
    },
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`: relocatable objects and core files do not run.
    #[error("the ELF type is {e_type} ({}), neither ET_EXEC nor ET_DYN", et_to_str(*e_type))]
    UnsupportedType {
        /// The `e_type` field.
        e_type: u16,
    },
    /// `e_phentsize` is not the size of an ELF64 program header.
    #[error("program header entries are {size} bytes, expected 56")]
    BadProgramHeaderSize {
        /// The `e_phentsize` field.
        size: u16,
    },
    /// The program header table does not lie inside the file.
    #[error(
        "program header table (offset {offset:#x}, {count} entries) lies past the end of the \
         {file_len:#x}-byte file"
    )]
    ProgramHeadersOutOfFile {
        /// The `e_phoff` field.
        offset: u64,
        /// The `e_phnum` field.
        count: u16,
        /// Length of the input in bytes.
        file_len: u64,
    },
    /// The image asks for a program interpreter (dynamic linker), which a sandbox does not have.
    #[error("segment {index} (PT_INTERP) asks for a dynamic linker; guests must be static")]
    Interpreter {
        /// Index of the `PT_INTERP` program header.
        index: usize,
    },
    /// The image uses thread-local storage, which glint does not set up for guests.
    #[error("segment {index} (PT_TLS) declares thread-local storage, which glint does not provide")]
    ThreadLocalStorage {
        /// Index of the `PT_TLS` program header.
        index: usize,
    },
    /// `PT_GNU_STACK` asks for an executable stack; guest stacks are never executable.
    #[error("segment {index} (PT_GNU_STACK) asks for an executable stack")]
    ExecutableStack {
        /// Index of the `PT_GNU_STACK` program header.
        index: usize,
    },
    /// No `PT_LOAD` segment with a non-zero memory size: nothing to run.
    #[error("the image has no PT_LOAD segment")]
    NoLoadSegment,
    /// A segment's file bytes do not lie inside the file.
    #[error(
        "segment {index} (offset {offset:#x}, {size:#x} bytes) lies past the end of the \
         {file_len:#x}-byte file"
    )]
    SegmentOutOfFile {
        /// Index of the program header.
        index: usize,
        /// The `p_offset` field.
        offset: u64,
        /// The `p_filesz` field.
        size: u64,
        /// Length of the input in bytes.
        file_len: u64,
    },
    /// A `PT_LOAD` segment has more file bytes than memory.
    #[error("segment {index} has {file_size:#x} file bytes but only {mem_size:#x} bytes of memory")]
    FileSizeExceedsMemSize {
        /// Index of the program header.
        index: usize,
        /// The `p_filesz` field.
        file_size: u64,
        /// The `p_memsz` field.
        mem_size: u64,
    },
    /// A segment's address range wraps around the 64-bit address space.
    #[error("segment {index} (vaddr {vaddr:#x}, {mem_size:#x} bytes) wraps around the address space")]
    AddressOverflow {
        /// Index of the program header.
        index: usize,
        /// The `p_vaddr` field.
        vaddr: u64,
        /// The `p_memsz` field.
        mem_size: u64,
    },
    /// A single `PT_LOAD` segment is larger than the largest guest memory.
    #[error("segment {index} needs {mem_size:#x} bytes, more than the {max:#x}-byte guest memory limit")]
    SegmentTooLarge {
        /// Index of the program header.
        index: usize,
        /// The `p_memsz` field.
        mem_size: u64,
        /// The largest guest memory, [`glint_abi::layout::MAX_MEMORY`].
        max: u64,
    },
    /// A `PT_LOAD` segment's address and file offset differ modulo the page size, so the file
    /// cannot be mapped page by page.
    #[error(
        "segment {index} has vaddr {vaddr:#x} and file offset {offset:#x}, which differ modulo the \
         page size"
    )]
    Misaligned {
        /// Index of the program header.
        index: usize,
        /// The `p_vaddr` field.
        vaddr: u64,
        /// The `p_offset` field.
        offset: u64,
    },
    /// A `PT_LOAD` segment is both writable and executable (W^X).
    #[error("segment {index} is both writable and executable")]
    WritableAndExecutableSegment {
        /// Index of the program header.
        index: usize,
    },
    /// `PT_LOAD` segments are not sorted by address, as the ELF specification requires.
    #[error("segment {index} (vaddr {vaddr:#x}) comes after segment {previous} (vaddr {previous_vaddr:#x})")]
    UnsortedSegments {
        /// Index of the program header that is out of order.
        index: usize,
        /// Its `p_vaddr` field.
        vaddr: u64,
        /// Index of the `PT_LOAD` program header before it.
        previous: usize,
        /// That header's `p_vaddr` field.
        previous_vaddr: u64,
    },
    /// Two `PT_LOAD` segments claim the same bytes of memory.
    #[error("segments {first} and {second} overlap at {addr:#x}")]
    OverlappingSegments {
        /// Index of the lower program header.
        first: usize,
        /// Index of the higher program header.
        second: usize,
        /// First address both claim.
        addr: u64,
    },
    /// The loaded segments span more than the largest guest memory.
    #[error("the image spans {span:#x} bytes, more than the {max:#x}-byte guest memory limit")]
    ImageTooLarge {
        /// Bytes from the lowest segment page to the end of the highest segment page.
        span: u64,
        /// The largest guest memory, [`glint_abi::layout::MAX_MEMORY`].
        max: u64,
    },
    /// A fixed-address (`ET_EXEC`) image starts below the region reserved for the image.
    #[error("the ET_EXEC image starts at {vaddr:#x}, below the image base {image_base:#x}")]
    BelowImageBase {
        /// Lowest `PT_LOAD` page.
        vaddr: u64,
        /// [`glint_abi::layout::IMAGE_BASE`].
        image_base: u64,
    },
    /// Once placed, the image would end beyond the largest guest memory.
    #[error("the image ends at {end:#x}, beyond the {max:#x}-byte guest memory limit")]
    BeyondGuestMemory {
        /// Page-aligned end of the highest segment, after relocation.
        end: u64,
        /// The largest guest memory, [`glint_abi::layout::MAX_MEMORY`].
        max: u64,
    },
    /// The entry point is not inside any executable `PT_LOAD` segment.
    #[error("entry point {entry:#x} lies outside every executable segment")]
    EntryNotExecutable {
        /// The `e_entry` field.
        entry: u64,
    },
    /// A page would be both writable and executable (W^X), because segments share it.
    #[error(
        "page {page:#x} would be both writable (segment {writable}) and executable (segment \
         {executable})"
    )]
    WritableAndExecutable {
        /// Guest address of the page, after relocation.
        page: u64,
        /// Index of a writable program header touching the page.
        writable: usize,
        /// Index of an executable program header touching the page.
        executable: usize,
    },
    /// No note with owner `glint` and the ABI-version type was found.
    #[error("the image carries no glint ABI-version note")]
    MissingAbiNote,
    /// The glint ABI-version note has a descriptor of the wrong size.
    #[error("the glint ABI-version note has a {desc_size}-byte descriptor, expected 4")]
    BadAbiNote {
        /// The note's `n_descsz`.
        desc_size: u32,
    },
    /// The image was built for another ABI version.
    #[error("the image was built for glint ABI version {found}, this host supports {expected}")]
    AbiVersionMismatch {
        /// Version in the image's note.
        found: u32,
        /// [`glint_abi::ABI_VERSION`].
        expected: u32,
    },
    /// A note header claims more bytes than its segment or section holds.
    #[error("the note at file offset {offset:#x} runs past the end of its note area")]
    MalformedNote {
        /// File offset of the note header.
        offset: u64,
    },
    /// `e_shentsize` is not the size of an ELF64 section header.
    #[error("section header entries are {size} bytes, expected 64")]
    BadSectionHeaderSize {
        /// The `e_shentsize` field.
        size: u16,
    },
    /// The section header table does not lie inside the file.
    #[error(
        "section header table (offset {offset:#x}, {count} entries) lies past the end of the \
         {file_len:#x}-byte file"
    )]
    SectionHeadersOutOfFile {
        /// The `e_shoff` field.
        offset: u64,
        /// The `e_shnum` field.
        count: u16,
        /// Length of the input in bytes.
        file_len: u64,
    },
    /// A note section's bytes do not lie inside the file.
    #[error(
        "section {index} (offset {offset:#x}, {size:#x} bytes) lies past the end of the \
         {file_len:#x}-byte file"
    )]
    SectionOutOfFile {
        /// Index of the section header.
        index: usize,
        /// The `sh_offset` field.
        offset: u64,
        /// The `sh_size` field.
        size: u64,
        /// Length of the input in bytes.
        file_len: u64,
    },
    /// More than one program header of a type that may appear once (`PT_DYNAMIC`,
    /// `PT_GNU_RELRO`).
    #[error("segments {first} and {second} are both {kind}")]
    DuplicateSegment {
        /// The program header type, such as `"PT_DYNAMIC"`.
        kind: &'static str,
        /// Index of the first such program header.
        first: usize,
        /// Index of the second.
        second: usize,
    },
    /// A dynamic entry needs a dynamic linker or a relocation format glint does not apply
    /// (`DT_NEEDED`, `DT_REL`, `DT_JMPREL`, `DT_RELR`).
    #[error("dynamic entry {tag:#x} ({}) is not supported in a static guest", dynamic_tag_name(*tag))]
    UnsupportedDynamicTag {
        /// The `d_tag` value.
        tag: u64,
    },
    /// `DT_RELA` without `DT_RELASZ`, or the reverse.
    #[error("dynamic section has {present} but no {missing}")]
    IncompleteRela {
        /// The tag that is present.
        present: &'static str,
        /// The tag that is missing.
        missing: &'static str,
    },
    /// `DT_RELAENT` is not the size of an `Elf64_Rela`.
    #[error("relocation entries (DT_RELAENT) are {size} bytes, expected 24")]
    BadRelaEntrySize {
        /// The `DT_RELAENT` value.
        size: u64,
    },
    /// `DT_RELASZ` is not a whole number of `Elf64_Rela` entries.
    #[error("the relocation table size (DT_RELASZ) {size:#x} is not a multiple of 24")]
    BadRelaTableSize {
        /// The `DT_RELASZ` value.
        size: u64,
    },
    /// The relocation table is not inside the file bytes of any `PT_LOAD` segment.
    #[error("relocation table at {vaddr:#x} ({size:#x} bytes) lies outside the file bytes of every segment")]
    RelaTableOutOfImage {
        /// The `DT_RELA` value.
        vaddr: u64,
        /// The `DT_RELASZ` value.
        size: u64,
    },
    /// A relocation type other than `R_X86_64_RELATIVE` and `R_X86_64_NONE`.
    #[error(
        "relocation {index} has type {r_type} ({}); only R_X86_64_RELATIVE and R_X86_64_NONE are \
         supported",
        r_to_str(*r_type, EM_X86_64)
    )]
    UnsupportedRelocation {
        /// Index of the entry in the relocation table.
        index: usize,
        /// The relocation type (low 32 bits of `r_info`).
        r_type: u32,
    },
    /// A relocation would write outside the memory of every `PT_LOAD` segment.
    #[error("relocation {index} writes 8 bytes at {offset:#x}, outside every segment")]
    RelocationOutOfImage {
        /// Index of the entry in the relocation table.
        index: usize,
        /// The `r_offset` field.
        offset: u64,
    },
}

/// `DT_RELR` (packed relative relocations), newer than goblin's tag table.
pub(super) const DT_RELR: u64 = 36;

fn dynamic_tag_name(tag: u64) -> &'static str {
    if tag == DT_RELR {
        "DT_RELR"
    } else {
        tag_to_str(tag)
    }
}
