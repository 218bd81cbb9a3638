//! The standard capabilities: their host-function names and the encodings of the values that the
//! wire types cannot say directly (an absent key-value entry, a list of keys).
//!
//! A capability is a set of host functions with versioned names `glint:<capability>/<fn>@<n>`.
//! A new version of a function gets a new name; an old name keeps its meaning for as long as it
//! is served. `docs/CAPABILITIES.md` documents each function's signature, errors and limits.
//!
//! | name | signature |
//! | --- | --- |
//! | [`CLOCK_WALL`] | `() -> u64`: nanoseconds since the Unix epoch |
//! | [`CLOCK_MONOTONIC`] | `() -> u64`: nanoseconds since a fixed, arbitrary origin |
//! | [`RANDOM_BYTES`] | `(u32 n) -> Vec<u8>`: `n` bytes from the host OS (`n <= MAX_RANDOM_BYTES`) |
//! | [`VARIABLES_GET`] | `(String name) -> String` |
//! | [`KV_GET`] | `(String store, String key) -> Vec<u8>`: an *optional value* (below) |
//! | [`KV_SET`] | `(String store, String key, Vec<u8> value) -> ()` |
//! | [`KV_DELETE`] | `(String store, String key) -> bool`: whether the key existed |
//! | [`KV_LIST`] | `(String store, String prefix, String after, u32 max) -> Vec<u8>`: a *key page* |
//! | [`HTTP_SEND`] | `(Vec<u8> request) -> Vec<u8> response`, both encoded by [`crate::http`] |
//!
//! *Optional value*: one byte `0` (absent), or one byte `1` followed by the value itself (all
//! remaining bytes). *Key page*: `u32 n | n × str key | u8 more` where keys are in ascending byte
//! order and `more` is `1` when further keys match after the last one (ask again with it as
//! `after`), else `0`.

use crate::wire::{self, DecodeError, Full, Reader, Sink};

/// `() -> u64`: wall-clock time, nanoseconds since 1970-01-01T00:00:00Z.
pub const CLOCK_WALL: &str = "glint:clock/wall@1";
/// `() -> u64`: monotonic time, nanoseconds since an arbitrary origin fixed for the host process.
pub const CLOCK_MONOTONIC: &str = "glint:clock/monotonic@1";
/// `(u32 n) -> Vec<u8>`: `n` random bytes from the host operating system.
pub const RANDOM_BYTES: &str = "glint:random/bytes@1";
/// `(String name) -> String`: the value of a variable granted to the function.
pub const VARIABLES_GET: &str = "glint:variables/get@1";
/// `(String store, String key) -> Vec<u8>`: an optional value.
pub const KV_GET: &str = "glint:kv/get@1";
/// `(String store, String key, Vec<u8> value) -> ()`.
pub const KV_SET: &str = "glint:kv/set@1";
/// `(String store, String key) -> bool`: whether the key existed.
pub const KV_DELETE: &str = "glint:kv/delete@1";
/// `(String store, String prefix, String after, u32 max) -> Vec<u8>`: a key page.
pub const KV_LIST: &str = "glint:kv/list@1";
/// `(Vec<u8> request) -> Vec<u8>`: an outbound HTTP request and its response.
pub const HTTP_SEND: &str = "glint:http/send@1";

/// Every standard capability function, in the order of the table above.
pub const ALL: [&str; 9] =
    [CLOCK_WALL, CLOCK_MONOTONIC, RANDOM_BYTES, VARIABLES_GET, KV_GET, KV_SET, KV_DELETE, KV_LIST, HTTP_SEND];

/// Most bytes one `glint:random/bytes@1` call returns.
pub const MAX_RANDOM_BYTES: u32 = 65536;
/// Longest key-value key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest store name, in bytes (names are `[A-Za-z0-9_.-]`, at least one).
pub const MAX_STORE_NAME_LEN: usize = 64;
/// Most keys in one key page (a larger `max` is lowered to this).
pub const MAX_LIST_KEYS: u32 = 1000;

/// Whether `name` is a valid store name: 1 to [`MAX_STORE_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`.
pub fn is_store_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STORE_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Tag byte of an absent optional value.
pub const ABSENT: u8 = 0;
/// Tag byte of a present optional value.
pub const PRESENT: u8 = 1;

/// Writes an optional value.
pub fn put_option(sink: &mut impl Sink, value: Option<&[u8]>) -> Result<(), Full> {
    match value {
        None => sink.put(&[ABSENT]),
        Some(v) => {
            sink.put(&[PRESENT])?;
            sink.put(v)
        }
    }
}

