//! The value types that cross the boundary and their one-byte tags.

use core::fmt;

/// The type of a parameter or result. The discriminant is the tag on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueType {
    /// `()`: no payload.
    Unit = 0,
    /// `i32`: 4 bytes little-endian.
    I32 = 1,
    /// `u32`: 4 bytes little-endian.
    U32 = 2,
    /// `i64`: 8 bytes little-endian.
    I64 = 3,
    /// `u64`: 8 bytes little-endian.
    U64 = 4,
    /// `f32`: IEEE 754 bits, 4 bytes little-endian.
    F32 = 5,
    /// `f64`: IEEE 754 bits, 8 bytes little-endian.
    F64 = 6,
    /// `bool`: one byte, 0 or 1 (anything else is malformed).
    Bool = 7,
    /// UTF-8 text: u32 byte length, then the bytes.
    String = 8,
    /// Bytes: u32 length, then the bytes.
    Bytes = 9,
}

impl ValueType {
    /// Every value type, in tag order.
    pub const ALL: [ValueType; 10] = [
        ValueType::Unit,
        ValueType::I32,
        ValueType::U32,
        ValueType::I64,
        ValueType::U64,
        ValueType::F32,
        ValueType::F64,
        ValueType::Bool,
        ValueType::String,
        ValueType::Bytes,
    ];

    /// The type with this tag, if any.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag)).copied()
    }

    /// The tag on the wire.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The Rust spelling of the type, as users write it in signatures.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Unit => "()",
            ValueType::I32 => "i32",
            ValueType::U32 => "u32",
            ValueType::I64 => "i64",
            ValueType::U64 => "u64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
            ValueType::Bool => "bool",
            ValueType::String => "String",
            ValueType::Bytes => "Vec<u8>",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded value that borrows its text and bytes from the buffer it was read from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// `()`
    Unit,
    /// `i32`
    I32(i32),
    /// `u32`
    U32(u32),
    /// `i64`
    I64(i64),
    /// `u64`
    U64(u64),
    /// `f32`
    F32(f32),
    /// `f64`
    F64(f64),
    /// `bool`
    Bool(bool),
    /// `String`
    String(&'a str),
    /// `Vec<u8>`
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// The type of this value.
    pub fn ty(&self) -> ValueType {
        match self {
            ValueRef::Unit => ValueType::Unit,
            ValueRef::I32(_) => ValueType::I32,
            ValueRef::U32(_) => ValueType::U32,
            ValueRef::I64(_) => ValueType::I64,
            ValueRef::U64(_) => ValueType::U64,
            ValueRef::F32(_) => ValueType::F32,
            ValueRef::F64(_) => ValueType::F64,
            ValueRef::Bool(_) => ValueType::Bool,
            ValueRef::String(_) => ValueType::String,
            ValueRef::Bytes(_) => ValueType::Bytes,
        }
    }

    /// Copies the value out of its buffer.
    #[cfg(feature = "alloc")]
    pub fn to_owned_value(&self) -> Value {
        match *self {
            ValueRef::Unit => Value::Unit,
            ValueRef::I32(v) => Value::I32(v),
            ValueRef::U32(v) => Value::U32(v),
            ValueRef::I64(v) => Value::I64(v),
            ValueRef::U64(v) => Value::U64(v),
            ValueRef::F32(v) => Value::F32(v),
            ValueRef::F64(v) => Value::F64(v),
            ValueRef::Bool(v) => Value::Bool(v),
            ValueRef::String(v) => Value::String(v.into()),
            ValueRef::Bytes(v) => Value::Bytes(v.into()),
        }
    }
}

/// An owned value, for dynamic callers that do not know the types at compile time.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `()`
    Unit,
    /// `i32`
    I32(i32),
    /// `u32`
    U32(u32),
    /// `i64`
    I64(i64),
    /// `u64`
    U64(u64),
    /// `f32`
    F32(f32),
    /// `f64`
    F64(f64),
    /// `bool`
    Bool(bool),
    /// `String`
    String(alloc::string::String),
    /// `Vec<u8>`
    Bytes(alloc::vec::Vec<u8>),
}

#[cfg(feature = "alloc")]
impl Value {
    /// The type of this value.
    pub fn ty(&self) -> ValueType {
        self.as_value_ref().ty()
    }

    /// Borrows the value in the form the encoder takes.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Unit => ValueRef::Unit,
            Value::I32(v) => ValueRef::I32(*v),
            Value::U32(v) => ValueRef::U32(*v),
            Value::I64(v) => ValueRef::I64(*v),
            Value::U64(v) => ValueRef::U64(*v),
            Value::F32(v) => ValueRef::F32(*v),
            Value::F64(v) => ValueRef::F64(*v),
            Value::Bool(v) => ValueRef::Bool(*v),
            Value::String(v) => ValueRef::String(v),
            Value::Bytes(v) => ValueRef::Bytes(v),
        }
    }
}

#[cfg(feature = "alloc")]
impl fmt::Display for Value {
    /// Prints the value as the CLI shows it: numbers and text plainly, bytes as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unit => f.write_str("()"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => f.write_str(v),
            Value::Bytes(v) => {
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}
