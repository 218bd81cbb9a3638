//! The catalogue of capability host functions: names, signatures and the grant each needs.

use glint::{Signature, ValueType};
use glint_abi::caps as abi;

/// The capabilities, as the manifest grants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Wall and monotonic time (`clock = true`).
    Clock,
    /// Random bytes (`random = true`).
    Random,
    /// Variables (`[function.variables]`).
    Variables,
    /// Key-value stores (`key_value_stores = [...]`).
    Kv,
    /// Outbound HTTP (`allowed_outbound_hosts = [...]`).
    Http,
}

impl Capability {
    /// Its stable name: `clock`, `random`, `variables`, `kv`, `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::Variables => "variables",
            Capability::Kv => "kv",
            Capability::Http => "http",
        }
    }

    /// The manifest entry that grants it.
    pub const fn grant_hint(self) -> &'static str {
        match self {
            Capability::Clock => "`clock = true` under [function.capabilities]",
            Capability::Random => "`random = true` under [function.capabilities]",
            Capability::Variables => "a `name = \"value\"` entry under [function.variables]",
            Capability::Kv => "`key_value_stores = [\"<store>\"]` under [function.capabilities]",
            Capability::Http => "`allowed_outbound_hosts = [\"http://<host>:<port>\"]` under [function.capabilities]",
        }
    }
}

/// One capability host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityImport {
    /// The host-function name a guest imports, e.g. `glint:kv/get@1`.
    pub name: &'static str,
    /// The capability it belongs to.
    pub capability: Capability,
    /// The manifest entry that grants it.
    pub grant_hint: &'static str,
    params: &'static [ValueType],
    result: ValueType,
}

impl CapabilityImport {
    /// Its signature.
    pub fn signature(&self) -> Signature {
        Signature { params: self.params.to_vec(), result: self.result }
    }
}

const fn import(
    name: &'static str,
    capability: Capability,
    params: &'static [ValueType],
    result: ValueType,
) -> CapabilityImport {
    CapabilityImport { name, capability, grant_hint: capability.grant_hint(), params, result }
}

use ValueType::{Bool, Bytes, String as Str, Unit, U32, U64};

/// Every capability host function, with its signature and grant.
pub const IMPORTS: &[CapabilityImport] = &[
    import(abi::CLOCK_WALL, Capability::Clock, &[], U64),
    import(abi::CLOCK_MONOTONIC, Capability::Clock, &[], U64),
    import(abi::RANDOM_BYTES, Capability::Random, &[U32], Bytes),
    import(abi::VARIABLES_GET, Capability::Variables, &[Str], Str),
    import(abi::KV_GET, Capability::Kv, &[Str, Str], Bytes),
    import(abi::KV_SET, Capability::Kv, &[Str, Str, Bytes], Unit),
    import(abi::KV_DELETE, Capability::Kv, &[Str, Str], Bool),
    import(abi::KV_LIST, Capability::Kv, &[Str, Str, Str, U32], Bytes),
    import(abi::HTTP_SEND, Capability::Http, &[Bytes], Bytes),
];

/// The catalogue entry of `name`, if it is a capability host function.
pub fn lookup(name: &str) -> Option<&'static CapabilityImport> {
    IMPORTS.iter().find(|i| i.name == name)
}

pub(crate) fn capability_of(name: &str) -> Option<Capability> {
    lookup(name).map(|i| i.capability)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_name_once() {
        assert_eq!(IMPORTS.len(), abi::ALL.len());
        for name in abi::ALL {
            assert_eq!(IMPORTS.iter().filter(|i| i.name == name).count(), 1, "{name}");
        }
        assert_eq!(lookup(abi::KV_SET).unwrap().signature().to_string(), "(String, String, Vec<u8>) -> ()");
    }
}
