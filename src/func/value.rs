//! Rust types that cross the boundary, and function signatures.

use glint_abi::wire::{self, Full, Sink};
use glint_abi::{Value, ValueRef, ValueType};
use std::fmt;

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can cross the boundary: `i32`, `u32`, `i64`, `u64`, `f32`, `f64`, `bool`,
/// `String`, `Vec<u8>` and `()`. Sealed: the wire format knows only these.
pub trait GuestValue: sealed::Sealed + Sized + Send + 'static {
    /// Its wire type.
    const TYPE: ValueType;
    #[doc(hidden)]
    fn as_value_ref(&self) -> ValueRef<'_>;
    #[doc(hidden)]
    fn from_value_ref(v: ValueRef<'_>) -> Option<Self>;
    #[doc(hidden)]
    fn into_value(self) -> Value;
}

macro_rules! scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl GuestValue for $t {
            const TYPE: ValueType = ValueType::$v;
            fn as_value_ref(&self) -> ValueRef<'_> { ValueRef::$v(*self) }
            fn from_value_ref(v: ValueRef<'_>) -> Option<Self> {
                match v { ValueRef::$v(x) => Some(x), _ => None }
            }
            fn into_value(self) -> Value { Value::$v(self) }
        }
    )*};
}
scalar!(i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64, bool => Bool);

impl sealed::Sealed for () {}
impl GuestValue for () {
    const TYPE: ValueType = ValueType::Unit;
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Unit
    }
    fn from_value_ref(v: ValueRef<'_>) -> Option<Self> {
        matches!(v, ValueRef::Unit).then_some(())
    }
    fn into_value(self) -> Value {
        Value::Unit
    }
}
impl sealed::Sealed for String {}
impl GuestValue for String {
    const TYPE: ValueType = ValueType::String;
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::String(self)
    }
    fn from_value_ref(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::String(s) => Some(s.to_owned()),
            _ => None,
        }
    }
    fn into_value(self) -> Value {
        Value::String(self)
    }
}
impl sealed::Sealed for Vec<u8> {}
impl GuestValue for Vec<u8> {
    const TYPE: ValueType = ValueType::Bytes;
    fn as_value_ref(&self) -> ValueRef<'_> {
        ValueRef::Bytes(self)
    }
    fn from_value_ref(v: ValueRef<'_>) -> Option<Self> {
        match v {
            ValueRef::Bytes(b) => Some(b.to_vec()),
            _ => None,
        }
    }
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}

/// A parameter list: a tuple of up to 8 [`GuestValue`]s (`()` for none).
pub trait GuestParams: Send + 'static {
    /// The parameter types in order.
    fn types() -> Vec<ValueType>;
    #[doc(hidden)]
    fn encode(&self, sink: &mut impl Sink) -> Result<(), Full>;
    #[doc(hidden)]
    fn count() -> usize;
}

macro_rules! params {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<$($a: GuestValue),*> GuestParams for ($($a,)*) {
            fn types() -> Vec<ValueType> { vec![$($a::TYPE),*] }
            #[allow(unused_variables, reason = "macro")]
            fn encode(&self, sink: &mut impl Sink) -> Result<(), Full> {
                $(wire::put_value(sink, self.$i.as_value_ref())?;)*
                Ok(())
            }
            fn count() -> usize { $n }
        }
    };
}
params!(0;);
params!(1; A 0);
params!(2; A 0, B 1);
params!(3; A 0, B 1, C 2);
params!(4; A 0, B 1, C 2, D 3);
params!(5; A 0, B 1, C 2, D 3, E 4);
params!(6; A 0, B 1, C 2, D 3, E 4, F 5);
params!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
params!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// A function's parameter and result types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Parameter types in order.
    pub params: Vec<ValueType>,
    /// Result type.
    pub result: ValueType,
}

impl Signature {
    /// The signature of a Rust function taking `P` and returning `R`.
    pub fn of<P: GuestParams, R: GuestValue>() -> Signature {
        Signature { params: P::types(), result: R::TYPE }
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        write!(f, ") -> {}", self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_reads_like_rust() {
        assert_eq!(Signature::of::<(i32, String), Vec<u8>>().to_string(), "(i32, String) -> Vec<u8>");
        assert_eq!(Signature::of::<(), ()>().to_string(), "() -> ()");
    }
}
