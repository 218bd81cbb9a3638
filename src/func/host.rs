//! Host functions: Rust closures registered by name that a guest may call, optionally with a
//! [`Caller`] giving access to the sandbox's own host-side data.

use super::signature::Signature;
use glint_abi::convert::{ArgError, DecodeParams, FromWire, ParamTypes, ToWire, WireType};
use glint_abi::wire::{self, Reader};
use glint_abi::ValueType;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Boxed error a host function may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The first parameter a host function may take: the calling sandbox's host-side data (the `T`
/// of [`Sandbox<T>`](crate::Sandbox)), mutable for the length of the host call.
#[derive(Debug)]
pub struct Caller<'a, T> {
    data: &'a mut T,
}

impl<T> Caller<'_, T> {
    /// The sandbox's data.
    pub fn data(&self) -> &T {
        self.data
    }

    /// The sandbox's data, mutably.
    pub fn data_mut(&mut self) -> &mut T {
        self.data
    }

    /// Whether the guest call this host call serves has been killed or timed out: a long host
    /// function polls this and returns early ([`call_cancelled`](crate::call_cancelled)).
    pub fn cancelled(&self) -> bool {
        crate::call_cancelled()
    }
}

/// What a host function may return: a value, or `Result<value, E>` where `E` converts into a
/// boxed error. An `Err` is reported to the guest, which may handle it; if the guest then fails by
/// passing it on, the caller gets `Error::HostFunction` with this error as its source.
pub trait HostResult: Send + 'static {
    /// The wire type of the success value.
    const TYPE: ValueType;
    /// Writes the success outcome into `out`, or hands back the error.
    #[doc(hidden)]
    fn write_outcome(self, out: &mut Vec<u8>) -> Result<(), BoxError>;
}

