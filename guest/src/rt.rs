//! The bare-metal runtime: entry, dispatch loop, heap, panic handler.

use crate::export::{ImportBlock, Registry};
use crate::io;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::NonNull;
use glint_abi::code::{AbortCode, CallError};
use glint_abi::layout::{BootInfo, BOOT_INFO_SIZE, BOOT_MAGIC};
use glint_abi::{note, port, wire, ABI_VERSION};
use linked_list_allocator::Heap;

/// The ABI-version note the host checks before loading the image.
#[link_section = ".note.glint"]
#[used]
static ABI_NOTE: [u8; note::NOTE_SIZE] = note::version_note(ABI_VERSION);

extern "Rust" {
    /// Defined by `glint_guest::exports!` in the guest program.
    fn __glint_exports(registry: &mut Registry);
}

extern "Rust" {
    /// Start and end of the `glint_imports` link section, defined by the linker.
    static __start_glint_imports: ImportBlock;
    static __stop_glint_imports: ImportBlock;
}

/// An empty block, so the section (and its start and stop symbols) exists in every guest.
#[used]
#[link_section = "glint_imports"]
static NO_IMPORTS: ImportBlock = ImportBlock::new(&[]);

/// Every `imports!` block of the program.
fn import_blocks() -> &'static [ImportBlock] {
    let start = core::ptr::addr_of!(__start_glint_imports);
    let stop = core::ptr::addr_of!(__stop_glint_imports);
    let n = (stop as usize - start as usize) / core::mem::size_of::<ImportBlock>();
    // SAFETY: the linker places every `ImportBlock` static of the `glint_imports` section (at
    // least `NO_IMPORTS`, kept by `#[used]`) contiguously between the two symbols; they share one
    // type, so the section is an array of `n` of them.
    unsafe { core::slice::from_raw_parts(start, n) }
}

struct GuestHeap(UnsafeCell<Heap>);

// SAFETY: one vCPU, no threads, no interrupts: the heap is never accessed concurrently.
unsafe impl Sync for GuestHeap {}

// SAFETY: `Heap` returns blocks that satisfy `layout` and are disjoint from each other, and takes
// back only blocks it handed out (the `GlobalAlloc` contract binds callers of `dealloc`).
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync` above), so this is the only reference.
        let heap = unsafe { &mut *self.0.get() };
        heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: single-threaded; `ptr` came from `alloc` with this `layout` (caller's contract),
        // so it is non-null.
        unsafe { (*self.0.get()).deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

#[global_allocator]
static HEAP: GuestHeap = GuestHeap(UnsafeCell::new(Heap::empty()));

/// Rust entry, called by `_start` (from `exports!`) with the boot-info address the host put in `rdi`.
pub extern "C" fn start(boot_addr: u64) -> ! {
    // Keep the note referenced so no linker drops it.
    // SAFETY: reading a static we own.
    let _ = unsafe { core::ptr::read_volatile(&ABI_NOTE) };

    let mut raw = [0u8; BOOT_INFO_SIZE];
    // SAFETY: the host maps the boot-info page read-only at `boot_addr`; we copy it once.
    unsafe { core::ptr::copy_nonoverlapping(boot_addr as *const u8, raw.as_mut_ptr(), BOOT_INFO_SIZE) };
    let info = BootInfo::from_bytes(&raw);
    if info.magic != BOOT_MAGIC || info.abi_version != u64::from(ABI_VERSION) {
        // We cannot trust the buffer addresses, so we cannot report: fault instead.
        // SAFETY: `ud2` only raises #UD, which the host reports.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }
    // SAFETY: first and only write, before any reader.
    unsafe { io::set_boot(info) };
    // SAFETY: the host reserves `heap_size` bytes at `heap_addr` for the heap and nothing else
    // uses them; init runs once, before any allocation.
    unsafe { (*HEAP.0.get()).init(info.heap_addr as *mut u8, info.heap_size as usize) };

    let mut registry = Registry::new();
    // SAFETY: `exports!` defines `__glint_exports` with exactly this signature.
    unsafe { __glint_exports(&mut registry) };
    for block in import_blocks() {
        registry.import(block.imports());
    }
    let table = io::write_output(&mut |s| registry.write_table(s));
    if table.is_err() {
        panic!("export table does not fit in the output buffer");
    }
    io::cross(port::RETURN);

    loop {
        // Decode the arguments straight from the input buffer into owned values, then run the
        // function once that borrow has ended: its host calls make the host overwrite the buffer,
        // which must not happen under a live reference.
        let call = io::with_input(|input| io::body(input).map(|body| registry.prepare(body)));
        let written = match call {
            Ok(pending) => pending(&mut |encode| io::write_output(encode)),
            Err(e) => {
                let msg = alloc::format!("malformed call frame: {e}");
                io::write_output(&mut |s| wire::put_err(s, CallError::BadArguments.number(), msg.as_bytes()))
            }
        };
        if written.is_err() {
            let size = io::boot().output_size;
            let msg = alloc::format!("result does not fit in the {size}-byte output buffer");
            let _ = io::write_output(&mut |s| wire::put_err(s, CallError::ResultTooLarge.number(), msg.as_bytes()));
        }
        io::cross(port::RETURN);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // The panic may come from code that holds a reference to the output buffer, so the frame is
    // written through a raw slice made here, by the non-allocating frame writer; and the boot info
    // may not be set yet.
    let boot = io::boot();
    if boot.output_addr != 0 {
        // SAFETY: the host maps `output_size` bytes at `output_addr` for the guest. Any reference
        // to the buffer the panicking code held is never used again: this function diverges.
        let out = unsafe { core::slice::from_raw_parts_mut(boot.output_addr as *mut u8, boot.output_size as usize) };
        let written = match info.location() {
            Some(l) => wire::write_abort_frame(
                out,
                AbortCode::Panic,
                format_args!("{} (at {}:{})", info.message(), l.file(), l.line()),
            ),
            None => wire::write_abort_frame(out, AbortCode::Panic, format_args!("{}", info.message())),
        };
        if written.is_ok() {
            io::cross(port::ABORT);
        }
    }
    // The host never resumes an aborted call; if it did (or we could not report), fault.
    loop {
        // SAFETY: `ud2` only raises #UD.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) }
    }
}
