//! Per-page permissions of a loaded image, and the W^X check.

use glint_abi::layout::PAGE_SIZE;
use goblin::elf::program_header::{PF_W, PF_X};

use super::{ImageError, LoadSegment, PagePerm};

/// `value` rounded down to a page boundary.
pub(super) fn page_down(value: u64) -> u64 {
    value & !(PAGE_SIZE - 1)
}

/// `value` rounded up to a page boundary, or `None` past the top of the address space.
pub(super) fn page_up(value: u64) -> Option<u64> {
    Some(value.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

/// A page while permissions are merged, with the program headers that made it writable or
/// executable (for the error message).
struct Acc {
    page: u64,
    writable: Option<usize>,
    executable: Option<usize>,
}

/// The permission of every page `loads` (sorted, non-overlapping, link-time addresses) touch, in
/// address order: the union over the segments sharing a page, minus write on the pages of `relro`
/// (`[start, end)`, link-time; see below for its rounding). `place` moves a link-time page to its guest address.
///
/// A page that ends up writable and executable is refused. The result has at most one entry per
/// page of the image span, which the caller has bounded by `MAX_MEMORY`.
pub(super) fn compute(
    loads: &[LoadSegment],
    relro: Option<(u64, u64)>,
    place: impl Fn(u64) -> Option<u64>,
) -> Result<Vec<(u64, PagePerm)>, ImageError> {
    let mut pages: Vec<Acc> = Vec::new();
    for seg in loads {
        let overflow = || ImageError::AddressOverflow { index: seg.index, vaddr: seg.vaddr, mem_size: seg.mem_size };
        let end = seg.vaddr.checked_add(seg.mem_size).and_then(page_up).ok_or_else(overflow)?;
        let writable = (seg.flags & PF_W != 0).then_some(seg.index);
        let executable = (seg.flags & PF_X != 0).then_some(seg.index);
        let mut page = page_down(seg.vaddr);
        while page < end {
            match pages.last_mut() {
                // Sorted segments can only share the previous segment's last page.
                Some(last) if last.page == page => {
                    last.writable = last.writable.or(writable);
                    last.executable = last.executable.or(executable);
                }
                _ => pages.push(Acc { page, writable, executable }),
            }
            page = page.checked_add(PAGE_SIZE).ok_or_else(overflow)?;
        }
    }
    if let Some((start, end)) = relro {
        // As glibc's `_dl_protect_relro` does: from the page holding the start to the page
        // holding the end, exclusive. Linkers start RELRO at the start of the writable segment
        // and pad its end to a page, so the partial first page holds only RELRO data.
        let (start, end) = (page_down(start), page_down(end));
        for acc in &mut pages {
            if start <= acc.page && acc.page < end {
                acc.writable = None;
            }
        }
    }
    pages
        .into_iter()
        .map(|acc| {
            let page = place(acc.page)
                .ok_or(ImageError::BeyondGuestMemory { end: acc.page, max: glint_abi::layout::MAX_MEMORY })?;
            if let (Some(writable), Some(executable)) = (acc.writable, acc.executable) {
                return Err(ImageError::WritableAndExecutable { page, writable, executable });
            }
            Ok((page, PagePerm { write: acc.writable.is_some(), exec: acc.executable.is_some() }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::program_header::PF_R;

    fn seg(index: usize, vaddr: u64, mem_size: u64, flags: u32) -> LoadSegment {
        LoadSegment { index, vaddr, mem_size, offset: 0, file_size: 0, flags, data: Vec::new() }
    }

    const RO: PagePerm = PagePerm { write: false, exec: false };
    const RW: PagePerm = PagePerm { write: true, exec: false };
    const RX: PagePerm = PagePerm { write: false, exec: true };

    #[test]
    fn shared_pages_take_the_union() {
        // Read-only data ends inside the page where writable data starts.
        let loads =
            [seg(0, 0x1000, 0x1800, PF_R | PF_X), seg(1, 0x3000, 0x800, PF_R), seg(2, 0x3800, 0x1000, PF_R | PF_W)];
        let pages = compute(&loads, None, Some).ok();
        assert_eq!(pages, Some(vec![(0x1000, RX), (0x2000, RX), (0x3000, RW), (0x4000, RW)]));
    }

    #[test]
    fn code_and_data_on_one_page_is_refused() {
        let loads = [seg(0, 0x1000, 0x800, PF_R | PF_X), seg(3, 0x1800, 0x800, PF_R | PF_W)];
        assert!(matches!(
            compute(&loads, None, |p| p.checked_add(0x10_0000)),
            Err(ImageError::WritableAndExecutable { page: 0x10_1000, writable: 3, executable: 0 })
        ));
    }

    #[test]
    fn relro_covers_its_first_page_but_not_a_partial_last_one() {
        let loads = [seg(0, 0x1000, 0x3000, PF_R | PF_W)];
        let pages = compute(&loads, Some((0x1000, 0x2800)), Some).ok();
        assert_eq!(pages, Some(vec![(0x1000, RO), (0x2000, RW), (0x3000, RW)]));
        // Starting inside a page (after the segment start, as lld lays it out).
        let loads = [seg(0, 0x13f8, 0x2c08, PF_R | PF_W)];
        let pages = compute(&loads, Some((0x13f8, 0x3000)), Some).ok();
        assert_eq!(pages, Some(vec![(0x1000, RO), (0x2000, RO), (0x3000, RW)]));
    }

    #[test]
    fn pages_are_placed() {
        let loads = [seg(0, 0x40_0123, 0x10, PF_R)];
        let pages = compute(&loads, None, |p| p.checked_sub(0x20_0000)).ok();
        assert_eq!(pages, Some(vec![(0x20_0000, RO)]));
    }

    #[test]
    fn rounding_helpers() {
        assert_eq!(page_down(0x1fff), 0x1000);
        assert_eq!(page_up(0x1001), Some(0x2000));
        assert_eq!(page_up(0x2000), Some(0x2000));
        assert_eq!(page_up(u64::MAX), None);
    }
}
