//! Guest image loading through the public API: each malformed ELF refused with its own error
//! (HOSTILE-GUESTS.md B.5, rows 35-41), valid raw guests accepted, and no input panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "this binary uses only the ELF writer")]
mod common;

use common::elf::*;
use glint::{Error, GuestImage, ImageError};
use glint_abi::layout::{IMAGE_BASE, MAX_MEMORY, PAGE_SIZE};
use glint_abi::ABI_VERSION;

/// `ud2`
const UD2: &[u8] = &[0x0f, 0x0b];

fn refuse(bytes: &[u8]) -> ImageError {
    match GuestImage::from_bytes(bytes) {
        Ok(image) => panic!("loaded: {image:?}"),
        Err(Error::Image(error)) => {
            // Every refusal reads as one lowercase line without a trailing period.
            let text = error.to_string();
            assert!(!text.ends_with('.') && !text.contains('\n'), "{text}");
            assert!(text.starts_with(|c: char| !c.is_uppercase()), "{text}");
            error
        }
        Err(other) => panic!("not an image error: {other:?}"),
    }
}

fn refuse_elf(elf: &RawElf) -> ImageError {
    refuse(&elf.build())
}

/// A PIE linked at 0x1000 with code, a data page, and a dynamic section holding `relocations`.
fn pie(relocations: Vec<Rela>) -> RawElf {
    RawElf::pie(&[0x90; 0x20], 0x1000)
        .entry(0x1010)
        .segment(Segment::load(PF_R | PF_W, 0x2000, &[0; 0x40]).mem_size(0x200))
        .dynamic(Dynamic::new(0x3000, relocations))
}

#[test]
fn raw_exec_guest_loads() {
    let image = GuestImage::from_bytes(&RawElf::exec(UD2).build()).unwrap();
    assert_eq!(image.entry(), IMAGE_BASE);
    assert_eq!(image.abi_version(), ABI_VERSION);
    assert_eq!(image.end(), IMAGE_BASE + PAGE_SIZE);
    assert!(!image.is_position_independent());
}

#[test]
fn pie_is_relocated_to_the_image_base() {
    let elf = pie(vec![Rela::relative(0x2008, 0x1010)]);
    let image = GuestImage::from_bytes(&elf.build()).unwrap();
    assert!(image.is_position_independent());
    // e_entry 0x1010, lowest PT_LOAD at 0x1000.
    assert_eq!(image.entry(), IMAGE_BASE + 0x1010 - 0x1000);
    assert_eq!(image.end(), IMAGE_BASE + 0x3000);
}

#[test]
fn abi_note_in_a_section_is_found() {
    let mut elf = RawElf::exec(UD2);
    elf.note_in_section = true;
    let image = GuestImage::from_bytes(&elf.build()).unwrap();
    assert_eq!(image.abi_version(), ABI_VERSION);
}

#[test]
fn each_load_gets_its_own_id() {
    let bytes = RawElf::exec(UD2).build();
    let a = GuestImage::from_bytes(&bytes).unwrap();
    let b = GuestImage::from_bytes(&bytes).unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.clone().id(), a.id());
}

#[test]
fn from_file_loads_and_reports_io_errors() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("image-test-{}.elf", std::process::id()));
    std::fs::write(&path, RawElf::exec(UD2).build()).unwrap();
    let image = GuestImage::from_file(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(image.unwrap().entry(), IMAGE_BASE);

    let missing = dir.join("no-such-guest.elf");
    match GuestImage::from_file(&missing) {
        Err(Error::Image(ImageError::Io { path, source })) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(GuestImage::from_file(dir), Err(Error::Image(ImageError::Io { .. }))));
}

// Row 35: not a static x86-64 ELF64 executable.

#[test]
fn empty_input_is_refused() {
    assert!(matches!(refuse(&[]), ImageError::Empty));
}

#[test]
fn not_elf_is_refused() {
    let error = refuse(b"MZ\x90\x00 this is not an ELF file at all, but it is long enough....");
    assert!(matches!(error, ImageError::NotElf { .. }), "{error:?}");
    assert!(matches!(refuse(b"#!"), ImageError::NotElf { .. }));
}

#[test]
fn truncated_header_is_refused() {
    let bytes = RawElf::exec(UD2).build();
    for len in [1, 4, 20, 63] {
        let error = refuse(&bytes[..len]);
        assert!(matches!(error, ImageError::TruncatedHeader { len: l } if l == len), "{len}: {error:?}");
    }
}

