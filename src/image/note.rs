//! Finding the glint ABI-version note ([`glint_abi::note`]).

use glint_abi::note::{NOTE_NAME, NOTE_TYPE};
use goblin::elf::program_header::PT_NOTE;
use goblin::elf::section_header::SHT_NOTE;

use super::elf::{self, file_range, u32_at, Header, ProgramHeader};
use super::ImageError;

/// Size of `Elf64_Nhdr` (`n_namesz`, `n_descsz`, `n_type`).
const NHDR_SIZE: u64 = 12;

/// The ABI version the image declares: from `PT_NOTE` segments, or if none of them carries the
/// note, from `SHT_NOTE` sections (a linker script may leave the note out of every segment).
pub(super) fn abi_version(bytes: &[u8], header: &Header, phdrs: &[ProgramHeader]) -> Result<u32, ImageError> {
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type != PT_NOTE {
            continue;
        }
        let area = file_range(bytes, ph.offset, ph.file_size).ok_or(ImageError::SegmentOutOfFile {
            index,
            offset: ph.offset,
            size: ph.file_size,
            file_len: elf::file_len(bytes),
        })?;
        if let Some(version) = scan(area, ph.offset, note_align(ph.align))? {
            return Ok(version);
        }
    }
    for (index, sh) in elf::section_headers(bytes, header)?.iter().enumerate() {
        if sh.sh_type != SHT_NOTE {
            continue;
        }
        let area = file_range(bytes, sh.offset, sh.size).ok_or(ImageError::SectionOutOfFile {
            index,
            offset: sh.offset,
            size: sh.size,
            file_len: elf::file_len(bytes),
        })?;
        if let Some(version) = scan(area, sh.offset, note_align(sh.align))? {
            return Ok(version);
        }
    }
    Err(ImageError::MissingAbiNote)
}

/// Walks the notes in `area` (which starts at file offset `area_offset`) laid out with `align`
/// (4, or 8 for some 64-bit notes) and returns the glint ABI version if one of them is the note.
fn scan(area: &[u8], area_offset: u64, align: u64) -> Result<Option<u32>, ImageError> {
    let area_len = elf::file_len(area);
    let mut pos: u64 = 0;
    // Fewer bytes than a note header left is padding, not a note.
    while area_len.checked_sub(pos).is_some_and(|left| left >= NHDR_SIZE) {
        let malformed = || ImageError::MalformedNote { offset: area_offset.saturating_add(pos) };
        let at = |off: u64| -> Option<u32> { u32_at(area, usize::try_from(pos.checked_add(off)?).ok()?) };
        let (name_size, desc_size, n_type) = match (at(0), at(4), at(8)) {
            (Some(n), Some(d), Some(t)) => (n, d, t),
            _ => return Err(malformed()),
        };
        let name_start = pos.checked_add(NHDR_SIZE).ok_or_else(malformed)?;
        let name_end = name_start.checked_add(u64::from(name_size)).ok_or_else(malformed)?;
        let desc_start = align_up(name_end, align).ok_or_else(malformed)?;
        let desc_end = desc_start.checked_add(u64::from(desc_size)).ok_or_else(malformed)?;
        if desc_end > area_len {
            return Err(malformed());
        }
        let name = file_range(area, name_start, u64::from(name_size)).ok_or_else(malformed)?;
        // The owner name is NUL-terminated; tolerate a producer that leaves the NUL out.
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        if name == NOTE_NAME && n_type == NOTE_TYPE {
            if desc_size != 4 {
                return Err(ImageError::BadAbiNote { desc_size });
            }
            let desc = file_range(area, desc_start, 4).ok_or_else(malformed)?;
            let version = u32_at(desc, 0).ok_or_else(malformed)?;
            return Ok(Some(version));
        }
        pos = align_up(desc_end, align).ok_or_else(malformed)?;
    }
    Ok(None)
}

/// Notes are 4-byte aligned, except in areas aligned to 8 (such as `.note.gnu.property`), where
/// descriptors and the next note start on 8-byte boundaries.
fn note_align(area_align: u64) -> u64 {
    if area_align == 8 {
        8
    } else {
        4
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
fn align_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glint_abi::note::version_note;

    #[test]
    fn finds_the_note_after_another_note() {
        let mut area = Vec::new();
        // A GNU build-id style note: name "GNU\0", 3-byte descriptor padded to 4.
        area.extend_from_slice(&4u32.to_le_bytes());
        area.extend_from_slice(&3u32.to_le_bytes());
        area.extend_from_slice(&3u32.to_le_bytes());
        area.extend_from_slice(b"GNU\0abc\0");
        area.extend_from_slice(&version_note(7));
        assert_eq!(scan(&area, 0, 4).ok(), Some(Some(7)));
    }

    #[test]
    fn trailing_padding_is_not_a_note() {
        let mut area = version_note(3).to_vec();
        area.extend_from_slice(&[0; 4]);
        assert_eq!(scan(&area, 0, 4).ok(), Some(Some(3)));
        assert_eq!(scan(&[0; 8], 0, 4).ok(), Some(None));
    }

    #[test]
    fn oversized_note_is_malformed() {
        let mut area = version_note(1).to_vec();
        if let Some(desc_size) = area.get_mut(4..8) {
            desc_size.copy_from_slice(&u32::MAX.to_le_bytes());
        }
        assert!(matches!(scan(&area, 0x100, 4), Err(ImageError::MalformedNote { offset: 0x100 })));
    }

    #[test]
    fn wrong_descriptor_size_is_refused() {
        let mut area = version_note(1).to_vec();
        if let Some(desc_size) = area.get_mut(4..8) {
            desc_size.copy_from_slice(&0u32.to_le_bytes());
        }
        assert!(matches!(scan(&area, 0, 4), Err(ImageError::BadAbiNote { desc_size: 0 })));
    }
}
