//! Snapshot files: an initialised [`Template`](super::Template) saved to disk and loaded by
//! another process, which then makes sandboxes from it without running the guest's init.
//!
//! The format (little-endian; docs/SNAPSHOT-FORMAT.md describes it byte by byte):
//!
//! ```text
//! 0     header, one page: magic "GLINTSNP", format, ABI version, glint version, the image's
//!       SHA-256, the memory layout, where the sections are, the file's length, the checksum
//! 4096  metadata: the non-zero page bitmap, the vCPU state, the guest's function table and the
//!       image file itself (so `glint run --snapshot` needs nothing else)
//! ...   page data, page-aligned: each non-zero guest page, in guest order
//! ```
//!
//! The checksum is the CRC-32 of the whole file with the checksum field zeroed: it catches a
//! truncated or damaged file, and at a tenth of SHA-256's cost, since every load reads every byte
//! for it. It is not a signature: anyone who can write the file can recompute it, as they could a
//! SHA-256; [`Template::load_trusted`](super::Template::load_trusted) holds the file to a
//! signature or pin, over its SHA-256. What a crafted file could do is bounded instead by the checks at load: the
//! host-owned pages (page tables, GDT, IDT, TSS, stubs) must be exactly those glint builds for the
//! layout and image, and the vCPU state must be one a CPL3 glint guest can be in
//! (`vmm::persist::check`), so a file can put no more into a VM than a hostile image can.
//!
//! Loading maps each run of page data `MAP_PRIVATE` from the file, so every sandbox, in every
//! process, that loads the same file shares its page cache; a page is copied only when a
//! sandbox writes it.

use super::functions::Functions;
use super::snapshot::Snapshot;
use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::mem::shared::SharedMemory;
use crate::mem::x86;
use crate::vmm::{StateError, VcpuState};
use crate::Error;
use glint_abi::layout::PAGE_SIZE;
use glint_abi::ABI_VERSION;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 8] = *b"GLINTSNP";
/// The layout of the file itself; bumped whenever it changes.
pub const SNAPSHOT_FORMAT: u32 = 2;
const HEADER: u64 = PAGE_SIZE;
const VERSION_BYTES: usize = 32;
const GLINT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the checksum sits in the header.
const CHECKSUM_AT: usize = 232;
/// Largest metadata section read: the bitmap of 256 MiB (8 KiB), the vCPU state (~5 KiB), the
/// table (bounded by the output buffer) and the image (bounded like an image file).
const MAX_META: u64 = 1 << 31;

/// The sizes a memory layout is made from, as a snapshot file records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySizes {
    /// Total guest memory.
    pub memory_size: u64,
    /// Input buffer.
    pub input_size: u64,
    /// Output buffer.
    pub output_size: u64,
    /// Stack.
    pub stack_size: u64,
    /// Where the image ends (the layout is computed around it).
    pub image_end: u64,
}

impl fmt::Display for MemorySizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes of memory ({} input, {} output, {} stack, image to {:#x})",
            self.memory_size, self.input_size, self.output_size, self.stack_size, self.image_end
        )
    }
}

impl From<&Layout> for MemorySizes {
    fn from(l: &Layout) -> MemorySizes {
        MemorySizes {
            memory_size: l.memory_size,
            input_size: l.input_size,
            output_size: l.output_size,
            stack_size: l.stack_size,
            image_end: l.image_end,
        }
    }
}

