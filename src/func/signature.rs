//! Function signatures.

use glint_abi::convert::{ParamTypes, WireType};
use glint_abi::ValueType;
use std::fmt;

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
    pub fn of<P: ParamTypes, R: WireType>() -> Signature {
        Signature { params: P::TYPES.to_vec(), result: R::TYPE }
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
