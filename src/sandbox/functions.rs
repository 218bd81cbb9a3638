//! The guest's function table: what it exports (callable by the host) and what it imports (host
//! functions it declares it will call), decoded from the first `RETURN` and checked.

use crate::error::{sanitize, unprintable, ImportError, ImportErrors, Message, ProtocolError};
use crate::func::host::HostFunctions;
use crate::func::{Signature, TypedFn};
use crate::Error;
use glint_abi::convert::{EncodeParams, FromWire};
use glint_abi::wire::{self, Direction};
use std::collections::HashMap;

/// A function the guest exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name.
    pub name: String,
    /// Its signature.
    pub signature: Signature,
}

/// A host function the guest declares it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Its name.
    pub name: String,
    /// The signature the guest calls it with.
    pub signature: Signature,
}

/// What the guest declared at initialisation.
#[derive(Debug, Default)]
pub(crate) struct Functions {
    pub(crate) exports: Vec<Export>,
    by_name: HashMap<String, u32>,
    pub(crate) imports: Vec<Import>,
    /// The table as the guest wrote it (what a snapshot file stores).
    pub(crate) table: Vec<u8>,
}

impl Functions {
    /// Decodes the function table in `body`.
    pub(crate) fn parse(body: &[u8]) -> Result<Functions, ProtocolError> {
        let mut f = Functions { table: body.to_vec(), ..Functions::default() };
        let mut imported = HashMap::new();
        let parsed = wire::read_table(body, |direction, e| {
            // Names reach terminals and logs: refuse unprintable characters outright.
            if e.name.is_empty() || e.name.chars().any(unprintable) {
                return Err(ProtocolError::BadName { name: sanitize(e.name.as_bytes()) });
            }
            let signature = Signature { params: e.params().collect(), result: e.result };
            let duplicate = || ProtocolError::Duplicate { name: e.name.to_owned() };
            match direction {
                Direction::Export => {
                    let index = u32::try_from(f.exports.len()).map_err(|_| duplicate())?;
                    if f.by_name.insert(e.name.to_owned(), index).is_some() {
                        return Err(duplicate());
                    }
                    f.exports.push(Export { name: e.name.to_owned(), signature });
                }
                Direction::Import => {
                    if imported.insert(e.name.to_owned(), ()).is_some() {
                        return Err(duplicate());
                    }
                    f.imports.push(Import { name: e.name.to_owned(), signature });
                }
            }
            Ok(())
        });
        match parsed {
            Ok(Ok(())) => Ok(f),
            Ok(Err(e)) => Err(e),
            Err(source) => Err(ProtocolError::Malformed { message: Message::FunctionTable, source }),
        }
    }

    /// Checks every import against `host_fns`: one error naming each import that is missing
    /// (unless `missing_allowed`) or registered with another signature.
    pub(crate) fn check_imports<T: 'static>(
        &self,
        host_fns: &HostFunctions<T>,
        missing_allowed: bool,
    ) -> Result<(), ImportErrors> {
        let problems: Vec<ImportError> = self
            .imports
            .iter()
            .filter_map(|i| match host_fns.get(&i.name) {
                None if missing_allowed => None,
                None => Some(ImportError::Missing { name: i.name.clone(), signature: i.signature.clone() }),
                Some(f) if f.signature != i.signature => Some(ImportError::Mismatched {
                    name: i.name.clone(),
                    declared: i.signature.clone(),
                    provided: f.signature.clone(),
                }),
                Some(_) => None,
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ImportErrors(problems))
        }
    }

    pub(crate) fn lookup(&self, name: &str) -> Result<(u32, &Export), Error> {
        let no_such = || Error::NoSuchFunction { name: name.to_owned() };
        let index = *self.by_name.get(name).ok_or_else(no_such)?;
        Ok((index, self.exports.get(index as usize).ok_or_else(no_such)?))
    }

    pub(crate) fn typed_fn<P: EncodeParams, R: FromWire>(
        &self,
        name: &str,
        image: u64,
    ) -> Result<TypedFn<P, R>, Error> {
        let (index, export) = self.lookup(name)?;
        let requested = Signature::of::<P, R>();
        if export.signature != requested {
            return Err(Error::SignatureMismatch { name: name.to_owned(), guest: export.signature.clone(), requested });
        }
        Ok(TypedFn::new(index, name, image))
    }
}
