//! Dynamic section and `Elf64_Rela` relocations, as far as a static PIE needs them.
//!
//! A static PIE needs only `R_X86_64_RELATIVE` (`*target = base + addend`). Anything that needs
//! symbol lookup, a PLT or another library (`DT_NEEDED`, `DT_JMPREL`) has no place in a sandbox;
//! `DT_REL` and `DT_RELR` are refused rather than ignored, because silently skipping them would
//! leave pointers unrelocated.

use goblin::elf::dynamic::{DT_JMPREL, DT_NEEDED, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ};
use goblin::elf::reloc::{R_X86_64_NONE, R_X86_64_RELATIVE};

use super::elf::{self, file_range, u32_at, u64_at};
use super::error::DT_RELR;
use super::{ImageError, LoadSegment};

/// Size of `Elf64_Dyn`.
const DYN_SIZE: usize = 16;
/// Size of `Elf64_Rela`.
const RELA_SIZE: usize = 24;
/// Bytes a `R_X86_64_RELATIVE` relocation writes.
const TARGET_SIZE: usize = 8;

/// Where the relocation table is, from the dynamic section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RelaTable {
    /// `DT_RELA`: link-time address of the table.
    pub vaddr: u64,
    /// `DT_RELASZ`: size of the table in bytes, a multiple of 24.
    pub size: u64,
}

/// Reads the dynamic section (the file bytes of the `PT_DYNAMIC` segment `dynamic`, already checked
/// to lie in the file) and returns the relocation table it names, if any.
pub(super) fn rela_table(dynamic: &[u8]) -> Result<Option<RelaTable>, ImageError> {
    let (mut rela, mut relasz, mut relaent) = (None, None, None);
    for entry in dynamic.chunks_exact(DYN_SIZE) {
        let (Some(tag), Some(value)) = (u64_at(entry, 0), u64_at(entry, 8)) else {
            break;
        };
        match tag {
            DT_NULL => break,
            DT_NEEDED | DT_REL | DT_JMPREL | DT_RELR => return Err(ImageError::UnsupportedDynamicTag { tag }),
            DT_RELA => rela = Some(value),
            DT_RELASZ => relasz = Some(value),
            DT_RELAENT => relaent = Some(value),
            _ => {}
        }
    }
    if let Some(size) = relaent {
        if size != RELA_SIZE as u64 {
            return Err(ImageError::BadRelaEntrySize { size });
        }
    }
    match (rela, relasz) {
        (None, None) | (None, Some(0)) => Ok(None),
        (Some(_), None) => Err(ImageError::IncompleteRela { present: "DT_RELA", missing: "DT_RELASZ" }),
        (None, Some(_)) => Err(ImageError::IncompleteRela { present: "DT_RELASZ", missing: "DT_RELA" }),
        (Some(vaddr), Some(size)) => {
            if size.checked_rem(RELA_SIZE as u64) != Some(0) {
                return Err(ImageError::BadRelaTableSize { size });
            }
            Ok(Some(RelaTable { vaddr, size }))
        }
    }
}

/// Applies the relocations of `table` to `loads` (sorted, non-overlapping, link-time addresses),
/// with `base` added to every addend.
///
/// The table is read from the file bytes of the `PT_LOAD` segment that holds it, never from
/// relocated data, so a relocation cannot rewrite the table while it is being applied.
pub(super) fn apply(bytes: &[u8], table: RelaTable, loads: &mut [LoadSegment], base: u64) -> Result<(), ImageError> {
    if table.size == 0 {
        return Ok(());
    }
    let outside = || ImageError::RelaTableOutOfImage { vaddr: table.vaddr, size: table.size };
    let table_end = table.vaddr.checked_add(table.size).ok_or_else(outside)?;
    let holder = loads
        .iter()
        .find(|s| {
            let file_end = s.vaddr.checked_add(s.file_size);
            s.vaddr <= table.vaddr && file_end.is_some_and(|end| table_end <= end)
        })
        .ok_or_else(outside)?;
    let entries = table
        .vaddr
        .checked_sub(holder.vaddr)
        .and_then(|delta| holder.offset.checked_add(delta))
        .and_then(|offset| file_range(bytes, offset, table.size))
        .ok_or_else(outside)?;
    for (index, entry) in entries.chunks_exact(RELA_SIZE).enumerate() {
        // r_offset at 0, r_info at 8 (type in its low 32 bits), r_addend at 16.
        let (Some(target), Some(r_type), Some(addend)) = (u64_at(entry, 0), u32_at(entry, 8), u64_at(entry, 16)) else {
            break;
        };
        match r_type {
            R_X86_64_NONE => {}
            R_X86_64_RELATIVE => write_u64(loads, index, target, base.wrapping_add(addend))?,
            _ => return Err(ImageError::UnsupportedRelocation { index, r_type }),
        }
    }
    Ok(())
}

