//! Guest-physical memory: the layout of a sandbox and the x86 structures the host builds in it.
//!
//! Nothing here talks to KVM; the tables are plain bytes, built and checked without a VM.

pub(crate) mod layout;
pub(crate) mod shared;
pub(crate) mod x86;

pub(crate) use layout::MemoryConfig;