/// Why a snapshot file cannot be written or loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// Reading or writing the file failed.
    #[error("cannot {doing} snapshot file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// "open", "read", "write", "map".
        doing: &'static str,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file does not start like a snapshot file.
    #[error("{} is not a glint snapshot file", path.display())]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The file is shorter than its header says.
    #[error("{} is truncated: {actual} bytes of {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes there are.
        actual: u64,
    },
    /// The checksum over the file does not match: it was damaged or modified.
    #[error("{} is damaged or was modified: its checksum does not match", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
    },
    /// Written in another snapshot format.
    #[error("{} is in snapshot format {found}; this glint reads format {supported}", path.display())]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// The file's format.
        found: u32,
        /// The one this glint reads.
        supported: u32,
    },
    /// Written by another version of glint.
    #[error("{} was written by glint {found}; this is glint {this}", path.display())]
    GlintVersion {
        /// The file.
        path: PathBuf,
        /// The version that wrote it.
        found: String,
        /// This version.
        this: &'static str,
    },
    /// Holds a guest of another ABI version.
    #[error("{} holds a guest of ABI version {found}; this glint speaks ABI {this}", path.display())]
    AbiVersion {
        /// The file.
        path: PathBuf,
        /// The file's ABI version.
        found: u32,
        /// This glint's.
        this: u32,
    },
    /// Taken with another memory layout than the builder makes.
    #[error("{} was taken with {file}; this builder makes {builder}", path.display())]
    OtherLayout {
        /// The file.
        path: PathBuf,
        /// The file's sizes.
        file: Box<MemorySizes>,
        /// The builder's.
        builder: Box<MemorySizes>,
    },
    /// A snapshot of another image than the one given.
    #[error("{} is a snapshot of image sha256:{file}, not of the given sha256:{image}", path.display())]
    OtherImage {
        /// The file.
        path: PathBuf,
        /// The image digest the file records (hex).
        file: String,
        /// The given image's (hex).
        image: String,
    },
    /// A page the image maps read-only (code, constants) that does not hold the image's bytes:
    /// the file names the image but would run other code (a crafted file).
    #[error(
        "{} does not hold the image it names: its page at {addr:#x}, which the image maps read-only (code or constants), differs from the image's",
        path.display()
    )]
    ImagePages {
        /// The file.
        path: PathBuf,
        /// Guest address of the first page that differs.
        addr: u64,
    },
    /// The file failed the trust policy it was loaded under ([`Template::load_trusted`]):
    /// its digest pin, or its signature.
    ///
    /// [`Template::load_trusted`]: crate::Template::load_trusted
    #[error("snapshot file {} is not trusted (held to the trust policy as an image is)", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// What the policy refused: the digest is the SHA-256 of the whole file.
        #[source]
        source: Box<crate::TrustError>,
    },
    /// Inconsistent contents that the checksum did not catch (a crafted file).
    #[error("{} is malformed: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A vCPU state or host-owned page glint would never run a guest with (a crafted file).
    #[error("{} holds a state glint would never run a guest in: {what}", path.display())]
    UnsafeState {
        /// The file.
        path: PathBuf,
        /// Which value.
        what: &'static str,
    },
}

/// The checksum field: the CRC-32 (IEEE) of the file with the field zeroed, little-endian, then
/// 28 zero bytes.
fn checksum_field(sum: crc32fast::Hasher) -> [u8; 32] {
    let mut field = [0u8; 32];
    field[..4].copy_from_slice(&sum.finalize().to_le_bytes());
    field
}

/// The hex form of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// The layout's fields in file order.
fn layout_words(l: &Layout) -> [u64; 11] {
    [
        l.memory_size,
        l.image_end,
        l.input_addr,
        l.input_size,
        l.output_addr,
        l.output_size,
        l.heap_addr,
        l.heap_size,
        l.guard_addr,
        l.stack_addr,
        l.stack_size,
    ]
}

fn layout_from(w: [u64; 11]) -> Layout {
    Layout {
        memory_size: w[0],
        image_end: w[1],
        input_addr: w[2],
        input_size: w[3],
        output_addr: w[4],
        output_size: w[5],
        heap_addr: w[6],
        heap_size: w[7],
        guard_addr: w[8],
        stack_addr: w[9],
        stack_size: w[10],
    }
}

// Header offsets.
const AT_FORMAT: usize = 8;
const AT_ABI: usize = 12;
const AT_VERSION: usize = 16;
const AT_DIGEST: usize = 48;
const AT_LAYOUT: usize = 80;
const AT_PAGES: usize = 168;
const AT_STORED: usize = 176;
const AT_META: usize = 184;
const AT_META_LEN: usize = 192;
const AT_DATA: usize = 200;
const AT_DATA_LEN: usize = 208;
const AT_FILE_LEN: usize = 216;
const _: () = assert!(AT_FILE_LEN + 8 <= CHECKSUM_AT && CHECKSUM_AT + 32 <= HEADER as usize);

fn put_section(meta: &mut Vec<u8>, bytes: &[u8]) {
    meta.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    meta.extend_from_slice(bytes);
}