/// Writes `value` at link-time address `target`, which must lie with all 8 bytes inside one
/// segment's memory; a target in the zero-filled tail grows that segment's `data` up to it.
///
/// `value` wraps: `B + A` is defined modulo 2^64, and a wild value only hurts the guest.
fn write_u64(loads: &mut [LoadSegment], index: usize, target: u64, value: u64) -> Result<(), ImageError> {
    let outside = ImageError::RelocationOutOfImage { index, offset: target };
    // Sorted and non-overlapping, so the only candidate is the last segment starting at or
    // below the target: a binary search keeps a huge table linear overall.
    let candidate = loads.partition_point(|s| s.vaddr <= target).checked_sub(1);
    let Some(segment) = candidate.and_then(|i| loads.get_mut(i)) else {
        return Err(outside);
    };
    let target_end = target.checked_add(TARGET_SIZE as u64);
    if target_end.is_none() || target_end > segment.vaddr.checked_add(segment.mem_size) {
        return Err(outside);
    }
    // target - vaddr < mem_size <= MAX_MEMORY, checked at load, so both conversions hold.
    let start = target.checked_sub(segment.vaddr).and_then(|pos| usize::try_from(pos).ok());
    let Some(start) = start else {
        return Err(outside);
    };
    let Some(end) = start.checked_add(TARGET_SIZE) else {
        return Err(outside);
    };
    if segment.data.len() < end {
        segment.data.resize(end, 0);
    }
    let Some(slot) = segment.data.get_mut(start..end) else {
        return Err(outside);
    };
    slot.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// The dynamic section bytes of program header `index`, or an error if they are not in the file.
pub(super) fn dynamic_bytes(bytes: &[u8], index: usize, offset: u64, size: u64) -> Result<&[u8], ImageError> {
    file_range(bytes, offset, size).ok_or(ImageError::SegmentOutOfFile {
        index,
        offset,
        size,
        file_len: elf::file_len(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(vaddr: u64, file: &[u8], mem_size: u64) -> LoadSegment {
        LoadSegment {
            index: 0,
            vaddr,
            mem_size,
            offset: 0,
            file_size: file.len() as u64,
            flags: 0,
            data: file.to_vec(),
        }
    }

    #[test]
    fn write_fills_the_last_eight_bytes_of_a_segment() {
        let mut loads = [segment(0x1000, &[0xaa; 16], 16)];
        assert!(write_u64(&mut loads, 0, 0x1008, 0x1122_3344_5566_7788).is_ok());
        let [seg] = &loads;
        assert_eq!(seg.data.get(8..), Some(&0x1122_3344_5566_7788u64.to_le_bytes()[..]));
        assert_eq!(seg.data.get(..8), Some(&[0xaa; 8][..]));
    }

    #[test]
    fn write_straddling_the_segment_end_is_refused() {
        let mut loads = [segment(0x1000, &[0; 16], 16)];
        assert!(matches!(
            write_u64(&mut loads, 3, 0x1009, 1),
            Err(ImageError::RelocationOutOfImage { index: 3, offset: 0x1009 })
        ));
    }

    #[test]
    fn write_below_every_segment_or_in_a_gap_is_refused() {
        let mut loads = [segment(0x1000, &[0; 8], 8), segment(0x3000, &[0; 8], 8)];
        for target in [0, 0xff8, 0x1008, 0x2000, 0x3008, u64::MAX - 3] {
            assert!(
                matches!(write_u64(&mut loads, 0, target, 1), Err(ImageError::RelocationOutOfImage { .. })),
                "target {target:#x}"
            );
        }
    }

    #[test]
    fn write_into_bss_grows_the_data_with_zeros() {
        let mut loads = [segment(0x1000, &[0xaa; 4], 0x100)];
        assert!(write_u64(&mut loads, 0, 0x1010, u64::MAX).is_ok());
        let [seg] = &loads;
        assert_eq!(seg.data.len(), 0x18);
        assert_eq!(seg.data.get(4..0x10), Some(&[0; 12][..]));
        assert_eq!(seg.data.get(0x10..), Some(&[0xff; 8][..]));
    }

    fn dynamic(entries: &[(u64, u64)]) -> Vec<u8> {
        entries.iter().flat_map(|(tag, value)| tag.to_le_bytes().into_iter().chain(value.to_le_bytes())).collect()
    }

    #[test]
    fn rela_table_reads_rela_entries_until_null() {
        let bytes = dynamic(&[(DT_RELA, 0x2000), (DT_RELASZ, 48), (DT_RELAENT, 24), (DT_NULL, 0), (DT_NEEDED, 1)]);
        assert_eq!(rela_table(&bytes).ok(), Some(Some(RelaTable { vaddr: 0x2000, size: 48 })));
        assert_eq!(rela_table(&[]).ok(), Some(None));
    }

    #[test]
    fn rela_table_refuses_what_it_cannot_apply() {
        for tag in [DT_NEEDED, DT_REL, DT_JMPREL, DT_RELR] {
            assert!(matches!(
                rela_table(&dynamic(&[(tag, 0)])),
                Err(ImageError::UnsupportedDynamicTag { tag: t }) if t == tag
            ));
        }
        assert!(matches!(rela_table(&dynamic(&[(DT_RELA, 0x2000)])), Err(ImageError::IncompleteRela { .. })));
        assert!(matches!(
            rela_table(&dynamic(&[(DT_RELA, 0x2000), (DT_RELASZ, 25)])),
            Err(ImageError::BadRelaTableSize { size: 25 })
        ));
        assert!(matches!(
            rela_table(&dynamic(&[(DT_RELA, 0), (DT_RELASZ, 24), (DT_RELAENT, 16)])),
            Err(ImageError::BadRelaEntrySize { size: 16 })
        ));
    }

    #[test]
    fn table_outside_file_bytes_is_refused() {
        // The table lies in the segment's zero-filled tail, which has no file bytes.
        let mut loads = [segment(0x1000, &[0; 8], 0x100)];
        let table = RelaTable { vaddr: 0x1000, size: 24 };
        assert!(matches!(apply(&[0; 8], table, &mut loads, 0), Err(ImageError::RelaTableOutOfImage { .. })));
    }
}
