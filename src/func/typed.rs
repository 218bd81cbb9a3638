//! Typed handles to guest functions, checked once when created.

use crate::{Error, Sandbox};
use glint_abi::convert::{EncodeParams, FromWire};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A guest function whose signature was checked against `P -> R` when the handle was made
/// ([`Sandbox::typed_fn`]), so calls skip the check. Usable with any sandbox of the same image,
/// whatever its host-side data.
pub struct TypedFn<P, R> {
    index: u32,
    name: Arc<str>,
    image: u64,
    _types: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for TypedFn<P, R> {
    fn clone(&self) -> Self {
        TypedFn { index: self.index, name: Arc::clone(&self.name), image: self.image, _types: PhantomData }
    }
}

impl<P, R> fmt::Debug for TypedFn<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedFn").field("name", &self.name).field("index", &self.index).finish()
    }
}

impl<P: EncodeParams, R: FromWire> TypedFn<P, R> {
    pub(crate) fn new(index: u32, name: &str, image: u64) -> Self {
        TypedFn { index, name: name.into(), image, _types: PhantomData }
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn image_id(&self) -> u64 {
        self.image
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls the function in `sandbox`.
    ///
    /// # Errors
    /// Anything the guest does wrong during the call; [`Error::NoSuchFunction`] if `sandbox`
    /// runs another image than the one the handle was made for.
    pub fn call<T: 'static>(&self, sandbox: &mut Sandbox<T>, args: P) -> Result<R, Error> {
        sandbox.call_typed(self, &args)
    }
}
