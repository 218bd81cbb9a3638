//! Conversions between Rust types and wire values.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Display;
use glint_abi::wire::{self, Full, Sink};
use glint_abi::{code, ValueRef, ValueType};

/// A type that can be decoded from a wire value (parameters of exports, results of host calls).
pub trait FromValue: Sized {
    /// Its wire type.
    const TYPE: ValueType;
    /// Converts, or `None` when the value has another type.
    fn from_value(v: ValueRef<'_>) -> Option<Self>;
}

/// A type that can be encoded as a wire value (results of exports, arguments of host calls).
pub trait ToValue {
    /// Its wire type.
    const TYPE: ValueType;
    /// Borrows the value for encoding.
    fn to_value(&self) -> ValueRef<'_>;
}

macro_rules! scalar {
    ($($t:ty => $variant:ident),*) => {$(
        impl FromValue for $t {
            const TYPE: ValueType = ValueType::$variant;
            fn from_value(v: ValueRef<'_>) -> Option<Self> {
                match v { ValueRef::$variant(x) => Some(x), _ => None }
            }
        }
        impl ToValue for $t {
            const TYPE: ValueType = ValueType::$variant;
            fn to_value(&self) -> ValueRef<'_> { ValueRef::$variant(*self) }
        }
    )*};
}
scalar!(i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64, bool => Bool);

impl FromValue for () {
    const TYPE: ValueType = ValueType::Unit;
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        matches!(v, ValueRef::Unit).then_some(())
    }
}
impl ToValue for () {
    const TYPE: ValueType = ValueType::Unit;
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Unit
    }
}
impl FromValue for String {
    const TYPE: ValueType = ValueType::String;
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::String(s) => Some(s.into()),
            _ => None,
        }
    }
}
impl ToValue for String {
    const TYPE: ValueType = ValueType::String;
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::String(self)
    }
}
impl ToValue for &str {
    const TYPE: ValueType = ValueType::String;
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::String(self)
    }
}
impl FromValue for Vec<u8> {
    const TYPE: ValueType = ValueType::Bytes;
    fn from_value(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Bytes(b) => Some(b.into()),
            _ => None,
        }
    }
}
impl ToValue for Vec<u8> {
    const TYPE: ValueType = ValueType::Bytes;
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Bytes(self)
    }
}
impl ToValue for &[u8] {
    const TYPE: ValueType = ValueType::Bytes;
    fn to_value(&self) -> ValueRef<'_> {
        ValueRef::Bytes(self)
    }
}

/// What an exported function may return: a value, or `Result<value, E: Display>`, whose error
/// reaches the caller as a "function failed" error with `E`'s message.
pub trait IntoResult {
    /// The wire type of the success value.
    const TYPE: ValueType;
    /// Writes the call outcome (a value or an error) to `sink`.
    fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full>;
}

impl<T: ToValue> IntoResult for T {
    const TYPE: ValueType = T::TYPE;
    fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full> {
        wire::put_ok(sink, self.to_value())
    }
}

impl<T: ToValue, E: Display> IntoResult for Result<T, E> {
    const TYPE: ValueType = T::TYPE;
    fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full> {
        match self {
            Ok(v) => wire::put_ok(sink, v.to_value()),
            Err(e) => {
                let message = alloc::format!("{e}");
                wire::put_err(sink, code::call::FUNCTION_FAILED, message.as_bytes())
            }
        }
    }
}
