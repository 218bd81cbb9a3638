//! Where everything lives in a sandbox's guest memory (see `glint_abi::layout` for the guest's
//! view and docs/ABI.md for the map).

use crate::image::GuestImage;
use glint_abi::layout::{BootInfo, BOOT_INFO_ADDR, BOOT_MAGIC, MAX_MEMORY, PAGE_SIZE};
use glint_abi::ABI_VERSION;

/// Page-map level 4 (one page).
pub(crate) const PML4_ADDR: u64 = 0x1000;
/// Page-directory-pointer table (one page).
pub(crate) const PDPT_ADDR: u64 = 0x2000;
/// Page directory (one page: 1 GiB of 2 MiB entries).
pub(crate) const PD_ADDR: u64 = 0x3000;
/// Page tables, one per 2 MiB of guest memory, room for [`MAX_MEMORY`].
pub(crate) const PT_ADDR: u64 = 0x4000;
/// Most page tables: enough for `MAX_MEMORY`.
pub(crate) const MAX_PTS: u64 = MAX_MEMORY / (2 << 20);
/// Global descriptor table (one page).
pub(crate) const GDT_ADDR: u64 = PT_ADDR + MAX_PTS * PAGE_SIZE;
/// Interrupt descriptor table (one page).
pub(crate) const IDT_ADDR: u64 = GDT_ADDR + PAGE_SIZE;
/// Task-state segment with its I/O permission bitmap (one page).
pub(crate) const TSS_ADDR: u64 = IDT_ADDR + PAGE_SIZE;
/// The CPL0 exception stubs (one page, supervisor, executable, read-only).
pub(crate) const STUBS_ADDR: u64 = TSS_ADDR + PAGE_SIZE;
/// Bottom of the CPL0 stack the CPU switches to on an exception (IST1 and RSP0).
pub(crate) const FAULT_STACK_ADDR: u64 = STUBS_ADDR + PAGE_SIZE;
/// Size of the fault stack.
pub(crate) const FAULT_STACK_SIZE: u64 = 2 * PAGE_SIZE;
/// Top of the fault stack (16-byte aligned).
pub(crate) const FAULT_STACK_TOP: u64 = FAULT_STACK_ADDR + FAULT_STACK_SIZE;
/// End of the host-owned system region.
pub(crate) const SYSTEM_END: u64 = FAULT_STACK_TOP;

const _: () = assert!(SYSTEM_END <= BOOT_INFO_ADDR, "system region overlaps the boot info");
const _: () = assert!(FAULT_STACK_TOP % 16 == 0);

/// Sizes of a sandbox's memory. Everything left after the image, buffers and stack is heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemoryConfig {
    /// Total guest memory in bytes.
    pub memory_size: u64,
    /// Input buffer (host to guest: call arguments, host-call results).
    pub input_size: u64,
    /// Output buffer (guest to host: results, host-call requests, messages).
    pub output_size: u64,
    /// Stack size.
    pub stack_size: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { memory_size: 16 << 20, input_size: 2 << 20, output_size: 2 << 20, stack_size: 256 << 10 }
    }
}

/// Smallest heap we hand a guest: below this even its export table may not fit.
pub(crate) const MIN_HEAP: u64 = 64 << 10;

/// The computed map of one sandbox's memory. Every region is page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub memory_size: u64,
    pub image_end: u64,
    pub input_addr: u64,
    pub input_size: u64,
    pub output_addr: u64,
    pub output_size: u64,
    pub heap_addr: u64,
    pub heap_size: u64,
    pub guard_addr: u64,
    pub stack_addr: u64,
    pub stack_size: u64,
}

/// Why a memory configuration cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A size is zero or not a multiple of the page size.
    #[error("{what} of {bytes} bytes is not a positive multiple of {PAGE_SIZE}")]
    NotPageMultiple {
        /// Which size ("memory size", "input buffer size", "output buffer size", "stack size").
        what: &'static str,
        /// Its value.
        bytes: u64,
    },
    /// The memory size exceeds [`MAX_MEMORY`].
    #[error("memory size of {bytes} bytes exceeds the maximum of {MAX_MEMORY}")]
    TooLarge {
        /// The memory size asked for.
        bytes: u64,
    },
    /// The image, buffers, stack and the smallest heap do not fit in the memory size.
    #[error(
        "memory size of {memory} bytes cannot hold the image (up to {image_end:#x}), {input} + {output} bytes of \
         buffers, a {stack}-byte stack and at least {MIN_HEAP} bytes of heap"
    )]
    DoesNotFit {
        /// Memory size.
        memory: u64,
        /// Where the image ends.
        image_end: u64,
        /// Input buffer size.
        input: u64,
        /// Output buffer size.
        output: u64,
        /// Stack size.
        stack: u64,
    },
}

fn check_size(what: &'static str, bytes: u64) -> Result<u64, LayoutError> {
    if bytes == 0 || bytes % PAGE_SIZE != 0 {
        return Err(LayoutError::NotPageMultiple { what, bytes });
    }
    Ok(bytes)
}

impl Layout {
    /// Lays out `config` around `image`, or says which size does not fit.
    pub(crate) fn new(config: &MemoryConfig, image: &GuestImage) -> Result<Layout, LayoutError> {
        let memory_size = check_size("memory size", config.memory_size)?;
        if memory_size > MAX_MEMORY {
            return Err(LayoutError::TooLarge { bytes: memory_size });
        }
        let input_size = check_size("input buffer size", config.input_size)?;
        let output_size = check_size("output buffer size", config.output_size)?;
        let stack_size = check_size("stack size", config.stack_size)?;
        // The loader guarantees a page-aligned end at or above the image base.
        let image_end = image.end();
        let too_small = || LayoutError::DoesNotFit {
            memory: memory_size,
            image_end,
            input: input_size,
            output: output_size,
            stack: stack_size,
        };
        let input_addr = image_end;
        let output_addr = input_addr.checked_add(input_size).ok_or_else(too_small)?;
        let heap_addr = output_addr.checked_add(output_size).ok_or_else(too_small)?;
        let stack_addr = memory_size.checked_sub(stack_size).ok_or_else(too_small)?;
        let guard_addr = stack_addr.checked_sub(PAGE_SIZE).ok_or_else(too_small)?;
        let heap_size = guard_addr.checked_sub(heap_addr).ok_or_else(too_small)?;
        if heap_size < MIN_HEAP {
            return Err(too_small());
        }
        Ok(Layout {
            memory_size,
            image_end,
            input_addr,
            input_size,
            output_addr,
            output_size,
            heap_addr,
            heap_size,
            guard_addr,
            stack_addr,
            stack_size,
        })
    }

    /// Initial stack pointer.
    pub(crate) fn stack_top(&self) -> u64 {
        self.memory_size
    }

    /// What the guest reads at `BOOT_INFO_ADDR`.
    pub(crate) fn boot_info(&self) -> BootInfo {
        BootInfo {
            magic: BOOT_MAGIC,
            abi_version: u64::from(ABI_VERSION),
            memory_size: self.memory_size,
            input_addr: self.input_addr,
            input_size: self.input_size,
            output_addr: self.output_addr,
            output_size: self.output_size,
            heap_addr: self.heap_addr,
            heap_size: self.heap_size,
            stack_top: self.stack_top(),
            stack_size: self.stack_size,
        }
    }
}
