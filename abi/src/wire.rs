//! The byte encoding of everything that crosses the boundary.
//!
//! Each buffer holds one *frame*: a `u32` little-endian body length, then the body. Integers are
//! little-endian; a value is its one-byte [`ValueType`] tag and its payload; text and bytes carry a
//! `u32` length. Every decoder here takes untrusted input: it checks each length against the bytes
//! that remain before it slices, never allocates, and rejects unknown tags, non-0/1 booleans,
//! invalid UTF-8 and trailing bytes. `docs/ABI.md` spells the same out byte by byte.
//!
//! | message            | direction    | body                                                        |
//! |--------------------|--------------|-------------------------------------------------------------|
//! | function table     | guest → host | exports, then imports: each a u32 count, then per function: name, u8 n, n tags, u8 result tag |
//! | call               | host → guest | u32 function index, u32 argc, argc values                   |
//! | call result        | guest → host | outcome                                                     |
//! | host call          | guest → host | name, u32 argc, argc values                                 |
//! | host-call response | host → guest | outcome                                                     |
//! | abort              | guest → host | u32 code, bytes message                                     |
//! | log                | guest → host | u8 level, bytes message                                     |
//!
//! An *outcome* is status byte 0 and a value, or status byte 1, a u32 error code and a bytes message.

use crate::code::Status;
use crate::value::{ValueRef, ValueType};
use core::fmt;

/// Bytes taken by the frame's length prefix.
pub const LEN_PREFIX: usize = 4;
/// Longest function name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most parameters a function may take.
pub const MAX_PARAMS: usize = 16;
/// Most functions a guest may export, and most host functions it may import.
pub const MAX_EXPORTS: usize = 1024;

/// Why untrusted bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The data ends before the field it announces.
    Truncated,
    /// The frame announces more bytes than the buffer holds.
    FrameTooLarge {
        /// Body length the prefix announces.
        len: u64,
        /// Bytes available for the body.
        capacity: u64,
    },
    /// A value tag that names no [`ValueType`].
    UnknownTag(u8),
    /// A boolean byte other than 0 or 1.
    BadBool(u8),
    /// A status byte other than OK or ERR.
    BadStatus(u8),
    /// Text that is not UTF-8.
    BadUtf8,
    /// A name longer than [`MAX_NAME_LEN`].
    NameTooLong(u64),
    /// More parameters than [`MAX_PARAMS`] or exports than [`MAX_EXPORTS`].
    TooMany(u64),
    /// Bytes left over after the message.
    TrailingBytes(u64),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("message is truncated"),
            DecodeError::FrameTooLarge { len, capacity } => {
                write!(f, "frame announces {len} bytes but the buffer holds {capacity}")
            }
            DecodeError::UnknownTag(t) => write!(f, "unknown value tag {t}"),
            DecodeError::BadBool(b) => write!(f, "boolean byte {b} is neither 0 nor 1"),
            DecodeError::BadStatus(s) => write!(f, "unknown status byte {s}"),
            DecodeError::BadUtf8 => f.write_str("text is not valid UTF-8"),
            DecodeError::NameTooLong(n) => {
                write!(f, "name of {n} bytes exceeds the limit of {MAX_NAME_LEN}")
            }
            DecodeError::TooMany(n) => write!(f, "count {n} exceeds the limit"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Reads a frame's length prefix and checks the body fits in `capacity` bytes after it.
pub fn frame_len(prefix: [u8; LEN_PREFIX], capacity: usize) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(prefix);
    let room = capacity.saturating_sub(LEN_PREFIX);
    match usize::try_from(len) {
        // A buffer too small for the prefix itself holds no frame, not even an empty one.
        Ok(len) if len <= room && capacity >= LEN_PREFIX => Ok(len),
        _ => Err(DecodeError::FrameTooLarge { len: u64::from(len), capacity: room as u64 }),
    }
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { rest: buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a `u32` length and that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    /// Reads a `u32` length and that many bytes of UTF-8.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::BadUtf8)
    }

    /// Reads a function name (text of at most [`MAX_NAME_LEN`] bytes).
    pub fn name(&mut self) -> Result<&'a str, DecodeError> {
        let name = self.str()?;
        if name.len() > MAX_NAME_LEN {
            return Err(DecodeError::NameTooLong(name.len() as u64));
        }
        Ok(name)
    }

    /// Reads a value type tag.
    pub fn value_type(&mut self) -> Result<ValueType, DecodeError> {
        let tag = self.u8()?;
        ValueType::from_tag(tag).ok_or(DecodeError::UnknownTag(tag))
    }

    /// Reads a tagged value.
    pub fn value(&mut self) -> Result<ValueRef<'a>, DecodeError> {
        Ok(match self.value_type()? {
            ValueType::Unit => ValueRef::Unit,
            ValueType::I32 => ValueRef::I32(i32::from_le_bytes(self.array()?)),
            ValueType::U32 => ValueRef::U32(self.u32()?),
            ValueType::I64 => ValueRef::I64(i64::from_le_bytes(self.array()?)),
            ValueType::U64 => ValueRef::U64(self.u64()?),
            ValueType::F32 => ValueRef::F32(f32::from_bits(self.u32()?)),
            ValueType::F64 => ValueRef::F64(f64::from_bits(self.u64()?)),
            ValueType::Bool => match self.u8()? {
                0 => ValueRef::Bool(false),
                1 => ValueRef::Bool(true),
                b => return Err(DecodeError::BadBool(b)),
            },
            ValueType::String => ValueRef::String(self.str()?),
            ValueType::Bytes => ValueRef::Bytes(self.bytes()?),
        })
    }

    /// Reads an argument count (at most [`MAX_PARAMS`]).
    pub fn arg_count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        match usize::try_from(n) {
            Ok(n) if n <= MAX_PARAMS => Ok(n),
            _ => Err(DecodeError::TooMany(u64::from(n))),
        }
    }

    /// Checks that the whole message was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n as u64)),
        }
    }
}

