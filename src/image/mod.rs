//! Guest images: ELF loading and validation, once per image.
//!
//! [`GuestImage`] turns the bytes of a static x86-64 ELF (ET_EXEC, or ET_DYN relocated to
//! [`IMAGE_BASE`]) into checked, relocated segments and page permissions that the memory builder
//! copies into every sandbox. Every header field is untrusted: each is checked against the file
//! length or [`MAX_MEMORY`] before it sizes anything, all arithmetic is checked, and every read
//! goes through `get`, so no input can make the host panic. Segments may not overlap in memory
//! and together span at most `MAX_MEMORY`, which bounds the bytes a load copies (file bytes plus
//! the zeros a relocation into bss needs) whatever the file claims.
//!
//! Loading parses only what it needs (file header, program headers, notes, the dynamic section
//! and its RELA table, and section headers only to look for a note), by hand, rather than
//! `goblin::elf::Elf::parse`, which also walks symbol and string tables.
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

mod elf;
mod error;
mod note;
mod pages;
mod reloc;
pub mod trust;

/// The integration tests' ELF builder, for unit tests here and in `mem`.
#[cfg(test)]
#[path = "../../tests/common/elf.rs"]
pub(crate) mod test_elf;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use glint_abi::layout::{IMAGE_BASE, MAX_MEMORY, PAGE_SIZE};
use glint_abi::ABI_VERSION;
use goblin::elf::header::ET_DYN;
use goblin::elf::program_header::{
    PF_W, PF_X, PT_DYNAMIC, PT_GNU_RELRO, PT_GNU_STACK, PT_INTERP, PT_LOAD, PT_NOTE, PT_TLS,
};

pub use error::ImageError;
pub use trust::{
    DigestParseError, ImageDigest, ImageSignature, KeyFormatError, SignatureFormatError, TrustError, TrustPolicy,
    TrustedKey, Verification,
};

use elf::{file_range, ProgramHeader};
use pages::{page_down, page_up};

/// Largest file [`GuestImage::from_file`] reads. Files may carry debug info far larger than what
/// is loaded, but a path to something endless (a FIFO, `/dev/zero`) must not exhaust host memory.
const MAX_FILE_SIZE: u64 = 4 * MAX_MEMORY;

/// Source of [`GuestImage::id`]; starts at 1 so 0 never names an image.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A checked, relocated, immutable guest image.
///
/// Loading validates the whole ELF once (see [`ImageError`] for every reason to refuse it), so one
/// image can back any number of sandboxes. Cloning is cheap and shares the loaded bytes; the clone
/// keeps the same [`id`](Self::id).
#[derive(Clone, Debug)]
pub struct GuestImage {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    entry: u64,
    abi_version: u32,
    end: u64,
    pie: bool,
    /// Guest address and count of the program headers, when a segment loads them.
    program_headers: Option<(u64, u64)>,
    /// The file name it was loaded from, if any (what a crash dump names as its program).
    file_name: Option<String>,
    segments: Vec<Segment>,
    pages: Vec<(u64, PagePerm)>,
    /// Set when the image was loaded through a [`TrustPolicy`].
    verification: Option<Verification>,
    /// The bytes the image was loaded from (what a snapshot file embeds), and their SHA-256,
    /// computed on first use.
    source: Box<[u8]>,
    sha256: std::sync::OnceLock<[u8; 32]>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestImage")
            .field("id", &self.id)
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("abi_version", &self.abi_version)
            .field("end", &format_args!("{:#x}", self.end))
            .field("pie", &self.pie)
            .field("segments", &self.segments)
            .field("verification", &self.verification)
            .finish_non_exhaustive()
    }
}

/// One loaded segment, at its guest address.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Guest address of the first byte (not necessarily page-aligned).
    pub addr: u64,
    /// The initialised bytes: file bytes with relocations applied. May be shorter than
    /// `mem_size`; the rest of the segment is zero.
    pub data: Vec<u8>,
    /// Bytes the segment occupies in guest memory; at least `data.len()`. (Its permissions are
    /// per page: [`GuestImage::pages`].)
    pub mem_size: u64,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes themselves would drown any log line.
        f.debug_struct("Segment")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("data_len", &format_args!("{:#x}", self.data.len()))
            .field("mem_size", &format_args!("{:#x}", self.mem_size))
            .finish()
    }
}

/// What a CPL3 guest may do with one image page, beyond reading it. Never both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PagePerm {
    /// The page is mapped writable.
    pub write: bool,
    /// The page is mapped executable.
    pub exec: bool,
}

