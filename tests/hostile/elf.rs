//! B.5 Malformed guest ELF: rows 35-41 (tests/image.rs has one test per case; here one per row).

use crate::common::elf::*;
use crate::common::hostile::*;
use glint::{Error, FaultKind, GuestImage, ImageError, LayoutError};
use glint_abi::layout::{IMAGE_BASE, MAX_MEMORY};
use glint_abi::ABI_VERSION;

const UD2: &[u8] = &[0x0f, 0x0b];

fn refused(elf: &RawElf) -> ImageError {
    refused_bytes(&elf.build())
}

fn refused_bytes(bytes: &[u8]) -> ImageError {
    match GuestImage::from_bytes(bytes) {
        Err(Error::Image(e)) => e,
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn row_35_not_a_static_x86_64_elf64_is_refused() {
    require_kvm!();
    beside_bystander(|| {
        assert!(matches!(refused_bytes(&[]), ImageError::Empty));
        assert!(matches!(
            refused_bytes(b"MZ\x90\x00 not an ELF at all, but long enough for a header."),
            ImageError::NotElf { .. }
        ));
        let good = RawElf::exec(UD2).build();
        assert!(matches!(refused_bytes(&good[..40]), ImageError::TruncatedHeader { len: 40 }));
        let mut elf = RawElf::exec(UD2);
        elf.class = ELFCLASS32;
        assert!(matches!(refused(&elf), ImageError::NotElf64 { class: ELFCLASS32 }));
        let mut elf = RawElf::exec(UD2);
        elf.data_encoding = ELFDATA2MSB;
        assert!(matches!(refused(&elf), ImageError::NotLittleEndian { .. }));
        let mut elf = RawElf::exec(UD2);
        elf.machine = EM_AARCH64;
        assert!(matches!(refused(&elf), ImageError::WrongMachine { machine: EM_AARCH64 }));
        let mut elf = RawElf::exec(UD2);
        elf.e_type = ET_REL;
        assert!(matches!(refused(&elf), ImageError::UnsupportedType { e_type: ET_REL }));
        let elf = RawElf::exec(UD2).segment(Segment::new(PT_INTERP, PF_R, 0, b"/lib64/ld-linux-x86-64.so.2\0"));
        assert!(matches!(refused(&elf), ImageError::Interpreter { .. }));
    });
}

#[test]
fn row_36_headers_and_segments_past_the_end_of_the_file_are_refused() {
    require_kvm!();
    beside_bystander(|| {
        for (phoff, phnum) in [(Some(0x10_0000), None), (None, Some(0xffff)), (Some(u64::MAX - 8), None)] {
            let mut elf = RawElf::exec(UD2);
            elf.phoff = phoff;
            elf.phnum = phnum;
            assert!(matches!(refused(&elf), ImageError::ProgramHeadersOutOfFile { .. }), "{phoff:?} {phnum:?}");
        }
        let elf = RawElf::exec(UD2)
            .segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 16]).offset(0x1000).file_size(u64::MAX));
        assert!(matches!(refused(&elf), ImageError::SegmentOutOfFile { index: 1, .. }));
    });
}

#[test]
fn row_37_sizes_are_checked_before_anything_is_allocated() {
    require_kvm!();
    beside_bystander(|| {
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 0x100]).mem_size(0x80));
        assert!(matches!(refused(&elf), ImageError::FileSizeExceedsMemSize { index: 1, .. }));
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[]).mem_size(u64::MAX));
        assert!(matches!(refused(&elf), ImageError::SegmentTooLarge { .. } | ImageError::AddressOverflow { .. }));
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, u64::MAX - 0xfff, &[1; 8]).mem_size(0x2000));
        assert!(matches!(refused(&elf), ImageError::AddressOverflow { index: 1, .. }));
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + MAX_MEMORY, &[1; 8]));
        assert!(matches!(refused(&elf), ImageError::ImageTooLarge { .. }));
        // A large bss within the limit loads (its zeros are never allocated by the loader), but
        // a sandbox too small for it is refused before any VM exists.
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[]).mem_size(200 << 20));
        let image = GuestImage::from_bytes(&elf.build()).unwrap();
        let r = builder().build(&image);
        assert!(matches!(&r, Err(Error::Layout(LayoutError::DoesNotFit { .. }))), "{r:?}");
    });
}