#[test]
fn program_headers_past_end_are_refused() {
    let mut elf = RawElf::exec(UD2);
    elf.phoff = Some(0x10_0000);
    assert!(matches!(refuse_elf(&elf), ImageError::ProgramHeadersOutOfFile { offset: 0x10_0000, .. }));
    // The table starts inside the file but its entries run past the end.
    let mut elf = RawElf::exec(UD2);
    elf.phnum = Some(0xffff);
    assert!(matches!(refuse_elf(&elf), ImageError::ProgramHeadersOutOfFile { count: 0xffff, .. }));
    let mut elf = RawElf::exec(UD2);
    elf.phoff = Some(u64::MAX - 8);
    assert!(matches!(refuse_elf(&elf), ImageError::ProgramHeadersOutOfFile { .. }));
}

#[test]
fn wrong_program_header_size_is_refused() {
    let mut elf = RawElf::exec(UD2);
    elf.phentsize = Some(32);
    assert!(matches!(refuse_elf(&elf), ImageError::BadProgramHeaderSize { size: 32 }));
}

#[test]
fn wrong_machine_is_refused() {
    let mut elf = RawElf::exec(UD2);
    elf.machine = EM_AARCH64;
    assert!(matches!(refuse_elf(&elf), ImageError::WrongMachine { machine: EM_AARCH64 }));
}

#[test]
fn elf32_is_refused() {
    let mut elf = RawElf::exec(UD2);
    elf.class = ELFCLASS32;
    assert!(matches!(refuse_elf(&elf), ImageError::NotElf64 { class: ELFCLASS32 }));
}

#[test]
fn big_endian_is_refused() {
    let mut elf = RawElf::exec(UD2);
    elf.data_encoding = ELFDATA2MSB;
    assert!(matches!(refuse_elf(&elf), ImageError::NotLittleEndian { data: ELFDATA2MSB }));
}

#[test]
fn relocatable_object_and_core_are_refused() {
    for e_type in [ET_REL, ET_CORE, 0, 0xfe00] {
        let mut elf = RawElf::exec(UD2);
        elf.e_type = e_type;
        let error = refuse_elf(&elf);
        assert!(matches!(error, ImageError::UnsupportedType { e_type: t } if t == e_type), "{error:?}");
    }
}

#[test]
fn interpreter_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::new(PT_INTERP, PF_R, 0, b"/lib64/ld-linux-x86-64.so.2\0"));
    assert!(matches!(refuse_elf(&elf), ImageError::Interpreter { index: 1 }));
}

#[test]
fn no_load_segment_is_refused() {
    let elf = RawElf::new(ET_EXEC).entry(IMAGE_BASE);
    assert!(matches!(refuse_elf(&elf), ImageError::NoLoadSegment));
}

// Row 36: offsets past the end of the file.

#[test]
fn segment_past_end_of_file_is_refused() {
    let elf = RawElf::exec(UD2)
        .segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 16]).file_size(0x10_0000).mem_size(0x10_0000));
    let error = refuse_elf(&elf);
    assert!(matches!(error, ImageError::SegmentOutOfFile { index: 1, size: 0x10_0000, .. }), "{error:?}");
    let elf = RawElf::exec(UD2)
        .segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 16]).offset(0x1000).file_size(u64::MAX));
    assert!(matches!(refuse_elf(&elf), ImageError::SegmentOutOfFile { index: 1, .. }));
}

// Row 37: sizes and address arithmetic.

#[test]
fn file_size_above_memory_size_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 0x100]).mem_size(0x80));
    assert!(matches!(
        refuse_elf(&elf),
        ImageError::FileSizeExceedsMemSize { index: 1, file_size: 0x100, mem_size: 0x80 }
    ));
}

#[test]
fn segment_larger_than_max_memory_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[]).mem_size(MAX_MEMORY + 1));
    assert!(matches!(refuse_elf(&elf), ImageError::SegmentTooLarge { index: 1, .. }));
}

#[test]
fn span_larger_than_max_memory_is_refused() {
    // Two small segments, far apart.
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + MAX_MEMORY, &[1; 8]));
    assert!(matches!(refuse_elf(&elf), ImageError::ImageTooLarge { .. }));
}

#[test]
fn image_ending_beyond_guest_memory_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, MAX_MEMORY, &[1; 8]));
    assert!(matches!(refuse_elf(&elf), ImageError::BeyondGuestMemory { .. }));
}

#[test]
fn address_overflow_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, u64::MAX - 0xfff, &[1; 8]).mem_size(0x2000));
    assert!(matches!(refuse_elf(&elf), ImageError::AddressOverflow { index: 1, .. }));
    // vaddr + memsz fits, but the page holding the end does not.
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, u64::MAX - 0xff, &[1; 8]));
    assert!(matches!(refuse_elf(&elf), ImageError::AddressOverflow { index: 1, .. }));
}

