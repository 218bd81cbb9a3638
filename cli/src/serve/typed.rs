//! Typed calls over HTTP: a JSON array of arguments parsed by the export's declared signature,
//! and the result as JSON.
//!
//! | type | JSON argument | JSON result |
//! | --- | --- | --- |
//! | `i32` `u32` `i64` `u64` | an integer literal in range (no fraction, no exponent) | a number |
//! | `f32` `f64` | a number, or the strings `"NaN"`, `"inf"`, `"-inf"` (JSON has none of those) | a number, or one of those strings |
//! | `bool` | `true` / `false` | same |
//! | `String` | a string | same |
//! | `Vec<u8>` | base64, standard alphabet with padding (RFC 4648 section 4) | same |
//! | `()` | `null` | `null` |

use base64::Engine as _;
use glint::{Signature, Value, ValueType};
use serde_json::Value as Json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why the arguments of a typed call were refused (400). Each names the parameter it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The body is not JSON.
    #[error("the body is not JSON ({detail}); send a JSON array of arguments (JSON has no NaN or Infinity: pass \"NaN\", \"inf\" or \"-inf\" as strings)")]
    NotJson {
        /// serde_json's explanation, with line and column.
        detail: String,
    },
    /// The body is JSON but not an array.
    #[error("the body must be a JSON array of arguments, got {got}")]
    NotArray {
        /// What it was.
        got: &'static str,
    },
    /// Too many or too few arguments.
    #[error("`{function}` takes {expected} argument(s) {signature}, got {got}")]
    WrongCount {
        /// The export.
        function: String,
        /// Its parameter count.
        expected: usize,
        /// Its signature.
        signature: String,
        /// Arguments sent.
        got: usize,
    },
    /// One argument does not fit its parameter.
    #[error("parameter {position} ({ty}): {problem}")]
    Param {
        /// 1-based position.
        position: usize,
        /// Its declared type.
        ty: ValueType,
        /// What is wrong.
        problem: String,
    },
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Parses the body of a typed call to `function` with signature `sig`. An empty body is `[]`.
///
/// # Errors
/// An [`ArgError`] naming the parameter.
pub fn parse_args(function: &str, sig: &Signature, body: &[u8]) -> Result<Vec<Value>, ArgError> {
    let json: Json = if body.iter().all(u8::is_ascii_whitespace) {
        Json::Array(Vec::new())
    } else {
        serde_json::from_slice(body).map_err(|e| ArgError::NotJson { detail: e.to_string() })?
    };
    let Json::Array(items) = json else { return Err(ArgError::NotArray { got: json_kind(&json) }) };
    if items.len() != sig.params.len() {
        return Err(ArgError::WrongCount {
            function: function.to_owned(),
            expected: sig.params.len(),
            signature: sig.to_string(),
            got: items.len(),
        });
    }
    sig.params.iter().zip(&items).enumerate().map(|(i, (ty, v))| parse_one(*ty, v, i + 1)).collect()
}

fn parse_one(ty: ValueType, v: &Json, position: usize) -> Result<Value, ArgError> {
    let bad = |problem: String| ArgError::Param { position, ty, problem };
    let expected = |what: &str| bad(format!("expected {what}, got {}", json_kind(v)));
    let int = |v: &Json| -> Result<i128, ArgError> {
        match v {
            Json::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .ok_or_else(|| bad(format!("{n} is not an integer"))),
            _ => Err(expected("an integer")),
        }
    };
    let ranged = |x: i128| bad(format!("{x} is out of range for {ty}"));
    Ok(match ty {
        ValueType::Unit => match v {
            Json::Null => Value::Unit,
            _ => return Err(expected("null")),
        },
        ValueType::I32 => {
            let x = int(v)?;
            Value::I32(i32::try_from(x).map_err(|_| ranged(x))?)
        }
        ValueType::U32 => {
            let x = int(v)?;
            Value::U32(u32::try_from(x).map_err(|_| ranged(x))?)
        }
        ValueType::I64 => {
            let x = int(v)?;
            Value::I64(i64::try_from(x).map_err(|_| ranged(x))?)
        }
        ValueType::U64 => {
            let x = int(v)?;
            Value::U64(u64::try_from(x).map_err(|_| ranged(x))?)
        }
        ValueType::F64 => Value::F64(float(v).map_err(bad)?),
        ValueType::F32 => {
            let x = float(v).map_err(bad)?;
            let narrowed = x as f32;
            if x.is_finite() && !narrowed.is_finite() {
                return Err(bad(format!("{x:e} is out of range for f32")));
            }
            Value::F32(narrowed)
        }
        ValueType::Bool => match v {
            Json::Bool(b) => Value::Bool(*b),
            _ => return Err(expected("true or false")),
        },
        ValueType::String => match v {
            Json::String(s) => Value::String(s.clone()),
            _ => return Err(expected("a string")),
        },
        ValueType::Bytes => match v {
            Json::String(s) => {
                Value::Bytes(B64.decode(s).map_err(|e| bad(format!("not base64 (standard alphabet, padded): {e}")))?)
            }
            _ => return Err(expected("a base64 string")),
        },
    })
}

