//! Host functions: Rust closures registered by name that a guest may call.

use super::value::{GuestValue, Signature};
use glint_abi::wire::Reader;
use glint_abi::{Value, ValueType};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Boxed error a host function may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a host function may return: a value, or `Result<value, E>` where `E` converts into a
/// boxed error. An `Err` is reported to the guest, which may handle it; if the guest call then
/// fails, the caller gets `Error::HostFunction` with this error as its source.
pub trait HostResult: Send + 'static {
    /// The wire type of the success value.
    const TYPE: ValueType;
    #[doc(hidden)]
    fn into_result(self) -> Result<Value, BoxError>;
}

impl<T: GuestValue> HostResult for T {
    const TYPE: ValueType = T::TYPE;
    fn into_result(self) -> Result<Value, BoxError> {
        Ok(self.into_value())
    }
}

impl<T: GuestValue, E: Into<BoxError> + Send + 'static> HostResult for Result<T, E> {
    const TYPE: ValueType = T::TYPE;
    fn into_result(self) -> Result<Value, BoxError> {
        self.map(GuestValue::into_value).map_err(Into::into)
    }
}

/// Why a host call did not produce a value.
#[derive(Debug)]
#[doc(hidden)]
pub enum HostCallFailure {
    /// The arguments did not match; the closure never ran.
    BadArguments(String),
    /// The closure returned an error.
    Failed(BoxError),
}

type Erased = dyn Fn(Reader<'_>, usize) -> Result<Value, HostCallFailure> + Send + Sync;

/// A closure usable as a host function: `Fn(A, B, ..) -> R` for up to 8 [`GuestValue`]
/// parameters, `Send + Sync` because sandboxes on many threads may share it.
pub trait HostFunction<Params, R>: Send + Sync + 'static {
    #[doc(hidden)]
    fn signature() -> Signature;
    #[doc(hidden)]
    fn call(&self, args: Reader<'_>, argc: usize) -> Result<Value, HostCallFailure>;
}

macro_rules! host_fn {
    ($n:expr; $($a:ident),*) => {
        impl<F, R, $($a,)*> HostFunction<($($a,)*), R> for F
        where
            F: Fn($($a),*) -> R + Send + Sync + 'static,
            R: HostResult,
            $($a: GuestValue,)*
        {
            fn signature() -> Signature {
                Signature { params: vec![$($a::TYPE),*], result: R::TYPE }
            }
            #[allow(non_snake_case, unused_mut, unused_variables, unused_assignments, reason = "macro")]
            fn call(&self, mut args: Reader<'_>, argc: usize) -> Result<Value, HostCallFailure> {
                if argc != $n {
                    return Err(HostCallFailure::BadArguments(format!("takes {} arguments, got {argc}", $n)));
                }
                let mut index = 0;
                $(
                    let v = args.value().map_err(|e| HostCallFailure::BadArguments(e.to_string()))?;
                    let $a = $a::from_value_ref(v).ok_or_else(|| HostCallFailure::BadArguments(
                        format!("argument {index} must be {}, got {}", $a::TYPE, v.ty())))?;
                    index += 1;
                )*
                args.finish().map_err(|e| HostCallFailure::BadArguments(e.to_string()))?;
                (self)($($a),*).into_result().map_err(HostCallFailure::Failed)
            }
        }
    };
}
host_fn!(0;);
host_fn!(1; A1);
host_fn!(2; A1, A2);
host_fn!(3; A1, A2, A3);
host_fn!(4; A1, A2, A3, A4);
host_fn!(5; A1, A2, A3, A4, A5);
host_fn!(6; A1, A2, A3, A4, A5, A6);
host_fn!(7; A1, A2, A3, A4, A5, A6, A7);
host_fn!(8; A1, A2, A3, A4, A5, A6, A7, A8);

#[derive(Clone)]
pub(crate) struct RegisteredFn {
    pub(crate) signature: Signature,
    pub(crate) call: Arc<Erased>,
}

/// The host functions of a sandbox, by name. Cheap to clone (the closures are shared).
#[derive(Clone, Default)]
pub(crate) struct HostFunctions {
    map: HashMap<String, RegisteredFn>,
}

impl fmt::Debug for HostFunctions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.map.iter().map(|(k, v)| (k, v.signature.to_string()))).finish()
    }
}

impl HostFunctions {
    pub(crate) fn insert<P, R, F: HostFunction<P, R>>(&mut self, name: &str, f: F) {
        let call: Arc<Erased> = Arc::new(move |args, argc| f.call(args, argc));
        self.map.insert(name.to_owned(), RegisteredFn { signature: F::signature(), call });
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredFn> {
        self.map.get(name)
    }
}