/// The buffer is full: the message does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message does not fit in the buffer")
    }
}

/// Where encoders write.
pub trait Sink {
    /// Appends `bytes`, or fails without a partial write being relied on.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full>;
}

/// A sink over a fixed slice, e.g. a guest's output buffer.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceSink<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.pos.checked_add(bytes.len()).ok_or(Full)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(Full)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

#[cfg(feature = "alloc")]
impl Sink for alloc::vec::Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Writes a `u32` length and the bytes.
pub fn put_bytes(sink: &mut impl Sink, bytes: &[u8]) -> Result<(), Full> {
    let len = u32::try_from(bytes.len()).map_err(|_| Full)?;
    sink.put(&len.to_le_bytes())?;
    sink.put(bytes)
}

/// Writes a tagged value.
pub fn put_value(sink: &mut impl Sink, value: ValueRef<'_>) -> Result<(), Full> {
    sink.put(&[value.ty().tag()])?;
    match value {
        ValueRef::Unit => Ok(()),
        ValueRef::I32(v) => sink.put(&v.to_le_bytes()),
        ValueRef::U32(v) => sink.put(&v.to_le_bytes()),
        ValueRef::I64(v) => sink.put(&v.to_le_bytes()),
        ValueRef::U64(v) => sink.put(&v.to_le_bytes()),
        ValueRef::F32(v) => sink.put(&v.to_bits().to_le_bytes()),
        ValueRef::F64(v) => sink.put(&v.to_bits().to_le_bytes()),
        ValueRef::Bool(v) => sink.put(&[u8::from(v)]),
        ValueRef::String(v) => put_bytes(sink, v.as_bytes()),
        ValueRef::Bytes(v) => put_bytes(sink, v),
    }
}

/// Writes the head of a call: function index and argument count. The values follow.
pub fn put_call_head(sink: &mut impl Sink, index: u32, argc: usize) -> Result<(), Full> {
    sink.put(&index.to_le_bytes())?;
    sink.put(&u32::try_from(argc).map_err(|_| Full)?.to_le_bytes())
}

