#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "tests"
)]

use super::test_elf::{Dynamic, RawElf, Rela, Segment as Seg, PF_R, PF_W, PT_GNU_RELRO, R_X86_64_NONE};
use super::*;

fn load_ok(elf: &RawElf) -> GuestImage {
    match GuestImage::from_bytes(&elf.build()) {
        Ok(image) => image,
        Err(error) => panic!("refused: {error}"),
    }
}

fn load_err(elf: &RawElf) -> ImageError {
    match GuestImage::from_bytes(&elf.build()) {
        Ok(image) => panic!("loaded: {image:?}"),
        Err(crate::Error::Image(error)) => error,
        Err(other) => panic!("not an image error: {other:?}"),
    }
}

const RX: PagePerm = PagePerm { write: false, exec: true };
const RW: PagePerm = PagePerm { write: true, exec: false };
const RO: PagePerm = PagePerm { write: false, exec: false };

#[test]
fn image_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
    assert_send_sync::<GuestImage>();
}

#[test]
fn exec_image_has_its_code_and_one_page() {
    let image = load_ok(&RawElf::exec(&[0x0f, 0x0b]));
    assert_eq!(image.segments(), &[Segment { addr: IMAGE_BASE, data: vec![0x0f, 0x0b], mem_size: 2 }]);
    assert_eq!(image.pages(), &[(IMAGE_BASE, RX)]);
    assert_eq!(image.end(), IMAGE_BASE + PAGE_SIZE);
}

/// A PIE linked at 0x1000: code page, data page with 16 file bytes and a bss tail, dynamic.
fn pie_with(relocations: Vec<Rela>) -> RawElf {
    RawElf::pie(&[0x90; 0x10], 0x1000)
        .segment(Seg::load(PF_R | PF_W, 0x2000, &[0x55; 16]).mem_size(0x100))
        .dynamic(Dynamic::new(0x3000, relocations))
}

#[test]
fn pie_is_moved_and_relocated() {
    let image = load_ok(&pie_with(vec![
        Rela::relative(0x2008, 0x1234),
        Rela { offset: 0x2000, r_type: R_X86_64_NONE, addend: 7 },
        // In the bss part: the data grows with zeros up to it.
        Rela::relative(0x2080, -0x1000),
    ]));
    let base = IMAGE_BASE - 0x1000;
    assert!(image.is_position_independent());
    assert_eq!(image.entry(), IMAGE_BASE);
    let segments = image.segments();
    let addrs: Vec<u64> = segments.iter().map(|s| s.addr).collect();
    assert_eq!(addrs, [IMAGE_BASE, IMAGE_BASE + 0x1000, IMAGE_BASE + 0x2000]);
    let data = &segments[1].data;
    assert_eq!(data.len(), 0x88);
    assert_eq!(data[..8], [0x55; 8]);
    assert_eq!(data[8..16], (base + 0x1234).to_le_bytes());
    assert!(data[16..0x80].iter().all(|&b| b == 0));
    assert_eq!(data[0x80..], (base - 0x1000).to_le_bytes());
    assert_eq!(image.pages(), &[(IMAGE_BASE, RX), (IMAGE_BASE + 0x1000, RW), (IMAGE_BASE + 0x2000, RO)]);
    assert_eq!(image.end(), IMAGE_BASE + 0x3000);
}

#[test]
fn relocation_in_the_last_bytes_of_memory_is_applied() {
    let image = load_ok(&pie_with(vec![Rela::relative(0x20f8, 0)]));
    assert_eq!(image.segments()[1].data.len(), 0x100);
}

#[test]
fn relocation_straddling_the_segment_end_is_refused() {
    let error = load_err(&pie_with(vec![Rela::relative(0x2000, 0), Rela::relative(0x20f9, 0)]));
    assert!(matches!(error, ImageError::RelocationOutOfImage { index: 1, offset: 0x20f9 }), "{error:?}");
}

