//! The export table, the call dispatcher and the outcome an export reports.

use crate::host::HostCallError;
use alloc::boxed::Box;
use alloc::format;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::fmt::Display;
use glint_abi::code::CallError;
use glint_abi::convert::{ArgError, DecodeParams, ToWire, WireType};
use glint_abi::wire::{self, Full, Reader, Sink, SliceSink};
use glint_abi::ValueType;

/// What an exported function may return: a value, or `Result<value, E: Display>`, whose error
/// reaches the caller as the guest function's error with `E`'s message. An `E` that is a
/// [`HostCallError`] (as `?` on a host call passes on) is reported as a failed host call, so the
/// host can hand the caller the host function's own error.
pub trait IntoResult {
    /// The wire type of the success value.
    const TYPE: ValueType;
    /// Writes the call outcome (a value or an error) to `sink`.
    fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full>;
}

// One impl per wire type rather than a blanket one over `ToWire`, which would overlap with the
// impl for `Result` (glint-abi could one day implement `ToWire` for it).
macro_rules! plain_results {
    ($($t:ty),*) => {$(
        impl IntoResult for $t {
            const TYPE: ValueType = <$t as WireType>::TYPE;
            fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full> {
                wire::put_ok(sink, self.to_wire())
            }
        }
    )*};
}
plain_results!((), i32, u32, i64, u64, f32, f64, bool, alloc::string::String, Vec<u8>, &'static str);

impl<T: ToWire, E: Display + 'static> IntoResult for Result<T, E> {
    const TYPE: ValueType = T::TYPE;
    fn write_outcome(&self, sink: &mut impl Sink) -> Result<(), Full> {
        match self {
            Ok(v) => wire::put_ok(sink, v.to_wire()),
            Err(e) => {
                let code = match (e as &dyn core::any::Any).downcast_ref::<HostCallError>() {
                    Some(_) => CallError::HostCallFailed,
                    None => CallError::FunctionFailed,
                };
                let message = format!("{e}");
                wire::put_err(sink, code.number(), message.as_bytes())
            }
        }
    }
}

/// A Rust function that can be exported: implemented for `Fn(A, B, ..) -> R` up to 8 parameters.
pub trait Handler<Args>: 'static {
    /// The parameter types in order.
    fn params() -> &'static [ValueType];
    /// The result type.
    fn result() -> ValueType;
    /// Decodes `argc` arguments, calls the function, then hands the outcome encoder to `out`.
    ///
    /// The output buffer is reached only through `out`, after the function returned, because the
    /// function's own host calls use that buffer too.
    fn invoke(&self, args: Reader<'_>, argc: usize, out: &mut Output<'_>) -> Result<Result<(), Full>, ArgError>;
    /// Decodes `argc` arguments into owned values and returns the call, to run once the
    /// arguments' buffer is no longer borrowed: the dispatcher decodes straight from the input
    /// buffer, which the function's own host calls make the host overwrite.
    #[doc(hidden)]
    fn prepare(f: &Rc<Self>, args: Reader<'_>, argc: usize) -> Result<Pending, ArgError>
    where
        Self: Sized;
}

/// A call whose arguments are decoded, waiting to run (see [`Handler::prepare`]).
#[doc(hidden)]
pub type Pending = Box<dyn FnOnce(&mut Output<'_>) -> Result<(), Full>>;

/// Gives an encoder access to the output buffer (see [`Handler::invoke`]).
pub type Output<'a> = dyn FnMut(&mut dyn FnMut(&mut SliceSink<'_>) -> Result<(), Full>) -> Result<(), Full> + 'a;

macro_rules! handler {
    ($($a:ident),*) => {
        impl<F, R, $($a,)*> Handler<($($a,)*)> for F
        where
            F: Fn($($a),*) -> R + 'static,
            R: IntoResult,
            $($a: glint_abi::convert::FromWire + 'static,)*
        {
            fn params() -> &'static [ValueType] {
                <($($a,)*) as glint_abi::convert::ParamTypes>::TYPES
            }
            fn result() -> ValueType {
                R::TYPE
            }
            #[allow(non_snake_case, reason = "macro")]
            fn invoke(&self, args: Reader<'_>, argc: usize, out: &mut Output<'_>) -> Result<Result<(), Full>, ArgError> {
                let ($($a,)*) = <($($a,)*)>::decode(args, argc)?;
                let outcome = (self)($($a),*);
                Ok(out(&mut |sink| outcome.write_outcome(sink)))
            }
            #[allow(non_snake_case, reason = "macro")]
            fn prepare(f: &Rc<Self>, args: Reader<'_>, argc: usize) -> Result<Pending, ArgError> {
                let ($($a,)*) = <($($a,)*)>::decode(args, argc)?;
                let f = Rc::clone(f);
                Ok(Box::new(move |out: &mut Output<'_>| {
                    let outcome = (f)($($a),*);
                    out(&mut |sink| outcome.write_outcome(sink))
                }))
            }
        }
    };
}
handler!();
handler!(A1);
handler!(A1, A2);
handler!(A1, A2, A3);
handler!(A1, A2, A3, A4);
handler!(A1, A2, A3, A4, A5);
handler!(A1, A2, A3, A4, A5, A6);
handler!(A1, A2, A3, A4, A5, A6, A7);
handler!(A1, A2, A3, A4, A5, A6, A7, A8);