/// Decodes an optional value.
///
/// # Errors
/// Empty input, a tag other than 0 or 1, or bytes after an absent tag.
pub fn read_option(bytes: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Truncated),
        Some((&ABSENT, [])) => Ok(None),
        Some((&ABSENT, rest)) => Err(DecodeError::TrailingBytes(rest.len() as u64)),
        Some((&PRESENT, rest)) => Ok(Some(rest)),
        Some((&tag, _)) => Err(DecodeError::BadStatus(tag)),
    }
}

/// Writes the head of a key page; then each key with [`put_key`], then [`put_key_page_end`].
pub fn put_key_page_head(sink: &mut impl Sink, count: usize) -> Result<(), Full> {
    sink.put(&u32::try_from(count).map_err(|_| Full)?.to_le_bytes())
}

/// Writes one key of a key page.
pub fn put_key(sink: &mut impl Sink, key: &str) -> Result<(), Full> {
    wire::put_bytes(sink, key.as_bytes())
}

/// Ends a key page: whether more keys match after the last one.
pub fn put_key_page_end(sink: &mut impl Sink, more: bool) -> Result<(), Full> {
    sink.put(&[u8::from(more)])
}

/// A decoded key page: its keys (validated UTF-8) and whether more follow.
#[derive(Clone, Debug)]
pub struct KeyPage<'a> {
    reader: Reader<'a>,
    left: usize,
    /// More keys match after the last one in this page.
    pub more: bool,
}

impl<'a> Iterator for KeyPage<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left = self.left.saturating_sub(1);
        // Validated by `read_key_page`.
        self.reader.str().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for KeyPage<'_> {}

/// Decodes and validates a key page.
///
/// # Errors
/// Truncated data, a count beyond the bytes that follow, a key that is not UTF-8, a `more` byte
/// other than 0 or 1, or trailing bytes.
pub fn read_key_page(bytes: &[u8]) -> Result<KeyPage<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let count = r.u32()?;
    let left = usize::try_from(count).map_err(|_| DecodeError::TooMany(u64::from(count)))?;
    if left > r.remaining() / wire::LEN_PREFIX {
        return Err(DecodeError::TooMany(u64::from(count)));
    }
    let start = r.clone();
    for _ in 0..left {
        r.str()?;
    }
    let more = match r.u8()? {
        0 => false,
        1 => true,
        b => return Err(DecodeError::BadBool(b)),
    };
    r.finish()?;
    Ok(KeyPage { reader: start, left, more })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn names_are_valid_host_function_names() {
        for name in ALL {
            assert!(name.len() <= wire::MAX_NAME_LEN, "{name}");
            assert!(name.starts_with("glint:") && name.contains('/') && name.contains('@'), "{name}");
        }
    }

    #[test]
    fn options_round_trip() {
        for value in [None, Some(&b""[..]), Some(&b"\x00\x01value"[..])] {
            let mut v = Vec::new();
            put_option(&mut v, value).unwrap();
            assert_eq!(read_option(&v).unwrap(), value);
        }
        assert_eq!(read_option(&[]), Err(DecodeError::Truncated));
        assert_eq!(read_option(&[0, 1]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(read_option(&[2]), Err(DecodeError::BadStatus(2)));
    }

    #[test]
    fn key_pages_round_trip() {
        let mut v = Vec::new();
        put_key_page_head(&mut v, 2).unwrap();
        put_key(&mut v, "a/1").unwrap();
        put_key(&mut v, "a/2").unwrap();
        put_key_page_end(&mut v, true).unwrap();
        let page = read_key_page(&v).unwrap();
        assert!(page.more);
        assert_eq!(page.collect::<Vec<_>>(), ["a/1", "a/2"]);
        let mut empty = Vec::new();
        put_key_page_head(&mut empty, 0).unwrap();
        put_key_page_end(&mut empty, false).unwrap();
        assert_eq!(empty, [0, 0, 0, 0, 0]);
        assert_eq!(read_key_page(&empty).unwrap().count(), 0);
    }

    #[test]
    fn hostile_key_pages_are_refused() {
        assert!(matches!(read_key_page(&[255, 255, 255, 255, 0]), Err(DecodeError::TooMany(_))));
        assert_eq!(read_key_page(&[1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0]).unwrap_err(), DecodeError::BadUtf8);
        assert_eq!(read_key_page(&[0, 0, 0, 0, 2]).unwrap_err(), DecodeError::BadBool(2));
        assert_eq!(read_key_page(&[0, 0, 0, 0, 0, 9]).unwrap_err(), DecodeError::TrailingBytes(1));
    }

    #[test]
    fn store_names() {
        assert!(is_store_name("default") && is_store_name("a.b-c_9"));
        assert!(!is_store_name("") && !is_store_name("a/b") && !is_store_name(&"x".repeat(65)));
    }
}