/// Writes `snapshot` of `image` (whose guest declared `functions`) to `path`: to a temporary
/// file beside it, renamed over `path` when complete, so a reader never sees a partial file and
/// a file some process has mapped is never changed under it.
pub(crate) fn save(path: &Path, image: &GuestImage, snapshot: &Snapshot, functions: &Functions) -> Result<(), Error> {
    let io = |doing: &'static str| {
        move |e: std::io::Error| SnapshotFileError::Io { path: path.to_path_buf(), doing, source: Arc::new(e) }
    };
    let layout = snapshot.layout();
    let bitmap = snapshot.nonzero();
    let mut meta = Vec::new();
    for w in bitmap {
        meta.extend_from_slice(&w.to_le_bytes());
    }
    put_section(&mut meta, &snapshot.vcpu().to_bytes());
    put_section(&mut meta, &functions.table);
    put_section(&mut meta, image.source());
    let data_offset = (HEADER + meta.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let pages: Vec<u64> = super::snapshot::pages_in(bitmap);
    let data_len = pages.len() as u64 * PAGE_SIZE;
    let file_len = data_offset + data_len;

    let mut header = vec![0u8; HEADER as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[AT_FORMAT..AT_FORMAT + 4].copy_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    header[AT_ABI..AT_ABI + 4].copy_from_slice(&ABI_VERSION.to_le_bytes());
    let v = GLINT_VERSION.as_bytes();
    header[AT_VERSION..AT_VERSION + v.len().min(VERSION_BYTES)].copy_from_slice(&v[..v.len().min(VERSION_BYTES)]);
    header[AT_DIGEST..AT_DIGEST + 32].copy_from_slice(&image.sha256());
    for (i, w) in layout_words(layout).iter().enumerate() {
        header[AT_LAYOUT + i * 8..AT_LAYOUT + i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    for (at, value) in [
        (AT_PAGES, layout.memory_size / PAGE_SIZE),
        (AT_STORED, pages.len() as u64),
        (AT_META, HEADER),
        (AT_META_LEN, meta.len() as u64),
        (AT_DATA, data_offset),
        (AT_DATA_LEN, data_len),
        (AT_FILE_LEN, file_len),
    ] {
        header[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    let pad = vec![0u8; (data_offset - HEADER - meta.len() as u64) as usize];
    let mut sum = crc32fast::Hasher::new();
    sum.update(&header);
    sum.update(&meta);
    sum.update(&pad);
    let zero = [0u8; PAGE_SIZE as usize];
    for &p in &pages {
        sum.update(snapshot.page(p).unwrap_or(&zero));
    }
    header[CHECKSUM_AT..CHECKSUM_AT + 32].copy_from_slice(&checksum_field(sum));

    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io("write"))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        w.write_all(&header).map_err(io("write"))?;
        w.write_all(&meta).map_err(io("write"))?;
        w.write_all(&pad).map_err(io("write"))?;
        for &p in &pages {
            w.write_all(snapshot.page(p).unwrap_or(&zero)).map_err(io("write"))?;
        }
        w.flush().map_err(io("write"))?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io("write"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::from)
}

/// A snapshot file read and checked, except against a builder and image (see [`Loaded::check`]).
pub(crate) struct Loaded {
    pub(crate) path: PathBuf,
    pub(crate) layout: Layout,
    pub(crate) digest: [u8; 32],
    pub(crate) nonzero: Vec<u64>,
    pub(crate) vcpu: VcpuState,
    pub(crate) table: Vec<u8>,
    pub(crate) image: Vec<u8>,
    pub(crate) memory: SharedMemory,
    /// The SHA-256 of the whole file as read, when [`load`] was asked for it.
    pub(crate) file_digest: Option<crate::ImageDigest>,
}

/// Reads the snapshot file at `path`: versions, length, checksum, then the contents. With
/// `file_digest`, also the SHA-256 of the file's bytes (what a signature or pin of the file is
/// over), from the same read the checksum is computed from.
pub(crate) fn load(path: &Path, file_digest: bool) -> Result<Loaded, SnapshotFileError> {
    let p = || path.to_path_buf();
    let io =
        |doing: &'static str| move |e: std::io::Error| SnapshotFileError::Io { path: p(), doing, source: Arc::new(e) };
    let malformed = |what| SnapshotFileError::Malformed { path: p(), what };
    let file = File::open(path).map_err(io("open"))?;
    let actual = file.metadata().map_err(io("read"))?.len();
    let mut header = vec![0u8; HEADER as usize];
    let got = read_at_most(&file, &mut header, 0).map_err(io("read"))?;
    if got < MAGIC.len() || header[..8] != MAGIC {
        return Err(SnapshotFileError::NotASnapshot { path: p() });
    }
    if got < HEADER as usize {
        return Err(SnapshotFileError::Truncated { path: p(), expected: HEADER, actual });
    }
    let format = le_u32(&header, AT_FORMAT);
    if format != SNAPSHOT_FORMAT {
        return Err(SnapshotFileError::FormatVersion { path: p(), found: format, supported: SNAPSHOT_FORMAT });
    }
    let version = &header[AT_VERSION..AT_VERSION + VERSION_BYTES];
    let version = String::from_utf8_lossy(&version[..version.iter().position(|&b| b == 0).unwrap_or(VERSION_BYTES)]);
    if version != GLINT_VERSION {
        return Err(SnapshotFileError::GlintVersion {
            path: p(),
            found: crate::error::sanitize(version.as_bytes()),
            this: GLINT_VERSION,
        });
    }
    let abi = le_u32(&header, AT_ABI);
    if abi != ABI_VERSION {
        return Err(SnapshotFileError::AbiVersion { path: p(), found: abi, this: ABI_VERSION });
    }
    let file_len = le_u64(&header, AT_FILE_LEN);
    if actual < file_len {
        return Err(SnapshotFileError::Truncated { path: p(), expected: file_len, actual });
    }
    if actual > file_len {
        return Err(malformed("bytes past the length the header records"));
    }
    let (meta_at, meta_len) = (le_u64(&header, AT_META), le_u64(&header, AT_META_LEN));
    let (data_at, data_len) = (le_u64(&header, AT_DATA), le_u64(&header, AT_DATA_LEN));
    if meta_at != HEADER
        || meta_len > MAX_META
        || data_at % PAGE_SIZE != 0
        || data_at < meta_at + meta_len
        || data_at.checked_add(data_len) != Some(file_len)
    {
        return Err(malformed("section offsets"));
    }
    // Everything before the page data, read once; the page data is mapped, not read.
    let mut front = vec![0u8; usize::try_from(data_at - HEADER).map_err(|_| malformed("section offsets"))?];
    file.read_exact_at(&mut front, HEADER).map_err(io("read"))?;
    let mut checked = header.clone();
    checked[CHECKSUM_AT..CHECKSUM_AT + 32].fill(0);
    let mut sum = crc32fast::Hasher::new();
    sum.update(&checked);
    sum.update(&front);
    let mut whole = file_digest.then(|| {
        let mut h = Sha256::new();
        h.update(&header);
        h.update(&front);
        h
    });
    // The page data is read once for the checksum (from the page cache, which the mapping
    // below then shares) before anything in the file is interpreted.
    let mut chunk = vec![0u8; (1 << 20).min(data_len as usize).max(1)];
    let mut at = data_at;
    while at < file_len {
        let n = chunk.len().min((file_len - at) as usize);
        file.read_exact_at(&mut chunk[..n], at).map_err(io("read"))?;
        sum.update(&chunk[..n]);
        if let Some(h) = whole.as_mut() {
            h.update(&chunk[..n]);
        }
        at += n as u64;
    }
    let file_digest = whole.map(|h| crate::ImageDigest::from_bytes(h.finalize().into()));
    if checksum_field(sum)[..] != header[CHECKSUM_AT..CHECKSUM_AT + 32] {
        return Err(SnapshotFileError::ChecksumMismatch { path: p() });
    }

    let layout = layout_from(std::array::from_fn(|i| le_u64(&header, AT_LAYOUT + i * 8)));
    let pages = le_u64(&header, AT_PAGES);
    if pages != layout.memory_size / PAGE_SIZE || layout.memory_size % PAGE_SIZE != 0 || layout.memory_size == 0 {
        return Err(malformed("page count"));
    }
    let stored = le_u64(&header, AT_STORED);
    if stored.checked_mul(PAGE_SIZE) != Some(data_len) || stored > pages {
        return Err(malformed("stored page count"));
    }
    let words = usize::try_from(pages.div_ceil(64)).map_err(|_| malformed("page count"))?;
    let meta = front.get(..meta_len as usize).ok_or_else(|| malformed("metadata length"))?;
    let (bitmap, mut rest) = meta.split_at_checked(words * 8).ok_or_else(|| malformed("page bitmap"))?;
    let nonzero: Vec<u64> = bitmap.chunks_exact(8).map(|c| le_u64(c, 0)).collect();
    let set: u64 = nonzero.iter().map(|w| u64::from(w.count_ones())).sum();
    if set != stored || nonzero.last().is_some_and(|w| pages % 64 != 0 && w >> (pages % 64) != 0) {
        return Err(malformed("page bitmap"));
    }
    let mut section = |what| -> Result<&[u8], SnapshotFileError> {
        let len = rest.get(..8).map(|b| le_u64(b, 0)).ok_or_else(|| malformed(what))?;
        let len = usize::try_from(len).map_err(|_| malformed(what))?;
        let body =
            rest.get(8..8usize.checked_add(len).ok_or_else(|| malformed(what))?).ok_or_else(|| malformed(what))?;
        rest = &rest[8 + len..];
        Ok(body)
    };
    let vcpu = section("vCPU state")?;
    let table = section("function table")?.to_vec();
    let image = section("image")?.to_vec();

    let memory = SharedMemory::packed(file, layout.memory_size, &nonzero, data_at).map_err(|e| {
        SnapshotFileError::Io { path: p(), doing: "map", source: Arc::new(std::io::Error::other(e.to_string())) }
    })?;
    if !rest.is_empty() {
        return Err(malformed("trailing metadata"));
    }
    let vcpu = VcpuState::from_bytes(vcpu).map_err(|e| match e {
        StateError::Malformed(what) => SnapshotFileError::Malformed { path: p(), what },
        StateError::Unsafe(what) => SnapshotFileError::UnsafeState { path: p(), what },
    })?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&header[AT_DIGEST..AT_DIGEST + 32]);
    Ok(Loaded { path: p(), layout, digest, nonzero, vcpu, table, image, memory, file_digest })
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at the end of file).
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Loaded {
    /// Checks the file against the image and the layout `expected` (what the builder makes for
    /// it), and its host-owned pages against what glint builds for them. The host-owned pages
    /// are first copied out of the file ([`SharedMemory::pin`]) and the copies are what is
    /// checked and what every VM gets, so changing the file in place later cannot change them.
    ///
    /// `embedded` says `image` is the one the file embeds: then the digest the file records is
    /// not compared (hashing the image would cost a process start a SHA-256 of it). That digest
    /// names the image only for a caller who gives one; an embedded image is the guest either
    /// way, and its read-only pages are still checked against the memory below.
    pub(crate) fn check(
        &mut self,
        image: &GuestImage,
        expected: &Layout,
        embedded: bool,
    ) -> Result<(), SnapshotFileError> {
        let path = || self.path.clone();
        if !embedded && image.sha256() != self.digest {
            return Err(SnapshotFileError::OtherImage {
                path: path(),
                file: hex(&self.digest),
                image: hex(&image.sha256()),
            });
        }
        if *expected != self.layout {
            return Err(SnapshotFileError::OtherLayout {
                path: path(),
                file: Box::new((&self.layout).into()),
                builder: Box::new(expected.into()),
            });
        }
        let zero = [0u8; PAGE_SIZE as usize];
        let pieces = x86::system_pieces(expected, image);
        self.memory.pin(pieces.iter().flat_map(|(addr, bytes)| {
            let first = addr / PAGE_SIZE;
            first..first + (bytes.len() as u64).div_ceil(PAGE_SIZE)
        }));
        for (addr, bytes) in pieces {
            for (i, want) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
                let page = addr / PAGE_SIZE + i as u64;
                let have = self.memory.page(page).unwrap_or(&zero);
                if have.get(..want.len()) != Some(want) {
                    return Err(SnapshotFileError::UnsafeState {
                        path: path(),
                        what: "host-owned pages (page tables, GDT, IDT, TSS or stubs) differ from glint's",
                    });
                }
            }
        }
        // The image's read-only pages: the guest cannot write them (the page tables just checked
        // map them so), so after init they still hold exactly what the loader put there. With
        // this the recorded digest is a fact, not a claim: the file runs the image's code and
        // no other. (Only the guest's writable pages are the file's own.)
        for &(addr, _) in image.pages().iter().filter(|(_, perm)| !perm.write) {
            let have = self.memory.page(addr / PAGE_SIZE).unwrap_or(&zero);
            if have != &image.page_bytes(addr)[..] {
                return Err(SnapshotFileError::ImagePages { path: path(), addr });
            }
        }
        Ok(())
    }
}
