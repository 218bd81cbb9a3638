//! Rust types on the wire, written once for the host and the guest.
//!
//! [`ToWire`] borrows a Rust value as a [`ValueRef`] to encode; [`FromWire`] turns a decoded
//! `ValueRef` back into a Rust value. Both carry the [`ValueType`] through [`WireType`], so a
//! function's signature is known at compile time. Parameter lists are tuples of up to eight such
//! types: [`EncodeParams`] writes them as a call's arguments, [`DecodeParams`] checks and reads
//! them. The host (calling guest functions, serving host calls) and the guest library (serving
//! calls, calling the host) both use exactly these impls.

use crate::value::{ValueRef, ValueType};
use crate::wire::{self, DecodeError, Full, Reader, Sink};
use core::fmt;

/// A Rust type with a wire type.
pub trait WireType {
    /// Its wire type.
    const TYPE: ValueType;
}

/// A value that can be encoded: results of guest functions and host functions, arguments of calls.
pub trait ToWire: WireType {
    /// Borrows the value for encoding.
    fn to_wire(&self) -> ValueRef<'_>;
}

/// A value that can be decoded: parameters of functions, results of calls.
pub trait FromWire: WireType + Sized {
    /// Converts, or `None` when the value has another type.
    fn from_wire(v: ValueRef<'_>) -> Option<Self>;
}

macro_rules! scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl WireType for $t { const TYPE: ValueType = ValueType::$v; }
        impl ToWire for $t {
            fn to_wire(&self) -> ValueRef<'_> { ValueRef::$v(*self) }
        }
        impl FromWire for $t {
            fn from_wire(v: ValueRef<'_>) -> Option<Self> {
                match v { ValueRef::$v(x) => Some(x), _ => None }
            }
        }
    )*};
}
scalar!(i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64, bool => Bool);

impl WireType for () {
    const TYPE: ValueType = ValueType::Unit;
}
impl ToWire for () {
    fn to_wire(&self) -> ValueRef<'_> {
        ValueRef::Unit
    }
}
impl FromWire for () {
    fn from_wire(v: ValueRef<'_>) -> Option<Self> {
        matches!(v, ValueRef::Unit).then_some(())
    }
}

impl WireType for &str {
    const TYPE: ValueType = ValueType::String;
}
impl ToWire for &str {
    fn to_wire(&self) -> ValueRef<'_> {
        ValueRef::String(self)
    }
}
impl WireType for &[u8] {
    const TYPE: ValueType = ValueType::Bytes;
}
impl ToWire for &[u8] {
    fn to_wire(&self) -> ValueRef<'_> {
        ValueRef::Bytes(self)
    }
}

#[cfg(feature = "alloc")]
mod owned {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    impl WireType for String {
        const TYPE: ValueType = ValueType::String;
    }
    impl ToWire for String {
        fn to_wire(&self) -> ValueRef<'_> {
            ValueRef::String(self)
        }
    }
    impl FromWire for String {
        fn from_wire(v: ValueRef<'_>) -> Option<Self> {
            match v {
                ValueRef::String(s) => Some(s.into()),
                _ => None,
            }
        }
    }
    impl WireType for Vec<u8> {
        const TYPE: ValueType = ValueType::Bytes;
    }
    impl ToWire for Vec<u8> {
        fn to_wire(&self) -> ValueRef<'_> {
            ValueRef::Bytes(self)
        }
    }
    impl FromWire for Vec<u8> {
        fn from_wire(v: ValueRef<'_>) -> Option<Self> {
            match v {
                ValueRef::Bytes(b) => Some(b.into()),
                _ => None,
            }
        }
    }
}

/// Why arguments could not be read as a function's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Wrong number of arguments.
    Count {
        /// Parameters the function takes.
        expected: usize,
        /// Arguments that came.
        got: usize,
    },
    /// Argument `index` (from 0) has another type than its parameter.
    Type {
        /// Position of the argument.
        index: usize,
        /// The parameter's type.
        expected: ValueType,
        /// The argument's type.
        got: ValueType,
    },
    /// The arguments do not decode.
    Decode(DecodeError),
}

impl From<DecodeError> for ArgError {
    fn from(e: DecodeError) -> Self {
        ArgError::Decode(e)
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Count { expected, got } => write!(f, "takes {expected} arguments, got {got}"),
            ArgError::Type { index, expected, got } => write!(f, "argument {index} must be {expected}, got {got}"),
            ArgError::Decode(e) => write!(f, "arguments do not decode: {e}"),
        }
    }
}

