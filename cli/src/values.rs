//! Guest values on the command line: parsed from text by their declared type, printed as text or
//! JSON.

use crate::failure::Failure;
use glint::{Value, ValueType};

/// Parses argument number `index` (from 0) as a `ty`: integers and floats in decimal, bool as
/// true/false, String as given, `Vec<u8>` as hex (an optional `0x` prefix).
pub fn parse(ty: ValueType, s: &str, index: usize) -> Result<Value, Failure> {
    let bad = || Failure::usage(format!("argument {} `{s}` is not a valid {ty}", index + 1));
    Ok(match ty {
        ValueType::Unit => Value::Unit,
        ValueType::I32 => Value::I32(s.parse().map_err(|_| bad())?),
        ValueType::U32 => Value::U32(s.parse().map_err(|_| bad())?),
        ValueType::I64 => Value::I64(s.parse().map_err(|_| bad())?),
        ValueType::U64 => Value::U64(s.parse().map_err(|_| bad())?),
        ValueType::F32 => Value::F32(s.parse().map_err(|_| bad())?),
        ValueType::F64 => Value::F64(s.parse().map_err(|_| bad())?),
        ValueType::Bool => Value::Bool(s.parse().map_err(|_| bad())?),
        ValueType::String => Value::String(s.to_owned()),
        ValueType::Bytes => Value::Bytes(parse_hex(s).ok_or_else(bad)?),
    })
}

/// Hex digits (an optional `0x` prefix) as bytes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// A value as JSON: numbers as numbers (non-finite floats as strings, which JSON lacks), text
/// as a string, bytes as a hex string, unit as null.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Unit => J::Null,
        Value::I32(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
        Value::F32(x) if x.is_finite() => J::from(f64::from(*x)),
        Value::F64(x) if x.is_finite() => J::from(*x),
        Value::Bool(x) => J::from(*x),
        Value::String(s) => J::from(s.as_str()),
        other => J::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_by_type_and_refuse_what_does_not_fit() {
        assert_eq!(parse(ValueType::I32, "-5", 0).unwrap(), Value::I32(-5));
        assert_eq!(parse(ValueType::Bytes, "0x00ff", 0).unwrap(), Value::Bytes(vec![0, 0xff]));
        assert!(parse(ValueType::U32, "-1", 0).is_err());
        assert!(parse(ValueType::I32, "2147483648", 0).is_err());
        assert!(parse(ValueType::Bytes, "abc", 0).is_err());
        assert_eq!(parse(ValueType::I32, "x", 1).unwrap_err().message, "argument 2 `x` is not a valid i32");
    }

    #[test]
    fn json_keeps_numbers_and_hexes_bytes() {
        assert_eq!(to_json(&Value::I32(-5)).to_string(), "-5");
        assert_eq!(to_json(&Value::U64(u64::MAX)).to_string(), "18446744073709551615");
        assert_eq!(to_json(&Value::F64(f64::NAN)).to_string(), "\"NaN\"");
        assert_eq!(to_json(&Value::Bytes(vec![0, 0xff])).to_string(), "\"00ff\"");
        assert_eq!(to_json(&Value::Unit).to_string(), "null");
    }
}
