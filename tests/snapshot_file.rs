//! Snapshot files: a template saved to a file and loaded back behaves like the original, and
//! every kind of bad file is refused with its own typed error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;
#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "common/signing.rs"]
mod signing;

use common::{hello, test_builder, testguest};
use glint::{
    Error, ErrorKind, ImageDigest, ImageSignature, SnapshotFileError, Template, TrustError, TrustPolicy, TrustedKey,
    Value,
};
use std::path::{Path, PathBuf};

/// Offsets of docs/SNAPSHOT-FORMAT.md.
const AT_FORMAT: usize = 8;
const AT_ABI: usize = 12;
const AT_VERSION: usize = 16;
const AT_DATA: usize = 200;
const CHECKSUM_AT: usize = 232;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("glint-snapfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A template of the test guest, its state set to 42 before capture, saved at `path`.
fn saved(path: &Path) -> Template {
    let template = Template::new(&test_builder(), &testguest()).unwrap();
    template.save(path).unwrap();
    template
}

fn load(path: &Path) -> Result<Template, Error> {
    Template::load(path, &test_builder(), &testguest())
}

fn file_error(r: Result<Template, Error>) -> SnapshotFileError {
    match r {
        Err(Error::SnapshotFile(e)) => {
            assert_eq!(Error::SnapshotFile(e.clone()).kind(), ErrorKind::ImageRefused);
            e
        }
        Err(other) => panic!("expected a snapshot file error, got {other:?}"),
        Ok(_) => panic!("the file was accepted"),
    }
}

/// Rewrites the checksum (docs/SNAPSHOT-FORMAT.md: the CRC-32 of the file with the field zeroed,
/// little-endian, then zeros) so only the checks after it can refuse the file.
fn reseal(bytes: &mut [u8]) {
    bytes[CHECKSUM_AT..CHECKSUM_AT + 32].fill(0);
    let sum = crc32fast::hash(bytes);
    bytes[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn a_sandbox_from_a_snapshot_file_behaves_like_one_from_the_original() {
    require_kvm!();
    let dir = TempDir::new("roundtrip");
    let path = dir.file("t.snap");
    let original = saved(&path);
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.exports(), original.exports(), "same exports, same order");
    for template in [&original, &loaded] {
        let mut sb = template.instantiate().unwrap();
        assert_eq!(sb.call("rt_string", &[Value::String("snap".into())]).unwrap(), Value::String("snap".into()));
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
        sb.call("set_state", &[Value::U64(9)]).unwrap();
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(9));
        // A fault, then restore: the initial state comes back.
        assert!(matches!(sb.call("ud2", &[]), Err(Error::GuestFault(_))));
        sb.reset().unwrap();
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
        assert_eq!(sb.call("host_add", &[Value::I32(2), Value::I32(40)]).unwrap(), Value::I32(42));
        // A snapshot taken later restores too.
        sb.call("set_state", &[Value::U64(5)]).unwrap();
        let later = sb.snapshot().unwrap();
        sb.call("set_state", &[Value::U64(6)]).unwrap();
        sb.restore(&later).unwrap();
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(5));
    }
    // Saving a loaded template writes the same file.
    let again = dir.file("again.snap");
    loaded.save(&again).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
    // The embedded image is enough, and a pool can be made from a loaded template.
    let embedded = Template::load_with_embedded_image(&path, &test_builder()).unwrap();
    assert_eq!(embedded.image().sha256(), testguest().sha256());
    let pool = glint::SandboxPool::from_template(embedded, glint::PoolConfig::default()).unwrap();
    assert_eq!(pool.call("rt_i32", &[Value::I32(-3)]).unwrap(), Value::I32(-3));
}

#[test]
fn the_file_stores_only_non_zero_pages_page_aligned() {
    require_kvm!();
    let dir = TempDir::new("sparse");
    let path = dir.file("t.snap");
    let template = saved(&path);
    let sb = template.instantiate().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let bytes = std::fs::read(&path).unwrap();
    let data = u64::from_le_bytes(bytes[AT_DATA..AT_DATA + 8].try_into().unwrap());
    assert_eq!(data % 4096, 0, "page data is page-aligned");
    let stored = sb.initial_snapshot().stored_pages() as u64;
    assert_eq!(len - data, stored * 4096, "exactly the non-zero pages");
    assert!(len < 16 << 20, "a 16 MiB sandbox is stored in {len} bytes");
    assert!(bytes[data as usize..].chunks(4096).all(|p| p.iter().any(|&b| b != 0)), "no zero page stored");
}