#[test]
fn row_38_overlapping_unsorted_or_incongruent_segments_are_refused() {
    require_kvm!();
    beside_bystander(|| {
        let elf = RawElf::exec(&[0x90; 0x100]).segment(Segment::load(PF_R, IMAGE_BASE + 0x80, &[1; 8]));
        assert!(matches!(refused(&elf), ImageError::OverlappingSegments { .. }));
        let elf = RawElf::new(ET_EXEC)
            .entry(IMAGE_BASE)
            .segment(Segment::load(PF_R, IMAGE_BASE + 0x2000, &[1; 8]))
            .segment(Segment::load(PF_R | PF_X, IMAGE_BASE, UD2));
        assert!(matches!(refused(&elf), ImageError::UnsortedSegments { .. }));
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R, IMAGE_BASE + 0x1000, &[1; 8]).offset(0x1234));
        assert!(matches!(refused(&elf), ImageError::Misaligned { .. }));
    });
}

#[test]
fn row_39_entry_points_outside_executable_code_are_refused() {
    require_kvm!();
    beside_bystander(|| {
        let data = Segment::load(PF_R | PF_W, IMAGE_BASE + 0x1000, &[0; 16]);
        for entry in [IMAGE_BASE + 0x1000, IMAGE_BASE + 2, IMAGE_BASE - 0x1000, 0, u64::MAX] {
            let elf = RawElf::exec(UD2).segment(data.clone()).entry(entry);
            assert!(matches!(refused(&elf), ImageError::EntryNotExecutable { entry: e } if e == entry), "{entry:#x}");
        }
        let mut low = RawElf::exec(UD2).entry(0x1000);
        low.segments[0].vaddr = 0x1000;
        assert!(matches!(refused(&low), ImageError::BelowImageBase { vaddr: 0x1000, .. }));
    });
    // An entry point that is executable but faults at once is a guest fault at initialisation.
    let err = beside_bystander(|| {
        let image = GuestImage::from_bytes(&RawElf::exec(UD2).build()).unwrap();
        builder().build(&image).unwrap().init().unwrap_err()
    });
    assert_fault_at(err, FaultKind::InvalidOpcode, IMAGE_BASE);
}

#[test]
fn row_40_writable_code_odd_headers_and_bad_relocations_are_refused() {
    require_kvm!();
    beside_bystander(|| {
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W | PF_X, IMAGE_BASE + 0x1000, &[0; 8]));
        assert!(matches!(refused(&elf), ImageError::WritableAndExecutableSegment { index: 1 }));
        let elf = RawElf::exec(UD2).segment(Segment::load(PF_R | PF_W, IMAGE_BASE + 0x10, &[0; 8]));
        assert!(matches!(refused(&elf), ImageError::WritableAndExecutable { .. }));
        let elf = RawElf::exec(UD2).segment(Segment::new(PT_GNU_STACK, PF_R | PF_W | PF_X, 0, &[]));
        assert!(matches!(refused(&elf), ImageError::ExecutableStack { .. }));
        let elf = RawElf::exec(UD2).segment(Segment::new(PT_TLS, PF_R, IMAGE_BASE, &[]).mem_size(8));
        assert!(matches!(refused(&elf), ImageError::ThreadLocalStorage { .. }));
        let pie = |relocations| {
            RawElf::pie(&[0x90; 0x20], 0x1000)
                .entry(0x1010)
                .segment(Segment::load(PF_R | PF_W, 0x2000, &[0; 0x40]).mem_size(0x200))
                .dynamic(Dynamic::new(0x3000, relocations))
        };
        let elf = pie(vec![Rela { offset: 0x2008, r_type: R_X86_64_64, addend: 0 }]);
        assert!(matches!(refused(&elf), ImageError::UnsupportedRelocation { r_type: R_X86_64_64, .. }));
        for offset in [0, 0x1ff8, 0x10_0000, u64::MAX - 4] {
            let r = refused(&pie(vec![Rela::relative(offset, 0)]));
            assert!(matches!(r, ImageError::RelocationOutOfImage { offset: o, .. } if o == offset), "{offset:#x}");
        }
    });
}

#[test]
fn row_41_an_incompatible_abi_version_is_refused() {
    require_kvm!();
    beside_bystander(|| {
        assert!(matches!(refused(&RawElf::exec(UD2).abi_note(None)), ImageError::MissingAbiNote));
        for version in [0, ABI_VERSION + 1, u32::MAX] {
            let r = refused(&RawElf::exec(UD2).abi_note(Some(version)));
            assert!(
                matches!(r, ImageError::AbiVersionMismatch { found, expected } if found == version && expected == ABI_VERSION),
                "{version}: {r:?}"
            );
        }
    });
}