type Invoke = Box<dyn Fn(Reader<'_>, usize) -> Result<Pending, ArgError>>;

struct Export {
    name: &'static str,
    params: &'static [ValueType],
    result: ValueType,
    invoke: Invoke,
}

/// A host function the guest declares it imports (see [`imports!`](crate::imports)).
#[derive(Debug, Clone, Copy)]
pub struct Import {
    /// The host function's name.
    pub name: &'static str,
    /// Its parameter types.
    pub params: &'static [ValueType],
    /// Its result type.
    pub result: ValueType,
}

/// One [`imports!`](crate::imports) block's declarations. Each block places one of these in the
/// `glint_imports` link section, where the runtime finds them all (`__start_`/`__stop_` symbols),
/// so a guest may declare imports in any number of blocks, or none.
#[repr(C)]
#[derive(Debug)]
pub struct ImportBlock {
    ptr: *const Import,
    len: usize,
}

// SAFETY: an `ImportBlock` only ever points at a `&'static [Import]` (see `new`), which is
// immutable and `Sync` itself.
unsafe impl Sync for ImportBlock {}

impl ImportBlock {
    /// A block of `imports`.
    pub const fn new(imports: &'static [Import]) -> Self {
        ImportBlock { ptr: imports.as_ptr(), len: imports.len() }
    }

    /// The block's declarations.
    pub fn imports(&self) -> &'static [Import] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` and `len` come from a `&'static [Import]` in `new`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The functions a guest exports, in the order they were registered (the index is the call
/// id), and the host functions it imports.
pub struct Registry {
    exports: Vec<Export>,
    imports: Vec<Import>,
}

impl core::fmt::Debug for Registry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registry")
            .field("exports", &self.exports.iter().map(|e| e.name).collect::<Vec<_>>())
            .field("imports", &self.imports)
            .finish()
    }
}

impl Registry {
    #[doc(hidden)]
    pub fn new() -> Self {
        Registry { exports: Vec::new(), imports: Vec::new() }
    }

    /// Exports `f` under `name`.
    pub fn export<Args, F: Handler<Args>>(&mut self, name: &'static str, f: F) {
        self.exports.push(Export {
            name,
            params: F::params(),
            result: F::result(),
            invoke: {
                let f = Rc::new(f);
                Box::new(move |args, argc| F::prepare(&f, args, argc))
            },
        });
    }

    /// Declares imports (the runtime adds those of every [`imports!`](crate::imports) block).
    pub fn import(&mut self, imports: &[Import]) {
        self.imports.extend_from_slice(imports);
    }

    /// The declared imports.
    pub fn imports(&self) -> &[Import] {
        &self.imports
    }

    /// Writes the function table body: exports, then imports (see `glint_abi::wire`).
    pub(crate) fn write_table(&self, out: &mut SliceSink<'_>) -> Result<(), Full> {
        wire::put_count(out, self.exports.len())?;
        for e in &self.exports {
            wire::put_function(out, e.name, e.params, e.result)?;
        }
        wire::put_count(out, self.imports.len())?;
        for i in &self.imports {
            wire::put_function(out, i.name, i.params, i.result)?;
        }
        Ok(())
    }

    /// Decodes the call in `body` (the input buffer's frame, borrowed only for this) into the
    /// call to run; a malformed call becomes the error outcome to report.
    pub(crate) fn prepare(&self, body: &[u8]) -> Pending {
        let bad = |msg: alloc::string::String, code: CallError| -> Pending {
            Box::new(move |out: &mut Output<'_>| out(&mut |s| wire::put_err(s, code.number(), msg.as_bytes())))
        };
        let (index, argc, args) = match wire::read_call_head(body) {
            Ok(head) => head,
            Err(e) => return bad(format!("malformed call: {e}"), CallError::BadArguments),
        };
        let Some(export) = usize::try_from(index).ok().and_then(|i| self.exports.get(i)) else {
            return bad(format!("no exported function has index {index}"), CallError::NoSuchFunction);
        };
        match (export.invoke)(args, argc) {
            Ok(pending) => pending,
            Err(e) => bad(format!("`{}` {e}", export.name), CallError::BadArguments),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