/// Writes the head of a host call: function name and argument count. The values follow.
pub fn put_host_call_head(sink: &mut impl Sink, name: &str, argc: usize) -> Result<(), Full> {
    put_bytes(sink, name.as_bytes())?;
    sink.put(&u32::try_from(argc).map_err(|_| Full)?.to_le_bytes())
}

/// Writes a successful outcome.
pub fn put_ok(sink: &mut impl Sink, value: ValueRef<'_>) -> Result<(), Full> {
    sink.put(&[Status::Ok.number()])?;
    put_value(sink, value)
}

/// Writes a failed outcome: an error code (a [`crate::code::CallError`] or
/// [`crate::code::HostCallError`] number) and a message.
pub fn put_err(sink: &mut impl Sink, code: u32, message: &[u8]) -> Result<(), Full> {
    sink.put(&[Status::Err.number()])?;
    sink.put(&code.to_le_bytes())?;
    put_bytes(sink, message)
}

/// The decoded form of a call result or host-call response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome<'a> {
    /// The call produced this value.
    Ok(ValueRef<'a>),
    /// The call failed with an error code and a message (not necessarily UTF-8).
    Err {
        /// One of the codes in [`crate::code`].
        code: u32,
        /// What went wrong, as the other side wrote it.
        message: &'a [u8],
    },
}

/// Decodes a call result or host-call response body.
pub fn read_outcome(body: &[u8]) -> Result<Outcome<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let outcome = match Status::from_number(r.u8()?) {
        Some(Status::Ok) => Outcome::Ok(r.value()?),
        Some(Status::Err) => Outcome::Err { code: r.u32()?, message: r.bytes()? },
        None => return Err(DecodeError::BadStatus(body.first().copied().unwrap_or_default())),
    };
    r.finish()?;
    Ok(outcome)
}

/// One function of the guest's function table: an export, or a host function it imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionRef<'a> {
    /// Function name.
    pub name: &'a str,
    /// Parameter types, validated tags.
    params: &'a [u8],
    /// Result type.
    pub result: ValueType,
}

impl FunctionRef<'_> {
    /// The parameter types in order.
    pub fn params(&self) -> impl Iterator<Item = ValueType> + '_ {
        self.params.iter().filter_map(|&t| ValueType::from_tag(t))
    }
}

/// Whether a table entry is an export or an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A function the guest exports.
    Export,
    /// A host function the guest imports.
    Import,
}

/// Writes the count that opens the exports or the imports of a function table; each function
/// follows via [`put_function`]. A table is the exports' count and entries, then the imports'.
pub fn put_count(sink: &mut impl Sink, count: usize) -> Result<(), Full> {
    sink.put(&u32::try_from(count).map_err(|_| Full)?.to_le_bytes())
}

/// Writes one function table entry.
pub fn put_function(sink: &mut impl Sink, name: &str, params: &[ValueType], result: ValueType) -> Result<(), Full> {
    put_bytes(sink, name.as_bytes())?;
    sink.put(&[u8::try_from(params.len()).map_err(|_| Full)?])?;
    for p in params {
        sink.put(&[p.tag()])?;
    }
    sink.put(&[result.tag()])
}

/// Decodes a function table (the body of the first `RETURN`), calling `each` for every export
/// and then every import, in order.
pub fn read_table<'a, E>(
    body: &'a [u8],
    mut each: impl FnMut(Direction, FunctionRef<'a>) -> Result<(), E>,
) -> Result<Result<(), E>, DecodeError> {
    let mut r = Reader::new(body);
    for direction in [Direction::Export, Direction::Import] {
        let count = r.u32()?;
        if usize::try_from(count).map_or(true, |c| c > MAX_EXPORTS) {
            return Err(DecodeError::TooMany(u64::from(count)));
        }
        for _ in 0..count {
            let name = r.name()?;
            let n = usize::from(r.u8()?);
            if n > MAX_PARAMS {
                return Err(DecodeError::TooMany(n as u64));
            }
            let params = r.take(n)?;
            if let Some(&bad) = params.iter().find(|&&t| ValueType::from_tag(t).is_none()) {
                return Err(DecodeError::UnknownTag(bad));
            }
            let result = r.value_type()?;
            if let Err(e) = each(direction, FunctionRef { name, params, result }) {
                return Ok(Err(e));
            }
        }
    }
    r.finish()?;
    Ok(Ok(()))
}