impl GuestImage {
    /// Reads and loads the ELF file at `path`.
    ///
    /// # Errors
    ///
    /// [`ImageError::Io`] if the file cannot be read, [`ImageError::FileTooLarge`] past 1 GiB, and
    /// otherwise every refusal of [`from_bytes`](Self::from_bytes).
    pub fn from_file(path: impl AsRef<Path>) -> Result<GuestImage, crate::Error> {
        load_file(path.as_ref(), |bytes, file_name| Self::load_logged(bytes, file_name, None))
    }

    /// Loads an ELF image from memory. The bytes are copied; `bytes` can be dropped afterwards.
    ///
    /// # Errors
    ///
    /// An [`ImageError`] naming the first problem found: not a static x86-64 ELF64 executable or
    /// PIE, a segment outside the file or guest memory, overlapping segments, a writable and
    /// executable page, an entry point outside executable code, a relocation glint cannot apply
    /// or that points outside the image, or a missing or different ABI version note.
    pub fn from_bytes(bytes: &[u8]) -> Result<GuestImage, crate::Error> {
        let span = tracing::info_span!("image_load", bytes = bytes.len());
        let _entered = span.enter();
        Self::load_logged(bytes, None, None)
    }

    /// Reads the file at `path`, checks its bytes against `policy` (digest pin, signature), and
    /// only then loads the ELF. The result remembers what was verified
    /// ([`verification`](Self::verification)).
    ///
    /// # Errors
    ///
    /// [`TrustError`] (wrapped in [`Error::Trust`](crate::Error::Trust)) if the bytes fail the
    /// policy, otherwise the errors of [`from_file`](Self::from_file).
    pub fn from_file_trusted(
        path: impl AsRef<Path>,
        policy: &TrustPolicy,
        signature: Option<&ImageSignature>,
    ) -> Result<GuestImage, crate::Error> {
        load_file(path.as_ref(), |bytes, file_name| Self::load_trusted(bytes, file_name, policy, signature))
    }

    /// [`from_bytes`](Self::from_bytes) after checking `bytes` against `policy`.
    ///
    /// # Errors
    ///
    /// As [`from_file_trusted`](Self::from_file_trusted).
    pub fn from_bytes_trusted(
        bytes: &[u8],
        policy: &TrustPolicy,
        signature: Option<&ImageSignature>,
    ) -> Result<GuestImage, crate::Error> {
        let span = tracing::info_span!("image_load", bytes = bytes.len());
        let _entered = span.enter();
        Self::load_trusted(bytes, None, policy, signature)
    }

    fn load_trusted(
        bytes: &[u8],
        file_name: Option<String>,
        policy: &TrustPolicy,
        signature: Option<&ImageSignature>,
    ) -> Result<GuestImage, crate::Error> {
        // The bytes are checked before any ELF header is read: an untrusted file never reaches
        // the parser.
        let verification = policy.verify(bytes, signature).inspect_err(|error| {
            tracing::warn!(%error, "guest image refused by the trust policy");
        })?;
        tracing::info!(
            digest = %verification.digest(),
            signer = verification.signer().map(TrustedKey::name),
            "guest image verified"
        );
        Self::load_logged(bytes, file_name, Some(verification))
    }

    fn load_logged(
        bytes: &[u8],
        file_name: Option<String>,
        verification: Option<Verification>,
    ) -> Result<GuestImage, crate::Error> {
        match load(bytes) {
            Ok(mut inner) => {
                inner.verification = verification;
                tracing::trace!(
                    id = inner.id,
                    entry = format_args!("{:#x}", inner.entry),
                    end = format_args!("{:#x}", inner.end),
                    segments = inner.segments.len(),
                    pie = inner.pie,
                    "guest image loaded"
                );
                Ok(GuestImage { inner: Arc::new(Inner { file_name, ..inner }) })
            }
            Err(error) => {
                tracing::debug!(%error, "guest image refused");
                Err(error.into())
            }
        }
    }

    /// What the trust policy verified, for an image loaded with
    /// [`from_file_trusted`](Self::from_file_trusted) or [`from_bytes_trusted`](Self::from_bytes_trusted).
    pub fn verification(&self) -> Option<&Verification> {
        self.inner.verification.as_ref()
    }

    /// Guest address of the entry point, after relocation.
    pub fn entry(&self) -> u64 {
        self.inner.entry
    }

    /// The ABI version from the image's note (always [`glint_abi::ABI_VERSION`] once loaded).
    pub fn abi_version(&self) -> u32 {
        self.inner.abi_version
    }