// One impl per wire type rather than a blanket one over `ToWire`, which would overlap with the
// impl for `Result` (glint-abi could one day implement `ToWire` for it).
macro_rules! plain_results {
    ($($t:ty),*) => {$(
        impl HostResult for $t {
            const TYPE: ValueType = <$t as WireType>::TYPE;
            fn write_outcome(self, out: &mut Vec<u8>) -> Result<(), BoxError> {
                wire::put_ok(out, self.to_wire()).map_err(|_| "the result is too large to encode".into())
            }
        }
    )*};
}
plain_results!((), i32, u32, i64, u64, f32, f64, bool, String, Vec<u8>, &'static str);

impl<T: ToWire + Send + 'static, E: Into<BoxError> + Send + 'static> HostResult for Result<T, E> {
    const TYPE: ValueType = T::TYPE;
    fn write_outcome(self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let value = self.map_err(Into::into)?;
        wire::put_ok(out, value.to_wire()).map_err(|_| "the result is too large to encode".into())
    }
}

/// Why a host call did not produce a value.
#[derive(Debug)]
#[doc(hidden)]
pub enum HostCallFailure {
    /// The arguments did not match; the closure never ran.
    BadArguments(ArgError),
    /// The closure returned an error.
    Failed(BoxError),
}

/// A type a host function may take as a parameter: the wire types. (Local to glint, so the impls
/// for closures with and without a [`Caller`] cannot overlap.)
pub trait HostParam: FromWire + Send + 'static {}

macro_rules! host_params {
    ($($t:ty),*) => {$( impl HostParam for $t {} )*};
}
host_params!((), i32, u32, i64, u64, f32, f64, bool, String, Vec<u8>);

/// Marks, in [`HostFunction`]'s parameter list, a host function whose first parameter is a
/// [`Caller`].
#[doc(hidden)]
#[derive(Debug)]
pub enum WithCaller {}

/// A closure usable as a host function of a sandbox with data `T`: `Fn(A, B, ..) -> R`, or
/// `Fn(Caller<'_, T>, A, B, ..) -> R`, for up to 8 parameters of wire types; `Send + Sync`
/// because sandboxes on many threads may share it.
pub trait HostFunction<T, Params, R>: Send + Sync + 'static {
    #[doc(hidden)]
    fn signature() -> Signature;
    #[doc(hidden)]
    fn call(&self, data: &mut T, args: Reader<'_>, argc: usize, out: &mut Vec<u8>) -> Result<(), HostCallFailure>;
}

macro_rules! host_fn {
    ($($a:ident),*) => {
        impl<T, F, R, $($a,)*> HostFunction<T, ($($a,)*), R> for F
        where
            F: Fn($($a),*) -> R + Send + Sync + 'static,
            R: HostResult,
            $($a: HostParam,)*
        {
            fn signature() -> Signature {
                Signature { params: <($($a,)*) as ParamTypes>::TYPES.to_vec(), result: R::TYPE }
            }
            #[allow(non_snake_case, reason = "macro")]
            fn call(&self, _data: &mut T, args: Reader<'_>, argc: usize, out: &mut Vec<u8>) -> Result<(), HostCallFailure> {
                let ($($a,)*) = <($($a,)*)>::decode(args, argc).map_err(HostCallFailure::BadArguments)?;
                (self)($($a),*).write_outcome(out).map_err(HostCallFailure::Failed)
            }
        }

        impl<T, F, R, $($a,)*> HostFunction<T, (WithCaller, $($a,)*), R> for F
        where
            F: Fn(Caller<'_, T>, $($a),*) -> R + Send + Sync + 'static,
            R: HostResult,
            $($a: HostParam,)*
        {
            fn signature() -> Signature {
                Signature { params: <($($a,)*) as ParamTypes>::TYPES.to_vec(), result: R::TYPE }
            }
            #[allow(non_snake_case, reason = "macro")]
            fn call(&self, data: &mut T, args: Reader<'_>, argc: usize, out: &mut Vec<u8>) -> Result<(), HostCallFailure> {
                let ($($a,)*) = <($($a,)*)>::decode(args, argc).map_err(HostCallFailure::BadArguments)?;
                (self)(Caller { data }, $($a),*).write_outcome(out).map_err(HostCallFailure::Failed)
            }
        }
    };
}
host_fn!();
host_fn!(A1);
host_fn!(A1, A2);
host_fn!(A1, A2, A3);
host_fn!(A1, A2, A3, A4);
host_fn!(A1, A2, A3, A4, A5);
host_fn!(A1, A2, A3, A4, A5, A6);
host_fn!(A1, A2, A3, A4, A5, A6, A7);
host_fn!(A1, A2, A3, A4, A5, A6, A7, A8);

type Erased<T> = dyn Fn(&mut T, Reader<'_>, usize, &mut Vec<u8>) -> Result<(), HostCallFailure> + Send + Sync;

/// One registered host function.
pub(crate) struct RegisteredFn<T> {
    pub(crate) signature: Signature,
    pub(crate) call: Arc<Erased<T>>,
}

impl<T> Clone for RegisteredFn<T> {
    fn clone(&self) -> Self {
        RegisteredFn { signature: self.signature.clone(), call: Arc::clone(&self.call) }
    }
}

/// The host functions of a sandbox, by name. Cheap to clone (the closures are shared).
pub(crate) struct HostFunctions<T> {
    map: HashMap<String, RegisteredFn<T>>,
}

impl<T> Clone for HostFunctions<T> {
    fn clone(&self) -> Self {
        HostFunctions { map: self.map.clone() }
    }
}

impl<T> Default for HostFunctions<T> {
    fn default() -> Self {
        HostFunctions { map: HashMap::new() }
    }
}

impl<T> fmt::Debug for HostFunctions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter().map(|(k, v)| (k, v.signature.to_string()))).finish()
    }
}

impl<T: 'static> HostFunctions<T> {
    pub(crate) fn insert<P, R, F: HostFunction<T, P, R>>(&mut self, name: &str, f: F) {
        let call: Arc<Erased<T>> = Arc::new(move |data, args, argc, out| f.call(data, args, argc, out));
        self.map.insert(name.to_owned(), RegisteredFn { signature: F::signature(), call });
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredFn<T>> {
        self.map.get(name)
    }
}
