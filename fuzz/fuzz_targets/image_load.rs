//! The ELF loader on any bytes a hostile image file can hold (HOSTILE-GUESTS.md B.5, rows 35-41).
//!
//! `GuestImage::from_bytes` must load or refuse every input without panicking (debug assertions are
//! on in fuzz builds, so an overflow counts), and an image it accepts must keep the promises the
//! sandbox builder relies on: the entry point inside the image, the image inside guest memory.
#![no_main]

use glint::GuestImage;
use glint_abi::layout::{IMAGE_BASE, MAX_MEMORY, PAGE_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match GuestImage::from_bytes(data) {
        Ok(image) => {
            assert_eq!(image.abi_version(), glint::ABI_VERSION, "{image:?}");
            assert!(IMAGE_BASE <= image.entry() && image.entry() < image.end(), "entry outside: {image:?}");
            assert!(image.end() <= MAX_MEMORY, "image beyond guest memory: {image:?}");
            assert_eq!(image.end() % PAGE_SIZE, 0, "{image:?}");
            // The Debug form is what gets logged; it must not choke on whatever was loaded.
            let _ = format!("{image:?}");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