#[test]
fn relocation_in_a_gap_or_wrapping_is_refused() {
    for offset in [0xff8, 0x1010, 0x2100, u64::MAX - 3] {
        let error = load_err(&pie_with(vec![Rela::relative(offset, 0)]));
        assert!(matches!(error, ImageError::RelocationOutOfImage { .. }), "{offset:#x}: {error:?}");
    }
}

#[test]
fn exec_relocations_use_base_zero() {
    let elf = RawElf::exec(&[0x90; 16])
        .segment(Seg::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[0; 8]))
        .dynamic(Dynamic::new(IMAGE_BASE + 0x2000, vec![Rela::relative(IMAGE_BASE + 0x1000, 0x4242)]));
    let image = load_ok(&elf);
    assert!(!image.is_position_independent());
    assert_eq!(image.segments()[1].data, 0x4242u64.to_le_bytes());
}

#[test]
fn shared_page_of_code_and_data_is_refused() {
    let elf = RawElf::exec(&[0x90; 0x800]).segment(Seg::load(PF_R | PF_W, IMAGE_BASE + 0x800, &[0; 0x800]));
    let error = load_err(&elf);
    assert!(
        matches!(error, ImageError::WritableAndExecutable { page: IMAGE_BASE, writable: 1, executable: 0 }),
        "{error:?}"
    );
}

#[test]
fn shared_page_of_rodata_and_data_is_writable() {
    let elf = RawElf::exec(&[0x90; 0x10])
        .segment(Seg::load(PF_R, IMAGE_BASE + 0x1000, &[1; 0x800]))
        .segment(Seg::load(PF_R | PF_W, IMAGE_BASE + 0x1800, &[2; 0x10]).mem_size(0x1000));
    let image = load_ok(&elf);
    assert_eq!(image.pages(), &[(IMAGE_BASE, RX), (IMAGE_BASE + 0x1000, RW), (IMAGE_BASE + 0x2000, RW)]);
}

#[test]
fn relro_pages_become_read_only_after_relocation() {
    let mut elf = RawElf::pie(&[0x90; 0x10], 0)
        .segment(Seg::load(PF_R | PF_W, 0x1000, &[0; 0x1008]).mem_size(0x3000))
        .dynamic(Dynamic::new(0x5000, vec![Rela::relative(0x1000, 0x10)]));
    // RELRO covers the first data page and half of the second.
    let relro = Seg::new(PT_GNU_RELRO, PF_R, 0x1000, &[]).mem_size(0x1800);
    elf.segments.push(relro);
    let image = load_ok(&elf);
    assert_eq!(image.segments()[1].data[..8], (IMAGE_BASE + 0x10).to_le_bytes());
    assert_eq!(
        image.pages(),
        &[
            (IMAGE_BASE, RX),
            (IMAGE_BASE + 0x1000, RO),
            (IMAGE_BASE + 0x2000, RW),
            (IMAGE_BASE + 0x3000, RW),
            (IMAGE_BASE + 0x5000, RO),
        ]
    );
}

#[test]
fn second_relro_is_refused() {
    let mut elf = RawElf::exec(&[0x90]);
    let relro = Seg::new(PT_GNU_RELRO, PF_R, IMAGE_BASE, &[]);
    elf.segments.push(relro.clone());
    elf.segments.push(relro);
    assert!(matches!(load_err(&elf), ImageError::DuplicateSegment { kind: "PT_GNU_RELRO", first: 1, second: 2 }));
}

#[test]
fn empty_load_segments_are_ignored() {
    let elf = RawElf::exec(&[0x90]).segment(Seg::load(PF_R, 0, &[]));
    let image = load_ok(&elf);
    assert_eq!(image.segments().len(), 1);
}

#[test]
fn ids_are_unique_and_shared_by_clones() {
    let a = load_ok(&RawElf::exec(&[0x90]));
    let b = load_ok(&RawElf::exec(&[0x90]));
    assert_ne!(a.id(), b.id());
    assert_eq!(a.clone().id(), a.id());
}

