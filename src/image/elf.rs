//! Checked decoding of the few ELF64 structures the loader reads: the file header, program
//! headers and section headers.
//!
//! Decoded by hand from little-endian bytes rather than with `goblin::elf::Elf::parse`, which also
//! parses symbol, string and section tables glint never uses; every read goes through [`array()`],
//! so no field can make the host index out of bounds.

use goblin::elf::header::{
    EI_CLASS, EI_DATA, EI_VERSION, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_DYN, ET_EXEC, EV_CURRENT,
};

use super::ImageError;

/// Size of an ELF64 file header.
pub(super) const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
pub(super) const PHDR_SIZE: usize = 56;
/// Size of an ELF64 section header.
pub(super) const SHDR_SIZE: usize = 64;

/// The `N` bytes at `offset`, or `None` unless all of them lie inside `bytes`.
pub(super) fn array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

pub(super) fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    array(bytes, offset).map(u16::from_le_bytes)
}

pub(super) fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    array(bytes, offset).map(u32::from_le_bytes)
}

pub(super) fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    array(bytes, offset).map(u64::from_le_bytes)
}

/// `bytes[offset..offset + size]` for file-supplied `offset` and `size`, or `None` unless the whole
/// range lies inside `bytes`.
pub(super) fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    bytes.get(start..end)
}

/// The file length as the `u64` that file offsets are compared with.
pub(super) fn file_len(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// The file header fields the loader uses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub e_type: u16,
    pub entry: u64,
    pub phoff: u64,
    pub shoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
    pub shentsize: u16,
    pub shnum: u16,
}

impl Header {
    /// Decodes and checks the identification and the header: ELF64, little-endian, x86-64,
    /// `ET_EXEC` or `ET_DYN`.
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        if bytes.is_empty() {
            return Err(ImageError::Empty);
        }
        // Compare as much of the magic as there is, so a 2-byte file of garbage is "not ELF"
        // while a 2-byte prefix of a real header is "truncated".
        let magic_len = bytes.len().min(ELFMAG.len());
        let magic = bytes.get(..magic_len).unwrap_or_default();
        if ELFMAG.get(..magic_len) != Some(magic) {
            return Err(ImageError::NotElf { magic: magic.to_vec() });
        }
        if let Some(&class) = bytes.get(EI_CLASS) {
            if class != ELFCLASS64 {
                return Err(ImageError::NotElf64 { class });
            }
        }
        if let Some(&data) = bytes.get(EI_DATA) {
            if data != ELFDATA2LSB {
                return Err(ImageError::NotLittleEndian { data });
            }
        }
        if let Some(&version) = bytes.get(EI_VERSION) {
            if version != EV_CURRENT {
                return Err(ImageError::UnsupportedElfVersion { version });
            }
        }
        let header = Self::decode(bytes).ok_or(ImageError::TruncatedHeader { len: bytes.len() })?;
        let machine = u16_at(bytes, 18).ok_or(ImageError::TruncatedHeader { len: bytes.len() })?;
        if machine != EM_X86_64 {
            return Err(ImageError::WrongMachine { machine });
        }
        if header.e_type != ET_EXEC && header.e_type != ET_DYN {
            return Err(ImageError::UnsupportedType { e_type: header.e_type });
        }
        Ok(header)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < EHDR_SIZE {
            return None;
        }
        Some(Self {
            e_type: u16_at(bytes, 16)?,
            entry: u64_at(bytes, 24)?,
            phoff: u64_at(bytes, 32)?,
            shoff: u64_at(bytes, 40)?,
            phentsize: u16_at(bytes, 54)?,
            phnum: u16_at(bytes, 56)?,
            shentsize: u16_at(bytes, 58)?,
            shnum: u16_at(bytes, 60)?,
        })
    }
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
    pub align: u64,
}

/// Decodes the program header table after checking that it lies inside the file.
///
/// The table is bounded by the file length before anything is allocated for it.
pub(super) fn program_headers(bytes: &[u8], header: &Header) -> Result<Vec<ProgramHeader>, ImageError> {
    if header.phnum == 0 {
        return Err(ImageError::NoLoadSegment);
    }
    if usize::from(header.phentsize) != PHDR_SIZE {
        return Err(ImageError::BadProgramHeaderSize { size: header.phentsize });
    }
    let out_of_file =
        || ImageError::ProgramHeadersOutOfFile { offset: header.phoff, count: header.phnum, file_len: file_len(bytes) };
    let table_size = u64::from(header.phnum).checked_mul(PHDR_SIZE as u64).ok_or_else(out_of_file)?;
    let table = file_range(bytes, header.phoff, table_size).ok_or_else(out_of_file)?;
    table
        .chunks_exact(PHDR_SIZE)
        .map(|ph| {
            Some(ProgramHeader {
                p_type: u32_at(ph, 0)?,
                flags: u32_at(ph, 4)?,
                offset: u64_at(ph, 8)?,
                vaddr: u64_at(ph, 16)?,
                file_size: u64_at(ph, 32)?,
                mem_size: u64_at(ph, 40)?,
                align: u64_at(ph, 48)?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(out_of_file)
}

/// One section header, reduced to what note lookup needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct SectionHeader {
    pub sh_type: u32,
    pub offset: u64,
    pub size: u64,
    pub align: u64,
}

/// Decodes the section header table after checking that it lies inside the file.
///
/// Extended section numbering (`e_shnum == 0` with the count in section 0) is not followed: such
/// files simply have no sections to search.
pub(super) fn section_headers(bytes: &[u8], header: &Header) -> Result<Vec<SectionHeader>, ImageError> {
    if header.shnum == 0 {
        return Ok(Vec::new());
    }
    if usize::from(header.shentsize) != SHDR_SIZE {
        return Err(ImageError::BadSectionHeaderSize { size: header.shentsize });
    }
    let out_of_file =
        || ImageError::SectionHeadersOutOfFile { offset: header.shoff, count: header.shnum, file_len: file_len(bytes) };
    let table_size = u64::from(header.shnum).checked_mul(SHDR_SIZE as u64).ok_or_else(out_of_file)?;
    let table = file_range(bytes, header.shoff, table_size).ok_or_else(out_of_file)?;
    table
        .chunks_exact(SHDR_SIZE)
        .map(|sh| {
            Some(SectionHeader {
                sh_type: u32_at(sh, 4)?,
                offset: u64_at(sh, 24)?,
                size: u64_at(sh, 32)?,
                align: u64_at(sh, 48)?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(out_of_file)
}