    /// Identifies this load: unique among the images loaded by this process and shared by clones,
    /// so snapshots and handles can tell whether they belong to an image.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Page-aligned guest address just past the highest segment, after relocation; memory the
    /// sandbox adds (buffers, heap, stack) goes above it.
    pub fn end(&self) -> u64 {
        self.inner.end
    }

    /// Whether the image was a PIE (ET_DYN), relocated to [`IMAGE_BASE`].
    pub fn is_position_independent(&self) -> bool {
        self.inner.pie
    }

    /// The SHA-256 of the bytes the image was loaded from (the whole file), as snapshot files
    /// record it. Computed on first use.
    pub fn sha256(&self) -> [u8; 32] {
        use sha2::Digest as _;
        *self.inner.sha256.get_or_init(|| sha2::Sha256::digest(&self.inner.source).into())
    }

    /// The bytes the image was loaded from.
    pub(crate) fn source(&self) -> &[u8] {
        &self.inner.source
    }

    /// Guest address and number of the program headers, when a segment loads them (as a
    /// linker lays out a PIE): what a debugger's AT_PHDR/AT_PHNUM point at.
    pub(crate) fn program_headers(&self) -> Option<(u64, u64)> {
        self.inner.program_headers
    }

    /// The name of the file the image was loaded from ([`from_file`](Self::from_file)), without
    /// its directory.
    pub(crate) fn file_name(&self) -> Option<&str> {
        self.inner.file_name.as_deref()
    }

    /// The loaded segments, sorted by address and not overlapping (two may share a page).
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.inner.segments
    }

    /// Every page the segments touch, ascending, with its permission (W^X already enforced and
    /// RELRO pages already read-only). Pages between segments are absent.
    pub(crate) fn pages(&self) -> &[(u64, PagePerm)] {
        &self.inner.pages
    }

    /// The 4 KiB the loader puts at the page-aligned guest address `addr`: the bytes of every
    /// segment that falls in it, zero elsewhere (what a fresh sandbox holds there before init).
    pub(crate) fn page_bytes(&self, addr: u64) -> Vec<u8> {
        let end = addr.saturating_add(PAGE_SIZE);
        let mut page = vec![0u8; usize::try_from(PAGE_SIZE).unwrap_or(0)];
        for seg in &self.inner.segments {
            let seg_end = seg.addr.saturating_add(seg.data.len() as u64);
            let (lo, hi) = (seg.addr.max(addr), seg_end.min(end));
            let (Ok(from), Ok(to), Ok(n)) = (
                usize::try_from(lo.saturating_sub(seg.addr)),
                usize::try_from(lo.saturating_sub(addr)),
                usize::try_from(hi.saturating_sub(lo)),
            ) else {
                continue;
            };
            if let (Some(dst), Some(src)) =
                (page.get_mut(to..to.saturating_add(n)), seg.data.get(from..from.saturating_add(n)))
            {
                dst.copy_from_slice(src);
            }
        }
        page
    }
}

/// Reads at most `limit` bytes ([`MAX_FILE_SIZE`] for a guest image), refusing longer files.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let io = |source| ImageError::Io { path: path.to_path_buf(), source: Arc::new(source) };
    let too_large = || ImageError::FileTooLarge { path: path.to_path_buf(), limit };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > limit {
        return Err(too_large());
    }
    // `len` is only a hint (special files report 0); `take` enforces the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if elf::file_len(&bytes) > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A `PT_LOAD` segment while the image is built, at its link-time address.
#[derive(Clone, Debug)]
struct LoadSegment {
    /// Index of the program header.
    index: usize,
    vaddr: u64,
    mem_size: u64,
    offset: u64,
    file_size: u64,
    flags: u32,
    /// File bytes, then relocated; empty until the checks are done.
    data: Vec<u8>,
}

