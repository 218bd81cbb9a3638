//! Helpers for the tests that drive a real gdb.

use crate::image::GuestImage;
use crate::mem::layout::Layout;
use crate::mem::MemoryConfig;
use glint_abi::layout::{BOOT_INFO_ADDR, IMAGE_BASE};
use std::path::PathBuf;
use std::process::{Command, Output};

use super::{guest_regions, ProgramInfo, Region};

/// The gdb binary, or `None` (with a note) when it is missing; under `CI=true` a missing gdb
/// fails the test instead.
pub(crate) fn gdb() -> Option<PathBuf> {
    let found = Command::new("gdb").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "gdb is not installed but CI=true");
        eprintln!("note: gdb is not installed; skipping this test");
        return None;
    }
    Some(PathBuf::from("gdb"))
}

/// Runs `gdb -batch -nx` with the given arguments; returns its output, checked for success.
pub(crate) fn run_gdb(args: &[&str]) -> (String, String) {
    let out: Output = Command::new("gdb").arg("-batch").arg("-nx").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gdb failed: {}\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

/// A guest's memory as the sandbox would hold it before it ran: the loaded image and the boot
/// info in an otherwise zero buffer, with the layout and regions around it.
pub(crate) struct LoadedGuest {
    pub path: &'static str,
    pub layout: Layout,
    pub regions: Vec<Region>,
    pub memory: Vec<u8>,
    pub program: ProgramInfo,
    pub elf: Vec<u8>,
}

impl LoadedGuest {
    pub(crate) fn hello() -> LoadedGuest {
        Self::load(glint_guest_artifacts::HELLO)
    }

    pub(crate) fn load(path: &'static str) -> LoadedGuest {
        let elf = std::fs::read(path).unwrap();
        let image = GuestImage::from_bytes(&elf).unwrap();
        let layout = Layout::new(&MemoryConfig::default(), &image).unwrap();
        let mut memory = vec![0u8; layout.memory_size as usize];
        for s in image.segments() {
            memory[s.addr as usize..s.addr as usize + s.data.len()].copy_from_slice(&s.data);
        }
        let boot = layout.boot_info().to_bytes();
        memory[BOOT_INFO_ADDR as usize..BOOT_INFO_ADDR as usize + boot.len()].copy_from_slice(&boot);
        let program = ProgramInfo::of(&image);
        let regions = guest_regions(&layout, &image);
        LoadedGuest { path, layout, regions, memory, program, elf }
    }

    /// The relocated address and (mangled) name of the first function whose name contains `part`.
    pub(crate) fn function(&self, part: &str) -> (u64, String) {
        let parsed = goblin::elf::Elf::parse(&self.elf).unwrap();
        parsed
            .syms
            .iter()
            .filter(|s| s.is_function())
            .find_map(|s| {
                let name = parsed.strtab.get_at(s.st_name).filter(|n| n.contains(part))?;
                Some((IMAGE_BASE + s.st_value, name.to_owned()))
            })
            .unwrap_or_else(|| panic!("no function symbol containing {part}"))
    }

    /// The relocated address of the first function whose (mangled) name contains `part`.
    pub(crate) fn symbol(&self, part: &str) -> u64 {
        self.function(part).0
    }
}
