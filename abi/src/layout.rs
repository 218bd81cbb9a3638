//! The guest memory map that the guest can see.
//!
//! Guest-physical and guest-virtual addresses are equal (the host identity-maps the region). The
//! host owns everything below [`IMAGE_BASE`] except the boot-info page: the page tables are not
//! mapped at all, and the GDT, IDT, TSS, exception stubs and fault stack are supervisor-only pages
//! a CPL3 guest cannot touch. The boot-info page tells
//! the guest where everything it may use lives; its address is also passed in `rdi` at entry.
//!
//! ```text
//! 0                 null page, never mapped
//! 0x1000 ..         host-owned, supervisor-only: page tables, GDT, IDT, TSS, stubs, fault stack
//! BOOT_INFO_ADDR    boot info, user read-only
//! IMAGE_BASE ..     the image's segments (a PIE is loaded here; an ET_EXEC must lie here)
//! ..                input buffer, output buffer (user read-write, no execute)
//! ..                heap (user read-write, no execute)
//! ..                guard page (never mapped)
//! .. memory end     stack (user read-write, no execute), growing down from the end
//! ```

/// The page size of every mapping glint makes.
pub const PAGE_SIZE: u64 = 4096;

/// Lowest address of the guest image; PIEs are relocated to start here.
pub const IMAGE_BASE: u64 = 0x20_0000;

/// Address of the boot-info page (the page just below the image).
pub const BOOT_INFO_ADDR: u64 = IMAGE_BASE - PAGE_SIZE;

/// Largest guest memory the layout supports (page tables for it fit below the boot info).
pub const MAX_MEMORY: u64 = 256 << 20;

/// `BootInfo::magic`, so a guest can tell it was started by a glint host.
pub const BOOT_MAGIC: u64 = 0x746e_696c_675f_6f62; // "bo_glint"

/// Number of bytes [`BootInfo`] occupies at [`BOOT_INFO_ADDR`].
pub const BOOT_INFO_SIZE: usize = 11 * 8;

/// What the host tells the guest about its memory. Encoded as little-endian `u64`s in field order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// Always [`BOOT_MAGIC`].
    pub magic: u64,
    /// The host's [`crate::ABI_VERSION`].
    pub abi_version: u64,
    /// Total guest memory in bytes.
    pub memory_size: u64,
    /// Start of the input buffer (host to guest).
    pub input_addr: u64,
    /// Size of the input buffer in bytes.
    pub input_size: u64,
    /// Start of the output buffer (guest to host).
    pub output_addr: u64,
    /// Size of the output buffer in bytes.
    pub output_size: u64,
    /// Start of the heap.
    pub heap_addr: u64,
    /// Size of the heap in bytes.
    pub heap_size: u64,
    /// One past the highest stack address (initial `rsp`).
    pub stack_top: u64,
    /// Size of the stack in bytes (the guard page lies just below it).
    pub stack_size: u64,
}

impl BootInfo {
    fn fields(&self) -> [u64; 11] {
        [
            self.magic,
            self.abi_version,
            self.memory_size,
            self.input_addr,
            self.input_size,
            self.output_addr,
            self.output_size,
            self.heap_addr,
            self.heap_size,
            self.stack_top,
            self.stack_size,
        ]
    }

    /// Encodes the boot info as the host writes it into guest memory.
    pub fn to_bytes(&self) -> [u8; BOOT_INFO_SIZE] {
        let mut out = [0u8; BOOT_INFO_SIZE];
        for (chunk, field) in out.chunks_exact_mut(8).zip(self.fields()) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// Decodes the boot info as the guest reads it.
    pub fn from_bytes(bytes: &[u8; BOOT_INFO_SIZE]) -> Self {
        let mut f = [0u64; 11];
        for (field, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *field = u64::from_le_bytes(b);
        }
        let [magic, abi_version, memory_size, input_addr, input_size, output_addr, output_size, heap_addr, heap_size, stack_top, stack_size] =
            f;
        BootInfo {
            magic,
            abi_version,
            memory_size,
            input_addr,
            input_size,
            output_addr,
            output_size,
            heap_addr,
            heap_size,
            stack_top,
            stack_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_round_trips() {
        let info = BootInfo {
            magic: BOOT_MAGIC,
            abi_version: 1,
            memory_size: 2,
            input_addr: 3,
            input_size: 4,
            output_addr: 5,
            output_size: 6,
            heap_addr: 7,
            heap_size: 8,
            stack_top: 9,
            stack_size: 10,
        };
        assert_eq!(BootInfo::from_bytes(&info.to_bytes()), info);
    }

    #[test]
    fn boot_info_fits_its_page() {
        assert!((BOOT_INFO_SIZE as u64) < PAGE_SIZE);
        assert_eq!(IMAGE_BASE % PAGE_SIZE, 0);
    }
}