// Row 38: overlap, order, congruence.

#[test]
fn overlapping_segments_are_refused() {
    let elf = RawElf::exec(&[0x90; 0x100]).segment(Segment::load(PF_R, IMAGE_BASE + 0x80, &[1; 8]));
    assert!(matches!(
        refuse_elf(&elf),
        ImageError::OverlappingSegments {
            first: 0,
            second: 1,
            addr
        } if addr == IMAGE_BASE + 0x80
    ));
}

#[test]
fn a_segment_whose_bss_runs_into_the_next_is_refused() {
    // The first segment's file bytes end well before the second segment, but its memory (bss)
    // runs into it: overlap is a question of memory size, not file size.
    let elf = RawElf::exec(&[0x90; 0x10])
        .segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[1; 8]).mem_size(0x2000))
        .segment(Segment::load(PF_R, IMAGE_BASE + 0x2800, &[2; 8]));
    assert!(matches!(
        refuse_elf(&elf),
        ImageError::OverlappingSegments { first: 1, second: 2, addr } if addr == IMAGE_BASE + 0x2800
    ));
    // The same layout with the bss ending right before the next segment loads.
    let ok = RawElf::exec(&[0x90; 0x10])
        .segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[1; 8]).mem_size(0x1800))
        .segment(Segment::load(PF_R, IMAGE_BASE + 0x2800, &[2; 8]));
    GuestImage::from_bytes(&ok.build()).unwrap();
}

#[test]
fn unsorted_segments_are_refused() {
    let elf = RawElf::new(ET_EXEC)
        .entry(IMAGE_BASE)
        .segment(Segment::load(PF_R, IMAGE_BASE + 0x2000, &[1; 8]))
        .segment(Segment::load(PF_R | PF_X, IMAGE_BASE, UD2));
    assert!(matches!(refuse_elf(&elf), ImageError::UnsortedSegments { index: 1, previous: 0, .. }));
}

#[test]
fn incongruent_offset_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 8]).offset(0x1234));
    assert!(matches!(refuse_elf(&elf), ImageError::Misaligned { index: 1, offset: 0x1234, .. }));
}

// Row 39: entry point.

#[test]
fn entry_outside_any_executable_segment_is_refused() {
    let data = Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[0; 16]);
    for entry in [IMAGE_BASE + 0x1000, IMAGE_BASE + 2, 0, u64::MAX] {
        let elf = RawElf::exec(UD2).segment(data.clone()).entry(entry);
        let error = refuse_elf(&elf);
        assert!(matches!(error, ImageError::EntryNotExecutable { entry: e } if e == entry), "{entry:#x}: {error:?}");
    }
}

#[test]
fn exec_below_image_base_is_refused() {
    let elf = RawElf::exec(UD2);
    let mut low = elf.clone().entry(0x1000);
    low.segments[0].vaddr = 0x1000;
    assert!(matches!(refuse_elf(&low), ImageError::BelowImageBase { vaddr: 0x1000, image_base: IMAGE_BASE }));
}

// Row 40: W^X, relocations, odd headers.

#[test]
fn writable_and_executable_segment_is_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W | PF_X, IMAGE_BASE + 0x1000, &[0; 8]));
    assert!(matches!(refuse_elf(&elf), ImageError::WritableAndExecutableSegment { index: 1 }));
}

#[test]
fn code_and_data_sharing_a_page_are_refused() {
    let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x10, &[0; 8]));
    assert!(matches!(
        refuse_elf(&elf),
        ImageError::WritableAndExecutable { page: IMAGE_BASE, writable: 1, executable: 0 }
    ));
}

#[test]
fn executable_stack_and_tls_are_refused() {
    let stack = RawElf::exec(UD2).segment(Segment::new(PT_GNU_STACK, PF_R | PF_W | PF_X, 0, &[]));
    assert!(matches!(refuse_elf(&stack), ImageError::ExecutableStack { index: 1 }));
    let tls = RawElf::exec(UD2).segment(Segment::new(PT_TLS, PF_R, IMAGE_BASE, &[]).mem_size(8));
    assert!(matches!(refuse_elf(&tls), ImageError::ThreadLocalStorage { index: 1 }));
}