/// Decodes the head of a call: function index and argument count. The values follow in `Reader`.
pub fn read_call_head<'a>(body: &'a [u8]) -> Result<(u32, usize, Reader<'a>), DecodeError> {
    let mut r = Reader::new(body);
    let index = r.u32()?;
    let argc = r.arg_count()?;
    Ok((index, argc, r))
}

/// Decodes the head of a host call: name and argument count. The values follow in `Reader`.
pub fn read_host_call_head<'a>(body: &'a [u8]) -> Result<(&'a str, usize, Reader<'a>), DecodeError> {
    let mut r = Reader::new(body);
    let name = r.name()?;
    let argc = r.arg_count()?;
    Ok((name, argc, r))
}

/// Writes an abort message.
pub fn put_abort(sink: &mut impl Sink, code: u32, message: &[u8]) -> Result<(), Full> {
    sink.put(&code.to_le_bytes())?;
    put_bytes(sink, message)
}

/// Decodes an abort message: code and message bytes.
pub fn read_abort(body: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let code = r.u32()?;
    let message = r.bytes()?;
    r.finish()?;
    Ok((code, message))
}

/// Writes a log message.
pub fn put_log(sink: &mut impl Sink, level: u8, message: &[u8]) -> Result<(), Full> {
    sink.put(&[level])?;
    put_bytes(sink, message)
}

/// Decodes a log message: level and message bytes.
pub fn read_log(body: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let level = r.u8()?;
    let message = r.bytes()?;
    r.finish()?;
    Ok((level, message))
}

/// A `fmt::Write` into a fixed slice that keeps what fits and drops the rest, so text frames are
/// written without allocating (the guest's log and panic paths) and never overflow their buffer.
#[derive(Debug)]
pub struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Truncating<'a> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Truncating { buf, len: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let mut n = s.len().min(room);
        // Cut at a character boundary, so the kept text stays UTF-8.
        while !s.is_char_boundary(n) {
            n = n.saturating_sub(1);
        }
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len.saturating_add(n)), s.as_bytes().get(..n))
        {
            dst.copy_from_slice(src);
            self.len = self.len.saturating_add(n);
        }
        Ok(())
    }
}

/// Writes a frame whose body is `head` and then a bytes field holding `text` formatted, cut to
/// what fits in `buf`; returns the frame's length. The log and abort messages are such frames.
fn write_text_frame(buf: &mut [u8], head: &[u8], text: core::fmt::Arguments<'_>) -> Result<usize, Full> {
    let fixed = LEN_PREFIX.checked_add(head.len()).and_then(|n| n.checked_add(4)).ok_or(Full)?;
    let (frame_head, rest) = buf.split_at_mut_checked(fixed).ok_or(Full)?;
    let mut w = Truncating::new(rest);
    let _ = core::fmt::write(&mut w, text);
    let n = u32::try_from(w.len()).map_err(|_| Full)?;
    let body =
        u32::try_from(head.len()).ok().and_then(|h| h.checked_add(4)).and_then(|h| h.checked_add(n)).ok_or(Full)?;
    let mut s = SliceSink::new(frame_head);
    s.put(&body.to_le_bytes())?;
    s.put(head)?;
    s.put(&n.to_le_bytes())?;
    fixed.checked_add(w.len()).ok_or(Full)
}

/// Writes a log frame (level, message) into `buf` without allocating; a message longer than the
/// buffer is cut. Returns the frame's length.
pub fn write_log_frame(
    buf: &mut [u8],
    level: crate::code::LogLevel,
    text: core::fmt::Arguments<'_>,
) -> Result<usize, Full> {
    write_text_frame(buf, &[level.number()], text)
}

/// Writes an abort frame (code, message) into `buf` without allocating; a message longer than the
/// buffer is cut. Returns the frame's length.
pub fn write_abort_frame(
    buf: &mut [u8],
    code: crate::code::AbortCode,
    text: core::fmt::Arguments<'_>,
) -> Result<usize, Full> {
    write_text_frame(buf, &code.number().to_le_bytes(), text)
}