impl core::error::Error for ArgError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ArgError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// A parameter list: a tuple of up to eight [`WireType`]s (`()` for none).
pub trait ParamTypes {
    /// Number of parameters.
    const COUNT: usize;
    /// The parameter types in order.
    const TYPES: &'static [ValueType];
}

/// A parameter list that can be encoded as a call's arguments.
pub trait EncodeParams: ParamTypes {
    /// Writes each argument in order.
    fn encode(&self, sink: &mut impl Sink) -> Result<(), Full>;
}

/// A parameter list that can be read from a call's arguments.
pub trait DecodeParams: ParamTypes + Sized {
    /// Reads exactly `argc` values from `args`, each of its parameter's type, and the end of the
    /// message.
    fn decode(args: Reader<'_>, argc: usize) -> Result<Self, ArgError>;
}

/// Reads argument `index` as a `T`.
fn arg<T: FromWire>(r: &mut Reader<'_>, index: usize) -> Result<T, ArgError> {
    let v = r.value()?;
    T::from_wire(v).ok_or(ArgError::Type { index, expected: T::TYPE, got: v.ty() })
}

macro_rules! params {
    ($n:expr; $($a:ident $i:tt),*) => {
        impl<$($a: WireType),*> ParamTypes for ($($a,)*) {
            const COUNT: usize = $n;
            const TYPES: &'static [ValueType] = &[$($a::TYPE),*];
        }
        impl<$($a: ToWire),*> EncodeParams for ($($a,)*) {
            #[allow(unused_variables, reason = "macro")]
            fn encode(&self, sink: &mut impl Sink) -> Result<(), Full> {
                $(wire::put_value(sink, self.$i.to_wire())?;)*
                Ok(())
            }
        }
        impl<$($a: FromWire),*> DecodeParams for ($($a,)*) {
            #[allow(unused_mut, reason = "macro")]
            fn decode(mut args: Reader<'_>, argc: usize) -> Result<Self, ArgError> {
                if argc != $n {
                    return Err(ArgError::Count { expected: $n, got: argc });
                }
                let decoded = ($(arg::<$a>(&mut args, $i)?,)*);
                args.finish()?;
                Ok(decoded)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    #[test]
    fn tuples_encode_and_decode_with_their_types() {
        assert_eq!(<(i32, String, Vec<u8>)>::TYPES, &[ValueType::I32, ValueType::String, ValueType::Bytes]);
        assert_eq!(<()>::COUNT, 0);
        let mut buf = Vec::new();
        (7i32, "héllo", &[1u8, 2][..]).encode(&mut buf).unwrap();
        let got = <(i32, String, Vec<u8>)>::decode(Reader::new(&buf), 3).unwrap();
        assert_eq!(got, (7, String::from("héllo"), alloc::vec![1, 2]));
        assert_eq!(
            <(i32, String, Vec<u8>)>::decode(Reader::new(&buf), 2),
            Err(ArgError::Count { expected: 3, got: 2 })
        );
        assert_eq!(
            <(i32, u32)>::decode(Reader::new(&buf), 2),
            Err(ArgError::Type { index: 1, expected: ValueType::U32, got: ValueType::String })
        );
        // Trailing bytes after the last argument are refused.
        assert_eq!(
            <(i32,)>::decode(Reader::new(&buf), 1).map(|_| ()),
            Err(ArgError::Decode(DecodeError::TrailingBytes(18)))
        );
    }

    #[test]
    fn unit_decodes_only_from_unit() {
        assert_eq!(<()>::from_wire(ValueRef::Unit), Some(()));
        assert_eq!(<()>::from_wire(ValueRef::U32(0)), None);
        assert_eq!(<()>::from_wire(ValueRef::Bytes(&[])), None);
    }

    /// The host shows these messages to embedders and HTTP clients, and reports the decode
    /// error as the source, so both are part of the contract.
    #[test]
    fn arg_errors_say_what_was_wrong_and_keep_the_decode_error_as_their_source() {
        use alloc::string::ToString;
        use core::error::Error as _;
        let count = ArgError::Count { expected: 2, got: 3 };
        assert_eq!(count.to_string(), "takes 2 arguments, got 3");
        assert!(count.source().is_none());
        let ty = ArgError::Type { index: 1, expected: ValueType::U32, got: ValueType::String };
        assert_eq!(ty.to_string(), "argument 1 must be u32, got String");
        assert!(ty.source().is_none());
        let decode = ArgError::Decode(DecodeError::BadBool(2));
        assert_eq!(decode.to_string(), "arguments do not decode: boolean byte 2 is neither 0 nor 1");
        let source = decode.source().expect("a decode error has a source");
        assert_eq!(source.to_string(), "boolean byte 2 is neither 0 nor 1");
    }
}