fn float(v: &Json) -> Result<f64, String> {
    match v {
        Json::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "inf" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(format!("expected a number, \"NaN\", \"inf\" or \"-inf\", got the string {s:?}")),
        },
        other => Err(format!("expected a number, got {}", json_kind(other))),
    }
}

/// A result as JSON (see the module table).
pub fn to_json(v: &Value) -> Json {
    let float = |x: f64| {
        if x.is_nan() {
            Json::from("NaN")
        } else if x.is_infinite() {
            Json::from(if x > 0.0 { "inf" } else { "-inf" })
        } else {
            Json::from(x)
        }
    };
    match v {
        Value::Unit => Json::Null,
        Value::I32(x) => Json::from(*x),
        Value::U32(x) => Json::from(*x),
        Value::I64(x) => Json::from(*x),
        Value::U64(x) => Json::from(*x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => Json::from(*x),
        Value::String(s) => Json::from(s.as_str()),
        Value::Bytes(b) => Json::from(B64.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(params: &[ValueType], result: ValueType) -> Signature {
        Signature { params: params.to_vec(), result }
    }

    fn err(params: &[ValueType], body: &str) -> String {
        parse_args("f", &sig(params, ValueType::Unit), body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn arguments_parse_by_declared_type() {
        use ValueType as T;
        let s = sig(&[T::I32, T::U64, T::F32, T::Bool, T::String, T::Bytes, T::Unit, T::F64], T::Unit);
        let body = r#"[-5, 18446744073709551615, 1.5, true, "hé", "AP8Q", null, "-inf"]"#.as_bytes();
        assert_eq!(
            parse_args("f", &s, body).unwrap(),
            vec![
                Value::I32(-5),
                Value::U64(u64::MAX),
                Value::F32(1.5),
                Value::Bool(true),
                Value::String("hé".into()),
                Value::Bytes(vec![0, 0xff, 0x10]),
                Value::Unit,
                Value::F64(f64::NEG_INFINITY),
            ]
        );
        assert_eq!(parse_args("f", &sig(&[], T::Unit), b"").unwrap(), vec![]);
        assert_eq!(parse_args("f", &sig(&[], T::Unit), b" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn every_refusal_names_the_parameter() {
        use ValueType as T;
        assert_eq!(err(&[T::I32, T::I32], "[1, 2147483648]"), "parameter 2 (i32): 2147483648 is out of range for i32");
        assert_eq!(err(&[T::U32], "[-1]"), "parameter 1 (u32): -1 is out of range for u32");
        assert_eq!(err(&[T::I64], "[1.5]"), "parameter 1 (i64): 1.5 is not an integer");
        assert_eq!(err(&[T::U64], "[1e3]"), "parameter 1 (u64): 1000.0 is not an integer");
        assert_eq!(
            err(&[T::U64], "[18446744073709551616]"),
            "parameter 1 (u64): 1.8446744073709552e+19 is not an integer"
        );
        assert_eq!(err(&[T::I32], "[\"1\"]"), "parameter 1 (i32): expected an integer, got a string");
        assert_eq!(err(&[T::F32], "[1e300]"), "parameter 1 (f32): 1e300 is out of range for f32");
        assert_eq!(
            err(&[T::F64], "[\"nan\"]"),
            "parameter 1 (f64): expected a number, \"NaN\", \"inf\" or \"-inf\", got the string \"nan\""
        );
        assert!(err(&[T::Bytes], "[\"!!\"]").starts_with("parameter 1 (Vec<u8>): not base64"));
        assert!(err(&[T::Bytes], "[\"AP8\"]").starts_with("parameter 1 (Vec<u8>): not base64"), "padding is required");
        assert_eq!(err(&[T::Bool], "[1]"), "parameter 1 (bool): expected true or false, got a number");
        assert_eq!(err(&[T::I32, T::I32], "[1]"), "`f` takes 2 argument(s) (i32, i32) -> (), got 1");
        assert_eq!(err(&[T::I32], "{\"a\": 1}"), "the body must be a JSON array of arguments, got an object");
        assert!(err(&[T::F64], "[NaN]").starts_with("the body is not JSON (expected value at line 1 column 2)"));
    }

    #[test]
    fn results_are_json() {
        assert_eq!(to_json(&Value::U64(u64::MAX)).to_string(), "18446744073709551615");
        assert_eq!(to_json(&Value::F32(f32::NAN)).to_string(), "\"NaN\"");
        assert_eq!(to_json(&Value::F64(2.5)).to_string(), "2.5");
        assert_eq!(to_json(&Value::Bytes(vec![0, 0xff, 0x10])).to_string(), "\"AP8Q\"");
        assert_eq!(to_json(&Value::Unit).to_string(), "null");
    }
}