/// The last component of `path`, what a crash dump names as its program.
fn file_name_of(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Reads the file at `path` and hands its bytes and name to `load`, all inside one
/// `image_load` span, so the plain and the trusted load log alike.
fn load_file(
    path: &Path,
    load: impl FnOnce(&[u8], Option<String>) -> Result<GuestImage, crate::Error>,
) -> Result<GuestImage, crate::Error> {
    let span = tracing::info_span!(
        "image_load",
        path = %path.display(),
        bytes = tracing::field::Empty
    );
    let _entered = span.enter();
    let bytes = read_limited(path, MAX_FILE_SIZE).inspect_err(|error| {
        tracing::debug!(%error, "guest image unreadable");
    })?;
    span.record("bytes", bytes.len());
    load(&bytes, file_name_of(path))
}

fn load(bytes: &[u8]) -> Result<Inner, ImageError> {
    let header = elf::Header::parse(bytes)?;
    let phdrs = elf::program_headers(bytes, &header)?;

    // Every program header on its own.
    let mut loads = Vec::new();
    let mut dynamic: Option<(usize, ProgramHeader)> = None;
    let mut relro: Option<(usize, ProgramHeader)> = None;
    for (index, ph) in phdrs.iter().copied().enumerate() {
        match ph.p_type {
            PT_INTERP => return Err(ImageError::Interpreter { index }),
            PT_TLS => return Err(ImageError::ThreadLocalStorage { index }),
            PT_GNU_STACK if ph.flags & PF_X != 0 => return Err(ImageError::ExecutableStack { index }),
            PT_LOAD => {
                check_load(bytes, index, &ph)?;
                // An empty PT_LOAD maps nothing; keeping it would only distort the span.
                if ph.mem_size > 0 {
                    loads.push(LoadSegment {
                        index,
                        vaddr: ph.vaddr,
                        mem_size: ph.mem_size,
                        offset: ph.offset,
                        file_size: ph.file_size,
                        flags: ph.flags,
                        data: Vec::new(),
                    });
                }
            }
            PT_DYNAMIC => {
                check_in_file(bytes, index, &ph)?;
                set_once(&mut dynamic, "PT_DYNAMIC", index, ph)?;
            }
            PT_GNU_RELRO => {
                check_end(index, &ph)?;
                set_once(&mut relro, "PT_GNU_RELRO", index, ph)?;
            }
            PT_NOTE => check_in_file(bytes, index, &ph)?,
            _ => {}
        }
    }

    // The segments together: sorted, disjoint, small enough, placed inside guest memory.
    for pair in loads.windows(2) {
        let [a, b] = pair else { continue };
        if b.vaddr < a.vaddr {
            return Err(ImageError::UnsortedSegments {
                index: b.index,
                vaddr: b.vaddr,
                previous: a.index,
                previous_vaddr: a.vaddr,
            });
        }
        // check_load made vaddr + mem_size safe.
        if a.vaddr.checked_add(a.mem_size).is_none_or(|a_end| b.vaddr < a_end) {
            return Err(ImageError::OverlappingSegments { first: a.index, second: b.index, addr: b.vaddr });
        }
    }
    let (Some(first), Some(last)) = (loads.first(), loads.last()) else {
        return Err(ImageError::NoLoadSegment);
    };
    let min_page = page_down(first.vaddr);
    let end_page = last.vaddr.checked_add(last.mem_size).and_then(page_up).ok_or(ImageError::AddressOverflow {
        index: last.index,
        vaddr: last.vaddr,
        mem_size: last.mem_size,
    })?;
    let span = end_page.saturating_sub(min_page);
    if span > MAX_MEMORY {
        return Err(ImageError::ImageTooLarge { span, max: MAX_MEMORY });
    }
    let pie = header.e_type == ET_DYN;
    if !pie && min_page < IMAGE_BASE {
        return Err(ImageError::BelowImageBase { vaddr: min_page, image_base: IMAGE_BASE });
    }
    // Link-time address to guest address: a PIE's lowest page lands on IMAGE_BASE.
    let place = |vaddr: u64| -> Option<u64> {
        if pie {
            vaddr.checked_sub(min_page)?.checked_add(IMAGE_BASE)
        } else {
            Some(vaddr)
        }
    };
    let end = place(end_page)
        .filter(|&end| end <= MAX_MEMORY)
        .ok_or(ImageError::BeyondGuestMemory { end: end_page, max: MAX_MEMORY })?;

    let in_code = |s: &LoadSegment| {
        s.flags & PF_X != 0
            && s.vaddr <= header.entry
            && s.vaddr.checked_add(s.mem_size).is_some_and(|end| header.entry < end)
    };
    let entry = loads
        .iter()
        .any(in_code)
        .then(|| place(header.entry))
        .flatten()
        .ok_or(ImageError::EntryNotExecutable { entry: header.entry })?;

    let abi_version = note::abi_version(bytes, &header, &phdrs)?;
    if abi_version != ABI_VERSION {
        return Err(ImageError::AbiVersionMismatch { found: abi_version, expected: ABI_VERSION });
    }

    // Everything is bounded now: copy the file bytes and relocate them.
    for seg in &mut loads {
        seg.data = file_range(bytes, seg.offset, seg.file_size)
            .ok_or(ImageError::SegmentOutOfFile {
                index: seg.index,
                offset: seg.offset,
                size: seg.file_size,
                file_len: elf::file_len(bytes),
            })?
            .to_vec();
    }
    if let Some((index, ph)) = dynamic {
        let dynamic = reloc::dynamic_bytes(bytes, index, ph.offset, ph.file_size)?;
        if let Some(table) = reloc::rela_table(dynamic)? {
            // B + A with B the load bias, modulo 2^64 as the psABI defines it; 0 for ET_EXEC.
            let base = if pie { IMAGE_BASE.wrapping_sub(min_page) } else { 0 };
            reloc::apply(bytes, table, &mut loads, base)?;
        }
    }

    // Where the program headers are in guest memory, if a segment's file bytes hold them.
    let phdrs_len = u64::from(header.phnum).checked_mul(u64::from(header.phentsize));
    let program_headers = loads
        .iter()
        .find_map(|s| {
            let end = header.phoff.checked_add(phdrs_len?)?;
            let into = header.phoff.checked_sub(s.offset)?;
            if end > s.offset.checked_add(s.file_size)? {
                return None;
            }
            place(s.vaddr.checked_add(into)?)
        })
        .map(|addr| (addr, u64::from(header.phnum)));

    let relro = relro.and_then(|(_, ph)| Some((ph.vaddr, ph.vaddr.checked_add(ph.mem_size)?)));
    let pages = pages::compute(&loads, relro, place)?;
    let segments = loads
        .into_iter()
        .map(|seg| {
            Ok(Segment {
                addr: place(seg.vaddr).ok_or(ImageError::BeyondGuestMemory { end: seg.vaddr, max: MAX_MEMORY })?,
                data: seg.data,
                mem_size: seg.mem_size,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;

    Ok(Inner {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        entry,
        abi_version,
        end,
        pie,
        program_headers,
        file_name: None,
        segments,
        pages,
        verification: None,
        source: bytes.into(),
        sha256: std::sync::OnceLock::new(),
    })
}

/// The checks one `PT_LOAD` header must pass on its own.
fn check_load(bytes: &[u8], index: usize, ph: &ProgramHeader) -> Result<(), ImageError> {
    check_in_file(bytes, index, ph)?;
    if ph.file_size > ph.mem_size {
        return Err(ImageError::FileSizeExceedsMemSize { index, file_size: ph.file_size, mem_size: ph.mem_size });
    }
    check_end(index, ph)?;
    if ph.mem_size > MAX_MEMORY {
        return Err(ImageError::SegmentTooLarge { index, mem_size: ph.mem_size, max: MAX_MEMORY });
    }
    // Required whatever p_align says: page-granular mapping and permissions depend on it.
    if ph.vaddr.checked_rem(PAGE_SIZE) != ph.offset.checked_rem(PAGE_SIZE) {
        return Err(ImageError::Misaligned { index, vaddr: ph.vaddr, offset: ph.offset });
    }
    if ph.flags & PF_W != 0 && ph.flags & PF_X != 0 {
        return Err(ImageError::WritableAndExecutableSegment { index });
    }
    Ok(())
}

/// `[p_offset, p_offset + p_filesz)` must lie inside the file.
fn check_in_file(bytes: &[u8], index: usize, ph: &ProgramHeader) -> Result<(), ImageError> {
    match file_range(bytes, ph.offset, ph.file_size) {
        Some(_) => Ok(()),
        None => Err(ImageError::SegmentOutOfFile {
            index,
            offset: ph.offset,
            size: ph.file_size,
            file_len: elf::file_len(bytes),
        }),
    }
}

/// `p_vaddr + p_memsz`, rounded up to a page, must not wrap.
fn check_end(index: usize, ph: &ProgramHeader) -> Result<(), ImageError> {
    match ph.vaddr.checked_add(ph.mem_size).and_then(page_up) {
        Some(_) => Ok(()),
        None => Err(ImageError::AddressOverflow { index, vaddr: ph.vaddr, mem_size: ph.mem_size }),
    }
}

/// Records the single program header of a kind, refusing a second one.
fn set_once(
    slot: &mut Option<(usize, ProgramHeader)>,
    kind: &'static str,
    index: usize,
    ph: ProgramHeader,
) -> Result<(), ImageError> {
    if let Some((first, _)) = *slot {
        return Err(ImageError::DuplicateSegment { kind, first, second: index });
    }
    *slot = Some((index, ph));
    Ok(())
}

#[cfg(test)]
mod tests;