#[test]
fn two_sandboxes_from_one_file_keep_their_writes_apart() {
    require_kvm!();
    let dir = TempDir::new("apart");
    let path = dir.file("t.snap");
    saved(&path);
    let before = std::fs::read(&path).unwrap();
    let a_template = load(&path).unwrap();
    let b_template = load(&path).unwrap();
    let mut a = a_template.instantiate().unwrap();
    let mut b = b_template.instantiate().unwrap();
    let mut c = a_template.instantiate().unwrap();
    a.call("set_state", &[Value::U64(111)]).unwrap();
    b.call("set_state", &[Value::U64(222)]).unwrap();
    assert_eq!(a.call("get_state", &[]).unwrap(), Value::U64(111));
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(222));
    assert_eq!(c.call("get_state", &[]).unwrap(), Value::U64(0));
    a.reset().unwrap();
    assert_eq!(a.call("get_state", &[]).unwrap(), Value::U64(0));
    assert_eq!(b.call("get_state", &[]).unwrap(), Value::U64(222));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the guests' writes never reach the file");
}

#[test]
fn truncated_files_are_refused() {
    require_kvm!();
    let dir = TempDir::new("truncated");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 1, bytes.len() - 4096, 4096 + 100, 4096, 100] {
        let cut = dir.file("cut.snap");
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        match file_error(load(&cut)) {
            SnapshotFileError::Truncated { expected, actual, .. } => {
                assert_eq!(actual, keep as u64);
                assert!(expected > actual);
            }
            other => panic!("{keep} bytes: {other:?}"),
        }
    }
    std::fs::write(dir.file("tiny.snap"), &bytes[..4]).unwrap();
    assert!(matches!(file_error(load(&dir.file("tiny.snap"))), SnapshotFileError::NotASnapshot { .. }));
    std::fs::write(dir.file("elf.snap"), std::fs::read(glint_guest_artifacts::TESTGUEST).unwrap()).unwrap();
    assert!(matches!(file_error(load(&dir.file("elf.snap"))), SnapshotFileError::NotASnapshot { .. }));
    assert!(matches!(file_error(load(&dir.file("missing.snap"))), SnapshotFileError::Io { .. }));
}

#[test]
fn a_flipped_bit_anywhere_is_refused_by_the_checksum() {
    require_kvm!();
    let dir = TempDir::new("flip");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    let data = u64::from_le_bytes(bytes[AT_DATA..AT_DATA + 8].try_into().unwrap()) as usize;
    // In the layout fields of the header, in the metadata (bitmap, vCPU state, table, image), in
    // the padding, and in the first, a middle and the last page of data.
    for at in [90, 300, 4096 + 3, 4096 + 900, data - 1, data + 17, (data + bytes.len()) / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        let bad = dir.file("flipped.snap");
        std::fs::write(&bad, &flipped).unwrap();
        match file_error(load(&bad)) {
            SnapshotFileError::ChecksumMismatch { .. } => {}
            other => panic!("bit flipped at {at}: {other:?}"),
        }
    }
}

