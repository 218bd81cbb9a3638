//! The export table and the call dispatcher.

use crate::types::{FromValue, IntoResult};
use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;
use glint_abi::code;
use glint_abi::wire::{self, DecodeError, Full, Reader, SliceSink};
use glint_abi::ValueType;

/// Why arguments could not be turned into a function's parameters.
#[derive(Debug)]
pub enum ArgError {
    /// Wrong number of arguments.
    Count {
        /// Parameters the function takes.
        expected: usize,
        /// Arguments the host sent.
        got: usize,
    },
    /// Argument `index` has the wrong type.
    Type {
        /// Position of the argument.
        index: usize,
        /// The parameter's type.
        expected: ValueType,
    },
    /// The arguments do not decode.
    Decode(DecodeError),
}

impl From<DecodeError> for ArgError {
    fn from(e: DecodeError) -> Self {
        ArgError::Decode(e)
    }
}

impl core::fmt::Display for ArgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ArgError::Count { expected, got } => write!(f, "takes {expected} arguments, got {got}"),
            ArgError::Type { index, expected } => write!(f, "argument {index} must be {expected}"),
            ArgError::Decode(e) => write!(f, "arguments do not decode: {e}"),
        }
    }
}

/// A Rust function that can be exported: implemented for `Fn(A, B, ..) -> R` up to 8 parameters.
pub trait Handler<Args>: 'static {
    /// The parameter types in order.
    fn params() -> Vec<ValueType>;
    /// The result type.
    fn result() -> ValueType;
    /// Decodes `argc` arguments, calls the function, then hands the outcome encoder to `out`.
    ///
    /// The output buffer is reached only through `out`, after the function returned, because the
    /// function's own host calls use that buffer too.
    fn invoke(&self, args: Reader<'_>, argc: usize, out: &mut Output<'_>) -> Result<Result<(), Full>, ArgError>;
}

/// Gives an encoder access to the output buffer (see [`Handler::invoke`]).
pub type Output<'a> = dyn FnMut(&mut dyn FnMut(&mut SliceSink<'_>) -> Result<(), Full>) -> Result<(), Full> + 'a;

fn arg<T: FromValue>(r: &mut Reader<'_>, index: usize) -> Result<T, ArgError> {
    T::from_value(r.value()?).ok_or(ArgError::Type { index, expected: T::TYPE })
}

macro_rules! handler {
    ($n:expr; $($a:ident),*) => {
        impl<F, R, $($a,)*> Handler<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + 'static,
            R: IntoResult,
            $($a: FromValue,)*
        {
            fn params() -> Vec<ValueType> {
                alloc::vec![$($a::TYPE),*]
            }
            fn result() -> ValueType {
                R::TYPE
            }
            #[allow(non_snake_case, unused_mut, unused_variables, unused_assignments, reason = "macro")]
            fn invoke(
                &self,
                mut args: Reader<'_>,
                argc: usize,
                out: &mut Output<'_>,
            ) -> Result<Result<(), Full>, ArgError> {
                if argc != $n {
                    return Err(ArgError::Count { expected: $n, got: argc });
                }
                let mut index = 0;
                $(let $a: $a = arg(&mut args, index)?; index += 1;)*
                args.finish()?;
                let outcome = (self)($($a),*);
                Ok(out(&mut |sink| outcome.write_outcome(sink)))
            }
        }
    };
}
handler!(0;);
handler!(1; A1);
handler!(2; A1, A2);
handler!(3; A1, A2, A3);
handler!(4; A1, A2, A3, A4);
handler!(5; A1, A2, A3, A4, A5);
handler!(6; A1, A2, A3, A4, A5, A6);
handler!(7; A1, A2, A3, A4, A5, A6, A7);
handler!(8; A1, A2, A3, A4, A5, A6, A7, A8);

type Invoke = Box<dyn Fn(Reader<'_>, usize, &mut Output<'_>) -> Result<Result<(), Full>, ArgError>>;

struct Export {
    name: &'static str,
    params: Vec<ValueType>,
    result: ValueType,
    invoke: Invoke,
}

/// The functions a guest exports, in the order they were registered (the index is the call id).
pub struct Registry {
    exports: Vec<Export>,
}

impl core::fmt::Debug for Registry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.exports.iter().map(|e| e.name)).finish()
    }
}

impl Registry {
    #[doc(hidden)]
    pub fn new() -> Self {
        Registry { exports: Vec::new() }
    }

    /// Exports `f` under `name`.
    pub fn export<Args, F: Handler<Args>>(&mut self, name: &'static str, f: F) {
        self.exports.push(Export {
            name,
            params: F::params(),
            result: F::result(),
            invoke: Box::new(move |args, argc, out| f.invoke(args, argc, out)),
        });
    }

    /// Writes the export table body (see `glint_abi::wire`).
    pub(crate) fn write_table(&self, out: &mut SliceSink<'_>) -> Result<(), Full> {
        wire::put_exports_head(out, self.exports.len())?;
        for e in &self.exports {
            wire::put_export(out, e.name, &e.params, e.result)?;
        }
        Ok(())
    }

    /// Runs the call in `body`; its outcome goes to the output buffer through `out`.
    pub(crate) fn dispatch(&self, body: &[u8], out: &mut Output<'_>) -> Result<(), Full> {
        let (index, argc, args) = match wire::read_call_head(body) {
            Ok(head) => head,
            Err(e) => {
                let msg = format!("malformed call: {e}");
                return out(&mut |s| wire::put_err(s, code::call::BAD_ARGUMENTS, msg.as_bytes()));
            }
        };
        let Some(export) = usize::try_from(index).ok().and_then(|i| self.exports.get(i)) else {
            let msg = format!("no exported function has index {index}");
            return out(&mut |s| wire::put_err(s, code::call::NO_SUCH_FUNCTION, msg.as_bytes()));
        };
        match (export.invoke)(args, argc, out) {
            Ok(written) => written,
            Err(e) => {
                let msg = format!("`{}` {e}", export.name);
                out(&mut |s| wire::put_err(s, code::call::BAD_ARGUMENTS, msg.as_bytes()))
            }
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