#[test]
fn debug_output_leaves_out_segment_bytes() {
    let image = load_ok(&RawElf::exec(&[0xcc; 4096]));
    let text = format!("{image:?}");
    assert!(text.contains("data_len: 0x1000"), "{text}");
    assert!(text.len() < 1000, "{text}");
}

/// What every image the loader accepts must satisfy, whatever bytes it came from: no page both
/// writable and executable, segments sorted, disjoint and inside guest memory above the image
/// base, their bytes within their memory size, pages inside the image span, and the entry on an
/// executable page.
fn assert_invariants(image: &GuestImage) {
    let mut last_end = IMAGE_BASE;
    for s in image.segments() {
        assert!(s.addr >= last_end, "segments sorted and disjoint: {image:?}");
        assert!(s.data.len() as u64 <= s.mem_size, "{s:?}");
        last_end = s.addr + s.mem_size;
        assert!(last_end <= image.end() && image.end() <= MAX_MEMORY, "{s:?} inside the image span");
    }
    let mut last_page = None;
    for &(page, perm) in image.pages() {
        assert!(!(perm.write && perm.exec), "page {page:#x} is W+X");
        assert!(page % PAGE_SIZE == 0 && page >= IMAGE_BASE && page < image.end(), "page {page:#x}");
        assert!(last_page.is_none_or(|p| page > p), "pages ascending and unique");
        last_page = Some(page);
    }
    let entry_page = image.entry() & !(PAGE_SIZE - 1);
    assert!(
        image.pages().iter().any(|&(p, perm)| p == entry_page && perm.exec),
        "entry {:#x} on an executable page",
        image.entry()
    );
}

#[test]
fn images_accepted_after_random_mutation_keep_the_loaders_invariants() {
    let bytes = pie_with(vec![Rela::relative(0x2008, 0x1010), Rela { offset: 0, r_type: R_X86_64_NONE, addend: 0 }])
        .entry(0x1008)
        .build();
    assert_invariants(&GuestImage::from_bytes(&bytes).unwrap());
    // xorshift64*, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let hot = bytes.len().min(0x200) as u64;
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..8000u64 {
        let mut mutated = bytes.clone();
        let at = if round % 4 == 0 { next() % mutated.len() as u64 } else { next() % hot } as usize;
        mutated[at] = next() as u8;
        if round % 3 == 0 {
            let at2 = (next() % hot) as usize;
            mutated[at2] ^= 1 << (next() % 8);
        }
        match GuestImage::from_bytes(&mutated) {
            Ok(image) => {
                assert_invariants(&image);
                accepted += 1;
            }
            Err(crate::Error::Image(_)) => refused += 1,
            Err(other) => panic!("round {round}: not an image error: {other:?}"),
        }
    }
    // Both outcomes occur, or the test checks nothing.
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
}

