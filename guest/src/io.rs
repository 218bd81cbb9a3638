//! The guest's two buffers and the port crossing.
//!
//! Only this module and `rt` touch raw memory. The buffers live where the boot info says; the
//! guest is single-threaded and nothing interrupts it, so a buffer is borrowed only for the
//! duration of one closure and never across a crossing.

use glint_abi::wire::{self, DecodeError};

#[cfg(target_os = "none")]
pub(crate) use imp::*;

#[cfg(target_os = "none")]
mod imp {
    use core::cell::UnsafeCell;
    use glint_abi::layout::BootInfo;
    use glint_abi::wire::{Full, SliceSink};

    /// Boot info, written once by `rt::start` before anything reads it.
    pub(crate) struct BootCell(UnsafeCell<BootInfo>);
    // SAFETY: the guest has one vCPU, no interrupts and no threads; the cell is written once at
    // start before any reader exists.
    unsafe impl Sync for BootCell {}
    pub(crate) static BOOT: BootCell = BootCell(UnsafeCell::new(BootInfo {
        magic: 0,
        abi_version: 0,
        memory_size: 0,
        input_addr: 0,
        input_size: 0,
        output_addr: 0,
        output_size: 0,
        heap_addr: 0,
        heap_size: 0,
        stack_top: 0,
        stack_size: 0,
    }));

    pub(crate) fn boot() -> BootInfo {
        // SAFETY: single-threaded; `set_boot` ran before any call (see BootCell).
        unsafe { *BOOT.0.get() }
    }

    /// # Safety
    /// Call once, before any other function of this module.
    pub(crate) unsafe fn set_boot(info: BootInfo) {
        // SAFETY: the caller guarantees no other access exists yet.
        unsafe { *BOOT.0.get() = info };
    }

    /// Leaves the VM through `port`; returns when the host resumes the guest.
    pub(crate) fn cross(port: u16) {
        // SAFETY: `out` to a glint port only exits to the host; the asm touches no Rust memory
        // but is not `nomem`, so the compiler finishes all buffer writes before the exit and
        // re-reads buffers after it.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") port, in("al") 0u8, options(nostack, preserves_flags));
        }
    }

    /// Lends the whole output buffer to `f`.
    pub(crate) fn with_output<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
        let b = boot();
        // SAFETY: the host maps `output_size` bytes at `output_addr` read-write for the guest
        // (boot info, trusted: the host is the guest's platform); `start` sets the boot info
        // before any caller runs, so the address is not null; no other reference to the buffer
        // exists while `f` runs: the guest is single-threaded and `f` makes no crossing.
        let buf = unsafe { core::slice::from_raw_parts_mut(b.output_addr as *mut u8, b.output_size as usize) };
        f(buf)
    }

    /// Writes one frame, the body produced by `body`, into the output buffer.
    pub(crate) fn write_output(body: &mut dyn FnMut(&mut SliceSink<'_>) -> Result<(), Full>) -> Result<(), Full> {
        with_output(|buf| super::wire::write_frame(buf, |s| body(s)).map(drop))
    }

    /// Lends the whole input buffer to `f`.
    pub(crate) fn with_input<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        let b = boot();
        // SAFETY: as for `with_output`; the host writes the input buffer only while the guest is
        // stopped at a crossing, and no caller makes a crossing while it holds the slice (the
        // dispatch loop decodes the arguments into owned values before the function runs; host
        // calls read their response after theirs).
        let buf = unsafe { core::slice::from_raw_parts(b.input_addr as *const u8, b.input_size as usize) };
        f(buf)
    }
}

/// The body of the frame in `buf`, checked against its size.
pub(crate) fn body(buf: &[u8]) -> Result<&[u8], DecodeError> {
    let prefix: [u8; wire::LEN_PREFIX] =
        buf.get(..wire::LEN_PREFIX).and_then(|p| p.try_into().ok()).ok_or(DecodeError::Truncated)?;
    let len = wire::frame_len(prefix, buf.len())?;
    buf.get(wire::LEN_PREFIX..wire::LEN_PREFIX + len).ok_or(DecodeError::Truncated)
}