#[test]
fn pie_with_unsupported_relocation_is_refused() {
    let elf = pie(vec![Rela::relative(0x2000, 0), Rela { offset: 0x2008, r_type: R_X86_64_64, addend: 0 }]);
    assert!(matches!(refuse_elf(&elf), ImageError::UnsupportedRelocation { index: 1, r_type: R_X86_64_64 }));
}

#[test]
fn pie_with_relocation_outside_segments_is_refused() {
    for offset in [0, 0x1ff8, 0x21fc, 0x10_0000, u64::MAX - 4] {
        let error = refuse_elf(&pie(vec![Rela::relative(offset, 0)]));
        assert!(
            matches!(error, ImageError::RelocationOutOfImage { index: 0, offset: o } if o == offset),
            "{offset:#x}: {error:?}"
        );
    }
}

#[test]
fn pie_needing_a_dynamic_linker_is_refused() {
    // DT_RELR (packed relocations) is newer than goblin's tag names; the message names it too.
    const DT_RELR: u64 = 36;
    for (tag, name) in [(DT_NEEDED, "DT_NEEDED"), (DT_REL, "DT_REL"), (DT_JMPREL, "DT_JMPREL"), (DT_RELR, "DT_RELR")] {
        let mut elf = pie(vec![]);
        elf.dynamic = elf.dynamic.map(|d| d.entry(tag, 0));
        let error = refuse_elf(&elf);
        assert!(matches!(error, ImageError::UnsupportedDynamicTag { tag: t } if t == tag), "{error:?}");
        assert!(error.to_string().contains(&format!("({name})")), "{error}");
    }
}

// Row 41: ABI version.

#[test]
fn missing_abi_note_is_refused() {
    let elf = RawElf::exec(UD2).abi_note(None);
    assert!(matches!(refuse_elf(&elf), ImageError::MissingAbiNote));
}

#[test]
fn wrong_abi_version_is_refused() {
    let elf = RawElf::exec(UD2).abi_note(Some(ABI_VERSION + 1));
    let error = refuse_elf(&elf);
    assert!(
        matches!(
            error,
            ImageError::AbiVersionMismatch { found, expected }
                if found == ABI_VERSION + 1 && expected == ABI_VERSION
        ),
        "{error:?}"
    );
}

// Robustness: nothing the loader is given may panic it.

/// A valid PIE exercising every part of the loader: code, data with bss, RELRO-free dynamic
/// section with relocations, note.
fn rich_image() -> Vec<u8> {
    let bytes = pie(vec![
        Rela::relative(0x2000, 0x1010),
        Rela::relative(0x2100, 8),
        Rela { offset: 0, r_type: R_X86_64_NONE, addend: 0 },
    ])
    .build();
    assert!(GuestImage::from_bytes(&bytes).is_ok());
    bytes
}

#[test]
fn every_truncation_is_refused_without_panic() {
    let bytes = rich_image();
    for len in 0..bytes.len() {
        // Every prefix misses something the loader needs (the last segment's bytes end the file),
        // and the refusal says which part lies past the end.
        let error = refuse(&bytes[..len]);
        assert!(
            matches!(
                error,
                ImageError::Empty
                    | ImageError::TruncatedHeader { .. }
                    | ImageError::NotElf { .. }
                    | ImageError::ProgramHeadersOutOfFile { .. }
                    | ImageError::SegmentOutOfFile { .. }
                    | ImageError::SectionHeadersOutOfFile { .. }
                    | ImageError::SectionOutOfFile { .. }
                    | ImageError::RelaTableOutOfImage { .. }
                    | ImageError::MissingAbiNote
            ),
            "{len}: {error:?}"
        );
    }
}

/// xorshift64*, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_never_panic() {
    let bytes = rich_image();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Headers, program headers, note and dynamic section sit in the first bytes; hit them most.
    let hot = bytes.len().min(0x200);
    for round in 0..6000 {
        let mut mutated = bytes.clone();
        let pos = if round % 4 == 0 { rng.below(mutated.len()) } else { rng.below(hot) };
        mutated[pos] = rng.next() as u8;
        let _ = GuestImage::from_bytes(&mutated);
    }
    // Whole 8-byte fields set to extreme values.
    let extremes = [0, 1, u64::MAX, 1 << 63, bytes.len() as u64, MAX_MEMORY, 0xfff];
    for round in 0..2000 {
        let mut mutated = bytes.clone();
        let pos = rng.below(hot / 4) * 4;
        let value = extremes[round % extremes.len()];
        let end = (pos + 8).min(mutated.len());
        mutated[pos..end].copy_from_slice(&value.to_le_bytes()[..end - pos]);
        let _ = GuestImage::from_bytes(&mutated);
    }
}
