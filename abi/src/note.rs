//! The ABI-version note every guest image carries.
//!
//! An ELF note (`PT_NOTE` segment, section `.note.glint`) with owner name `"glint"`, type
//! [`NOTE_TYPE`] and a 4-byte little-endian descriptor holding [`crate::ABI_VERSION`]. The host
//! refuses images without it, or with another version, before mapping anything.

/// Owner name of the note, without the terminating NUL.
pub const NOTE_NAME: &[u8] = b"glint";
/// Note type of the ABI-version note ("GLNT").
pub const NOTE_TYPE: u32 = 0x544e_4c47;

const _: () = assert!(NOTE_NAME.len() == 5, "version_note hard-codes the name");

/// Size of the encoded note: header (12), name padded to 8, descriptor (4).
pub const NOTE_SIZE: usize = 24;

/// The note as bytes, for a guest to place in its `.note.glint` section.
pub const fn version_note(version: u32) -> [u8; NOTE_SIZE] {
    let n = 6u32.to_le_bytes(); // "glint" and its NUL
    let d = 4u32.to_le_bytes();
    let t = NOTE_TYPE.to_le_bytes();
    let v = version.to_le_bytes();
    [
        n[0], n[1], n[2], n[3], d[0], d[1], d[2], d[3], t[0], t[1], t[2], t[3], //
        b'g', b'l', b'i', b'n', b't', 0, 0, 0, //
        v[0], v[1], v[2], v[3],
    ]
}