#[test]
fn an_image_file_may_hold_more_than_memory_in_debug_info_but_not_more_than_four_times() {
    // A debug build: a small loaded part, then far more than MAX_MEMORY of other sections
    // (a sparse hole here, cheap on disk).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("debug.elf");
    std::fs::write(&path, RawElf::exec(&[0xf4]).build()).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(MAX_MEMORY + (64 << 20)).unwrap();
    let image = GuestImage::from_file(&path).unwrap();
    assert_eq!(image.segments().len(), 1);
    // Past four times MAX_MEMORY the file is refused before it is read.
    file.set_len(4 * MAX_MEMORY + 1).unwrap();
    match GuestImage::from_file(&path) {
        Err(crate::Error::Image(ImageError::FileTooLarge { limit, .. })) => assert_eq!(limit, 4 * MAX_MEMORY),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_program_headers_are_found_where_a_segment_loads_them() {
    // As a linker lays out a PIE: the first segment starts at file offset 0, so it loads the
    // ELF header and the program headers after it (a debugger's AT_PHDR points there).
    let seg = Seg::load(PF_R | super::test_elf::PF_X, IMAGE_BASE, &[0u8; 0x400]).offset(0);
    let elf = RawElf::new(super::test_elf::ET_EXEC).entry(IMAGE_BASE + 0x200).segment(seg);
    let bytes = elf.build();
    let phnum = u64::from(u16::from_le_bytes([bytes[56], bytes[57]]));
    let image = GuestImage::from_bytes(&bytes).unwrap();
    assert_eq!(image.program_headers(), Some((IMAGE_BASE + 64, phnum)));
    // A segment that starts past them does not load them.
    assert_eq!(load_ok(&RawElf::exec(&[0xf4])).program_headers(), None);
}

#[test]
fn an_image_remembers_its_file_name_bytes_and_digest() {
    let bytes = RawElf::exec(&[0x0f, 0x0b]).build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guest.elf");
    std::fs::write(&path, &bytes).unwrap();
    let image = GuestImage::from_file(&path).unwrap();
    // Without its directory: what a crash dump names as its program.
    assert_eq!(image.file_name(), Some("guest.elf"));
    assert_eq!(image.source(), &bytes[..]);
    use sha2::Digest as _;
    let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(image.sha256(), sha256);
    assert!(image.verification().is_none());

    let image = GuestImage::from_bytes(&bytes).unwrap();
    assert_eq!(image.file_name(), None);
    assert_eq!(image.sha256(), sha256);
    let policy = TrustPolicy::new().expect_digest(ImageDigest::of(&bytes));
    let image = GuestImage::from_bytes_trusted(&bytes, &policy, None).unwrap();
    assert_eq!(image.verification().map(Verification::digest), Some(ImageDigest::of(&bytes)));
}

#[test]
fn page_bytes_are_the_segments_bytes_and_zero_elsewhere() {
    let elf =
        RawElf::exec(&[0x0f, 0x0b]).segment(Seg::load(PF_R | PF_W, IMAGE_BASE + 0x2ff8, &[0xaa; 16]).mem_size(0x40));
    let image = load_ok(&elf);
    let page = |addr| image.page_bytes(addr);
    let mut code = vec![0u8; PAGE_SIZE as usize];
    code[..2].copy_from_slice(&[0x0f, 0x0b]);
    assert_eq!(page(IMAGE_BASE), code);
    // A page between the segments, and the data that straddles two pages.
    assert_eq!(page(IMAGE_BASE + 0x1000), vec![0u8; PAGE_SIZE as usize]);
    let mut low = vec![0u8; PAGE_SIZE as usize];
    low[0xff8..].fill(0xaa);
    assert_eq!(page(IMAGE_BASE + 0x2000), low);
    let mut high = vec![0u8; PAGE_SIZE as usize];
    high[..8].fill(0xaa);
    assert_eq!(page(IMAGE_BASE + 0x3000), high);
}

#[test]
fn a_file_is_read_up_to_its_limit_and_not_a_byte_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exact");
    std::fs::write(&path, [7u8; 100]).unwrap();
    assert_eq!(read_limited(&path, 100).unwrap(), vec![7u8; 100]);
    assert!(matches!(read_limited(&path, 99), Err(ImageError::FileTooLarge { limit: 99, .. })));
    // A special file reports no size: the limit holds while reading.
    let zero = Path::new("/dev/zero");
    assert!(matches!(read_limited(zero, 100), Err(ImageError::FileTooLarge { limit: 100, .. })));
    // A size over the limit is refused before any read (reading a directory would fail).
    let size = std::fs::metadata(dir.path()).unwrap().len();
    assert!(size > 0, "a directory holding a file has a size");
    let limit = size - 1;
    assert!(matches!(read_limited(dir.path(), limit), Err(ImageError::FileTooLarge { .. })));
}

#[test]
fn a_note_outside_the_file_is_refused_where_its_header_is_read() {
    // The entry is also wrong, which the loader finds only after reading every header.
    let elf =
        RawElf::exec(&[0xf4]).entry(0).segment(Seg::new(super::test_elf::PT_NOTE, PF_R, 0, &[]).file_size(1 << 40));
    assert!(matches!(load_err(&elf), ImageError::SegmentOutOfFile { index: 1, .. }), "{:?}", load_err(&elf));
}

#[test]
fn two_segments_at_one_address_overlap() {
    let elf = RawElf::exec(&[0x90; 0x10]).segment(Seg::load(PF_R, IMAGE_BASE, &[1; 8]));
    let error = load_err(&elf);
    assert!(matches!(error, ImageError::OverlappingSegments { first: 0, second: 1, addr: IMAGE_BASE }), "{error:?}");
}

#[test]
fn an_image_of_exactly_guest_memory_is_not_too_large() {
    // A span of exactly MAX_MEMORY starting at IMAGE_BASE fits the span limit but ends past
    // guest memory.
    let elf = RawElf::exec(&[0xf4]).segment(Seg::load(PF_R, IMAGE_BASE + MAX_MEMORY - PAGE_SIZE, &[1; 8]));
    let error = load_err(&elf);
    assert!(matches!(error, ImageError::BeyondGuestMemory { .. }), "{error:?}");
    // A segment of exactly MAX_MEMORY passes the segment limit; with the code page before it,
    // the image is what is too large.
    let elf = RawElf::exec(&[0xf4]).segment(Seg::load(PF_R | PF_W, IMAGE_BASE + PAGE_SIZE, &[]).mem_size(MAX_MEMORY));
    let error = load_err(&elf);
    assert!(matches!(error, ImageError::ImageTooLarge { span, .. } if span == MAX_MEMORY + PAGE_SIZE), "{error:?}");
}

#[test]
fn program_headers_ending_at_the_segments_file_end_are_found() {
    // The ELF header and two program headers (this segment and the ABI note): 64 + 2 * 56.
    let headers = 64 + 2 * 56;
    let build = |file_size: u64| {
        let seg =
            Seg::load(PF_R | super::test_elf::PF_X, IMAGE_BASE, &vec![0u8; headers]).offset(0).file_size(file_size);
        RawElf::new(super::test_elf::ET_EXEC).entry(IMAGE_BASE + 0x10).segment(seg)
    };
    assert_eq!(load_ok(&build(headers as u64)).program_headers(), Some((IMAGE_BASE + 64, 2)));
    assert_eq!(load_ok(&build(headers as u64 - 1)).program_headers(), None);
}

#[test]
fn a_relro_segment_whose_end_wraps_is_refused() {
    let elf = RawElf::exec(&[0xf4]).segment(Seg::new(PT_GNU_RELRO, PF_R, u64::MAX - 0xff, &[]).mem_size(8));
    let error = load_err(&elf);
    assert!(matches!(error, ImageError::AddressOverflow { index: 1, .. }), "{error:?}");
}

#[test]
fn a_file_of_just_the_elf_header_has_no_segment() {
    let bytes = RawElf::new(super::test_elf::ET_EXEC).abi_note(None).build();
    assert_eq!(bytes.len(), 64);
    let error = load_err(&RawElf::new(super::test_elf::ET_EXEC).abi_note(None));
    assert!(matches!(error, ImageError::NoLoadSegment), "{error:?}");
}

#[test]
fn a_note_with_glints_name_but_another_type_is_not_the_abi_note() {
    let mut bytes = RawElf::exec(&[0xf4]).build();
    let name = bytes.windows(6).position(|w| w == b"glint\0").unwrap();
    // Elf64_Nhdr: n_namesz, n_descsz, n_type, then the name.
    bytes[name - 4..name].copy_from_slice(&0x1234u32.to_le_bytes());
    match GuestImage::from_bytes(&bytes) {
        Err(crate::Error::Image(ImageError::MissingAbiNote)) => {}
        other => panic!("{other:?}"),
    }
}