/// Writes a frame into `buf`: the body produced by `body`, preceded by its length.
pub fn write_frame(buf: &mut [u8], body: impl FnOnce(&mut SliceSink<'_>) -> Result<(), Full>) -> Result<usize, Full> {
    let (prefix, rest) = buf.split_at_mut_checked(LEN_PREFIX).ok_or(Full)?;
    let mut sink = SliceSink::new(rest);
    body(&mut sink)?;
    let len = sink.written();
    prefix.copy_from_slice(&u32::try_from(len).map_err(|_| Full)?.to_le_bytes());
    len.checked_add(LEN_PREFIX).ok_or(Full)
}

/// Builds a frame in a new vector: the body produced by `body`, preceded by its length.
#[cfg(feature = "alloc")]
pub fn frame_vec(body: impl FnOnce(&mut alloc::vec::Vec<u8>) -> Result<(), Full>) -> Result<alloc::vec::Vec<u8>, Full> {
    let mut v = alloc::vec![0u8; LEN_PREFIX];
    body(&mut v)?;
    let len = v.len().checked_sub(LEN_PREFIX).ok_or(Full)?;
    let len = u32::try_from(len).map_err(|_| Full)?;
    v.get_mut(..LEN_PREFIX).ok_or(Full)?.copy_from_slice(&len.to_le_bytes());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_what_was_refused() {
        extern crate alloc;
        use alloc::string::ToString;
        let cases = [
            (DecodeError::Truncated, "message is truncated".to_string()),
            (
                DecodeError::FrameTooLarge { len: 9, capacity: 4 },
                "frame announces 9 bytes but the buffer holds 4".to_string(),
            ),
            (DecodeError::UnknownTag(10), "unknown value tag 10".to_string()),
            (DecodeError::BadBool(2), "boolean byte 2 is neither 0 nor 1".to_string()),
            (DecodeError::BadStatus(7), "unknown status byte 7".to_string()),
            (DecodeError::BadUtf8, "text is not valid UTF-8".to_string()),
            (DecodeError::NameTooLong(300), alloc::format!("name of 300 bytes exceeds the limit of {MAX_NAME_LEN}")),
            (DecodeError::TooMany(17), "count 17 exceeds the limit".to_string()),
            (DecodeError::TrailingBytes(3), "3 unexpected bytes after the message".to_string()),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn values_round_trip() {
        let mut buf = [0u8; 256];
        let values = [
            ValueRef::Unit,
            ValueRef::I32(-5),
            ValueRef::U32(7),
            ValueRef::I64(i64::MIN),
            ValueRef::U64(u64::MAX),
            ValueRef::F32(1.5),
            ValueRef::F64(-0.25),
            ValueRef::Bool(true),
            ValueRef::String("héllo"),
            ValueRef::Bytes(&[0, 1, 255]),
        ];
        let n = write_frame(&mut buf, |s| {
            for v in values {
                put_value(s, v)?;
            }
            Ok(())
        })
        .unwrap();
        let len = frame_len(buf[..4].try_into().unwrap(), buf.len()).unwrap();
        assert_eq!(len + 4, n);
        let mut r = Reader::new(&buf[4..n]);
        for v in values {
            assert_eq!(r.value().unwrap(), v);
        }
        r.finish().unwrap();
    }

    #[test]
    fn hostile_bytes_are_refused() {
        assert_eq!(Reader::new(&[99]).value(), Err(DecodeError::UnknownTag(99)));
        assert_eq!(Reader::new(&[7, 2]).value(), Err(DecodeError::BadBool(2)));
        assert_eq!(Reader::new(&[8, 255, 255, 255, 255, b'a']).value(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[8, 2, 0, 0, 0, 0xff, 0xfe]).value(), Err(DecodeError::BadUtf8));
        assert!(matches!(frame_len(u32::MAX.to_le_bytes(), 64), Err(DecodeError::FrameTooLarge { .. })));
        assert_eq!(read_outcome(&[0, 0, 1]), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(read_outcome(&[3]), Err(DecodeError::BadStatus(3)));
        assert_eq!(read_call_head(&[0, 0, 0, 0, 17, 0, 0, 0]).map(|(i, n, _)| (i, n)), Err(DecodeError::TooMany(17)));
    }

    #[test]
    fn full_buffer_is_reported() {
        let mut buf = [0u8; 8];
        assert_eq!(write_frame(&mut buf, |s| put_value(s, ValueRef::U64(1))), Err(Full));
    }

    #[test]
    fn function_tables_round_trip() {
        let mut buf = [0u8; 128];
        let n = write_frame(&mut buf, |s| {
            put_count(s, 2)?;
            put_function(s, "add", &[ValueType::I32, ValueType::I32], ValueType::I32)?;
            put_function(s, "hi", &[], ValueType::String)?;
            put_count(s, 1)?;
            put_function(s, "greeting", &[ValueType::String], ValueType::String)
        })
        .unwrap();
        let mut seen = [(Direction::Export, "", 0usize, ValueType::Unit); 3];
        let mut i = 0;
        read_table::<()>(&buf[4..n], |d, e| {
            seen[i] = (d, e.name, e.params().count(), e.result);
            i += 1;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            seen,
            [
                (Direction::Export, "add", 2, ValueType::I32),
                (Direction::Export, "hi", 0, ValueType::String),
                (Direction::Import, "greeting", 1, ValueType::String)
            ]
        );
    }

    #[test]
    fn a_table_may_hold_exactly_max_exports_functions_and_no_more() {
        extern crate alloc;
        let table = |exports: usize| {
            let mut buf = alloc::vec![0u8; 16 * (MAX_EXPORTS + 2)];
            let n = write_frame(&mut buf, |s| {
                put_count(s, exports)?;
                for _ in 0..exports {
                    put_function(s, "f", &[], ValueType::Unit)?;
                }
                put_count(s, 0)
            })
            .unwrap();
            buf.truncate(n);
            buf
        };
        let full = table(MAX_EXPORTS);
        let mut seen = 0;
        read_table::<()>(&full[LEN_PREFIX..], |_, _| {
            seen += 1;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, MAX_EXPORTS);
        let over = table(MAX_EXPORTS + 1);
        assert_eq!(
            read_table::<()>(&over[LEN_PREFIX..], |_, _| Ok(())),
            Err(DecodeError::TooMany(MAX_EXPORTS as u64 + 1))
        );
    }

    #[test]
    fn truncating_writers_count_what_they_kept() {
        use core::fmt::Write as _;
        let mut buf = [0u8; 4];
        let mut w = Truncating::new(&mut buf);
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        w.write_str("héllo").unwrap();
        assert!(!w.is_empty());
        assert_eq!(w.len(), 4);
        assert_eq!(&buf, "hél".as_bytes());
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(Full.to_string(), "message does not fit in the buffer");
    }

    #[test]
    fn text_frames_are_cut_to_their_buffer_at_a_character_boundary() {
        // 9 bytes of frame head leave 2 for the text: `h`, and not half of `é`.
        let mut buf = [0u8; 11];
        let n = write_log_frame(&mut buf, crate::code::LogLevel::Warn, format_args!("héllo")).unwrap();
        assert_eq!(n, 10);
        assert_eq!(read_log(&buf[LEN_PREFIX..n]).unwrap(), (2, &b"h"[..]));
        let mut buf = [0u8; 20];
        let n = write_log_frame(&mut buf, crate::code::LogLevel::Warn, format_args!("héllo wörld")).unwrap();
        assert_eq!(read_log(&buf[LEN_PREFIX..n]).unwrap(), (2, "héllo wör".as_bytes()));
        let mut buf = [0u8; 64];
        let n = write_abort_frame(&mut buf, crate::code::AbortCode::Panic, format_args!("boom {}", 7)).unwrap();
        assert_eq!(read_abort(&buf[LEN_PREFIX..n]).unwrap(), (1, &b"boom 7"[..]));
        assert_eq!(write_log_frame(&mut [0u8; 8], crate::code::LogLevel::Info, format_args!("x")), Err(Full));
    }
}