#[test]
fn files_of_another_version_are_refused_with_what_differs() {
    require_kvm!();
    let dir = TempDir::new("version");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        edit(&mut b);
        let p = dir.file(name);
        std::fs::write(&p, &b).unwrap();
        file_error(load(&p))
    };
    match write("glint.snap", &|b| b[AT_VERSION..AT_VERSION + 32].copy_from_slice(&[b'9'; 32])) {
        SnapshotFileError::GlintVersion { found, this, .. } => {
            assert_eq!(found, "9".repeat(32));
            assert_eq!(this, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("{other:?}"),
    }
    match write("abi.snap", &|b| b[AT_ABI..AT_ABI + 4].copy_from_slice(&(glint::ABI_VERSION + 1).to_le_bytes())) {
        SnapshotFileError::AbiVersion { found, this, .. } => {
            assert_eq!((found, this), (glint::ABI_VERSION + 1, glint::ABI_VERSION))
        }
        other => panic!("{other:?}"),
    }
    match write("format.snap", &|b| b[AT_FORMAT..AT_FORMAT + 4].copy_from_slice(&7u32.to_le_bytes())) {
        SnapshotFileError::FormatVersion { found: 7, supported, .. } => assert_eq!(supported, glint::SNAPSHOT_FORMAT),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_of_another_layout_or_image_is_refused() {
    require_kvm!();
    let dir = TempDir::new("layout");
    let path = dir.file("t.snap");
    saved(&path);
    match file_error(Template::load(&path, &test_builder().memory_mib(32), &testguest())) {
        SnapshotFileError::OtherLayout { file, builder, .. } => {
            assert_eq!((file.memory_size, builder.memory_size), (16 << 20, 32 << 20));
        }
        other => panic!("{other:?}"),
    }
    match file_error(Template::load(&path, &test_builder().stack_size(128 << 10), &testguest())) {
        SnapshotFileError::OtherLayout { file, builder, .. } => assert_ne!(file.stack_size, builder.stack_size),
        other => panic!("{other:?}"),
    }
    match file_error(Template::load(&path, &test_builder(), &hello())) {
        SnapshotFileError::OtherImage { file, image, .. } => assert_ne!(file, image),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resealed_file_with_crafted_host_pages_or_vcpu_state_is_refused() {
    require_kvm!();
    let dir = TempDir::new("crafted");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    let data = u64::from_le_bytes(bytes[AT_DATA..AT_DATA + 8].try_into().unwrap()) as usize;
    // The untouched file, resealed, still loads: the checks below are what refuse.
    let mut same = bytes.clone();
    reseal(&mut same);
    std::fs::write(dir.file("same.snap"), &same).unwrap();
    load(&dir.file("same.snap")).unwrap();
    // The first stored page is the PML4 (page 1): make its first entry point elsewhere.
    let mut pt = bytes.clone();
    pt[data + 1] ^= 0x40;
    reseal(&mut pt);
    std::fs::write(dir.file("pt.snap"), &pt).unwrap();
    assert!(matches!(file_error(load(&dir.file("pt.snap"))), SnapshotFileError::UnsafeState { .. }));
    // The vCPU state follows the bitmap (16 MiB: 64 words) and its 8-byte length; the registers
    // come first (u32 length, then rax.. rip, rflags): set IOPL 3 in RFLAGS (the 18th word).
    let regs = 4096 + 64 * 8 + 8 + 4;
    let rflags = regs + 17 * 8;
    let mut iopl = bytes.clone();
    iopl[rflags + 1] |= 0x30;
    reseal(&mut iopl);
    std::fs::write(dir.file("iopl.snap"), &iopl).unwrap();
    match file_error(load(&dir.file("iopl.snap"))) {
        SnapshotFileError::UnsafeState { what, .. } => assert!(what.contains("RFLAGS"), "{what}"),
        other => panic!("{other:?}"),
    }
    // The code segment's DPL (in kvm_sregs, right after the registers): 0 would run at CPL0.
    let sregs = regs + 18 * 8 + 4;
    let cs_dpl = sregs + 14; // kvm_segment: base u64, limit u32, selector u16, type, present, dpl
    let mut cpl0 = bytes.clone();
    cpl0[cs_dpl] = 0;
    reseal(&mut cpl0);
    std::fs::write(dir.file("cpl0.snap"), &cpl0).unwrap();
    match file_error(load(&dir.file("cpl0.snap"))) {
        SnapshotFileError::UnsafeState { what, .. } => assert!(what.contains("code segment"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_changed_in_place_after_loading_cannot_change_the_host_owned_pages() {
    require_kvm!();
    use std::os::unix::fs::FileExt as _;
    let dir = TempDir::new("inplace");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    let data = u64::from_le_bytes(bytes[AT_DATA..AT_DATA + 8].try_into().unwrap());
    let template = load(&path).unwrap();
    let mut before = template.instantiate().unwrap();
    assert_eq!(before.call("rt_i32", &[Value::I32(1)]).unwrap(), Value::I32(1));
    // Rewrite, in place, the first entry of the PML4 (the first stored page), as a writer of the
    // file could while processes use it: the pages the loaded template maps read through to it.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[bytes[data as usize + 1] ^ 0x40], data + 1).unwrap();
    file.sync_all().unwrap();
    drop(file);
    // Sandboxes made after the change, and restores, still get glint's page tables.
    let mut after = template.instantiate().unwrap();
    assert_eq!(after.call("rt_string", &[Value::String("same".into())]).unwrap(), Value::String("same".into()));
    after.call("set_state", &[Value::U64(3)]).unwrap();
    after.reset().unwrap();
    assert_eq!(after.call("get_state", &[]).unwrap(), Value::U64(0));
    before.reset().unwrap();
    assert_eq!(before.call("host_add", &[Value::I32(1), Value::I32(2)]).unwrap(), Value::I32(3));
    // The changed file itself no longer loads.
    assert!(matches!(file_error(load(&path)), SnapshotFileError::ChecksumMismatch { .. }));
}

/// Where the page at guest address `addr` is stored in the file: the page data holds the
/// non-zero pages in guest order, and the bitmap (at 4096) says which those are.
fn stored_offset(bytes: &[u8], addr: u64) -> usize {
    let data = u64::from_le_bytes(bytes[AT_DATA..AT_DATA + 8].try_into().unwrap()) as usize;
    let page = (addr / 4096) as usize;
    let word = |i: usize| u64::from_le_bytes(bytes[4096 + i * 8..4096 + i * 8 + 8].try_into().unwrap());
    assert!(word(page / 64) & (1 << (page % 64)) != 0, "page {addr:#x} is not stored");
    let before: u32 = (0..page / 64).map(|i| word(i).count_ones()).sum::<u32>()
        + (word(page / 64) & ((1u64 << (page % 64)) - 1)).count_ones();
    data + before as usize * 4096
}

#[test]
fn a_resealed_file_whose_code_is_not_the_named_images_is_refused() {
    require_kvm!();
    let dir = TempDir::new("code");
    let path = dir.file("t.snap");
    saved(&path);
    let bytes = std::fs::read(&path).unwrap();
    // One byte of the page holding the entry point (read-only, executable): a file that records
    // the test guest's digest but would run other code.
    let entry_page = testguest().entry() & !0xfff;
    let mut code = bytes.clone();
    code[stored_offset(&bytes, entry_page) + (testguest().entry() & 0xfff) as usize] ^= 0xff;
    reseal(&mut code);
    std::fs::write(dir.file("code.snap"), &code).unwrap();
    match file_error(load(&dir.file("code.snap"))) {
        SnapshotFileError::ImagePages { addr, .. } => assert_eq!(addr, entry_page),
        other => panic!("{other:?}"),
    }
    // The same with the image the file embeds (what `glint run --snapshot` loads).
    match file_error(Template::<()>::load_with_embedded_image(dir.file("code.snap"), &test_builder())) {
        SnapshotFileError::ImagePages { addr, .. } => assert_eq!(addr, entry_page),
        other => panic!("{other:?}"),
    }
    let message = file_error(load(&dir.file("code.snap"))).to_string();
    assert!(message.contains(&format!("{entry_page:#x}")) && message.contains("read-only"), "{message}");
    // The guest's writable pages are its own state, as after any init: a changed byte in the
    // last stored page (the stack's) loads.
    let top = bytes.len() - 1;
    let mut stack = bytes.clone();
    stack[top] ^= 0x5a;
    reseal(&mut stack);
    std::fs::write(dir.file("stack.snap"), &stack).unwrap();
    load(&dir.file("stack.snap")).unwrap();
}

#[test]
fn a_trusted_load_holds_the_file_to_its_digest_pin_and_signature() {
    require_kvm!();
    require_openssl!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.snap");
    saved(&path);
    let key = signing::KeyPair::generate(dir.path(), "release");
    let sig = ImageSignature::from_file(key.sign(&path, &dir.path().join("t.snap.sig"))).unwrap();
    let trusted = TrustPolicy::new().trust_key(TrustedKey::from_file(&key.public).unwrap());
    let digest: ImageDigest = signing::openssl_digest(&path).parse().unwrap();
    let load_under = |policy: &TrustPolicy, signature: Option<&ImageSignature>| {
        Template::load_trusted(&path, &test_builder(), &testguest(), policy, signature)
    };
    let untrusted = |r: Result<Template, Error>| match file_error(r) {
        SnapshotFileError::Untrusted { source, .. } => *source,
        other => panic!("{other:?}"),
    };

    // Signed by the trusted key and pinned to the digest openssl computes: loads, and says so.
    let template = load_under(&trusted.clone().expect_digest(digest), Some(&sig)).unwrap();
    let v = template.file_verification().expect("a trusted load records its verification");
    assert_eq!(v.digest(), digest);
    assert_eq!(
        v.signer().map(TrustedKey::fingerprint),
        Some(TrustedKey::from_file(&key.public).unwrap().fingerprint())
    );
    assert_eq!(
        template.instantiate().unwrap().call("rt_string", &[Value::String("s".into())]).unwrap(),
        Value::String("s".into())
    );
    assert!(Template::load(&path, &test_builder(), &testguest()).unwrap().file_verification().is_none());

    // Unsigned while the policy has a key: refused, naming the file's digest.
    match untrusted(load_under(&trusted, None)) {
        TrustError::SignatureRequired { digest: d } => assert_eq!(d, digest),
        other => panic!("{other:?}"),
    }
    // Another pin.
    match untrusted(load_under(&TrustPolicy::new().expect_digest(ImageDigest::of(b"other")), None)) {
        TrustError::DigestMismatch { actual, .. } => assert_eq!(actual, digest),
        other => panic!("{other:?}"),
    }
    // A signature by the trusted key, but over another file (the image): refused.
    let image_sig =
        ImageSignature::from_file(key.sign(Path::new(glint_guest_artifacts::TESTGUEST), &dir.path().join("g.sig")))
            .unwrap();
    assert!(matches!(untrusted(load_under(&trusted, Some(&image_sig))), TrustError::UntrustedSignature { .. }));
    // A signed file rewritten afterwards (resealed, so only the signature can tell): refused.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    reseal(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(untrusted(load_under(&trusted, Some(&sig))), TrustError::UntrustedSignature { .. }));
    // A policy with neither pin nor key accepts any intact file, and still records its digest.
    let open = load_under(&TrustPolicy::new(), None).unwrap();
    assert_eq!(open.file_verification().unwrap().digest(), ImageDigest::of(&bytes));
}
