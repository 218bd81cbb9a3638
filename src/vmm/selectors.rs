//! The data-segment selectors of the vCPU thread, which kvm_pvm leaves to the guest.
//!
//! Under kvm_pvm a CPL3 guest runs on the host's own segments: a `mov ds, ax` in the guest loads
//! the vCPU thread's real DS, and KVM_SET_SREGS never reaches it. Left alone, a selector a guest
//! loads (any the host GDT admits at CPL3, such as Linux's user data segment 0x2b) survives the
//! exit: the host thread keeps it, threads it spawns inherit it, and the next guest run on it
//! reads it, a channel between tenants. So the vCPU owns its guest's four selectors
//! ([`Selectors`], saved in snapshots): they are put on the thread before every entry and the
//! thread's own are put back after every exit, keeping its FS and GS bases (its TLS). Both steps
//! cost four register reads and a compare when nothing changed, which is every call of a guest
//! that leaves its selectors alone. On hardware KVM the CPU switches these registers itself and
//! both steps find nothing to do.
#![allow(unsafe_code, reason = "segment registers and FS/GS bases; each block argues its safety")]

use std::sync::OnceLock;

/// DS, ES, FS and GS, in that order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Selectors(pub(crate) [u16; 4]);

impl Selectors {
    /// The null selectors a guest starts with.
    pub(crate) const NULL: Selectors = Selectors([0; 4]);

    /// The calling thread's selectors.
    pub(crate) fn current() -> Selectors {
        let (ds, es, fs, gs): (u16, u16, u16, u16);
        // SAFETY: reading segment registers has no side effects.
        unsafe {
            std::arch::asm!(
                "mov {0:x}, ds",
                "mov {1:x}, es",
                "mov {2:x}, fs",
                "mov {3:x}, gs",
                out(reg) ds,
                out(reg) es,
                out(reg) fs,
                out(reg) gs,
                options(nomem, nostack, preserves_flags)
            )
        };
        Selectors([ds, es, fs, gs])
    }

    /// Each selector if this thread may load it, else the null selector: a value that a guest
    /// loaded (so the CPU accepted it at CPL3 in the same GDT) can still be refused on another CPU
    /// or another host, and a refused load would be a #GP in the host.
    fn loadable(self) -> Selectors {
        Selectors(self.0.map(|s| if s & !3 == 0 || readable(s) { s } else { 0 }))
    }

    /// Puts `self` into the calling thread's DS, ES, FS and GS (those that differ from `now`),
    /// keeping the thread's FS and GS bases.
    pub(crate) fn load(self, now: Selectors) {
        let [ds, es, fs, gs] = self.loadable().0;
        if ds != now.0[0] {
            // SAFETY: `ds` is null or readable at this privilege level (`loadable`), so the load
            // cannot fault; 64-bit code ignores the DS base and limit.
            unsafe { std::arch::asm!("mov ds, {0:x}", in(reg) ds, options(nomem, nostack, preserves_flags)) };
        }
        if es != now.0[1] {
            // SAFETY: as for DS.
            unsafe { std::arch::asm!("mov es, {0:x}", in(reg) es, options(nomem, nostack, preserves_flags)) };
        }
        if fs != now.0[2] || gs != now.0[3] {
            load_fs_gs(fs, gs);
        }
    }
}

/// Whether the CPU would let this privilege level load `selector` into a data segment register.
fn readable(selector: u16) -> bool {
    let ok: u8;
    // SAFETY: `verr` only sets ZF; it never faults for any selector value.
    unsafe { std::arch::asm!("verr {0:x}", "setz {1}", in(reg) selector, out(reg_byte) ok, options(nomem, nostack)) };
    ok == 1
}

/// Whether `rdfsbase`/`wrfsbase` work in user mode (the kernel set CR4.FSGSBASE and says so in
/// AT_HWCAP2); otherwise the bases go through `arch_prctl`.
fn have_fsgsbase() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    // SAFETY: getauxval has no preconditions.
    *HAVE.get_or_init(|| fsgsbase_in(unsafe { libc::getauxval(libc::AT_HWCAP2) }))
}

/// Whether an AT_HWCAP2 value says FSGSBASE is on (Linux's HWCAP2_FSGSBASE, bit 1).
fn fsgsbase_in(hwcap2: u64) -> bool {
    const HWCAP2_FSGSBASE: u64 = 1 << 1;
    hwcap2 & HWCAP2_FSGSBASE != 0
}

/// Loads FS and GS and puts their bases back.
///
/// In 64-bit mode a selector load sets the segment's base from the descriptor (or, for a null
/// selector, clears or keeps it depending on the CPU), and the FS base is this thread's TLS: until
/// it is back, no Rust code, signal handler included, may touch a thread-local. So every signal
/// is blocked first, and the loads and the base writes happen in one `asm` block.
fn load_fs_gs(fs: u16, gs: u16) {
    // SAFETY: sigfillset initialises the set; blocking every signal on this thread and restoring
    // the old mask afterwards affects only this thread, for the few instructions in between.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    if have_fsgsbase() {
        // SAFETY: FSGSBASE is enabled for user mode (AT_HWCAP2), so rdfsbase/wrfsbase and their
        // GS twins do not fault; `fs` and `gs` are null or readable (`Selectors::loadable`), so the
        // loads do not fault; the bases read first are written back before the block ends, and no
        // signal can run in between (all blocked). Nothing else in the thread's state changes.
        unsafe {
            std::arch::asm!(
                "rdfsbase {fsb}",
                "rdgsbase {gsb}",
                "mov fs, {fs:x}",
                "mov gs, {gs:x}",
                "wrfsbase {fsb}",
                "wrgsbase {gsb}",
                fs = in(reg) fs,
                gs = in(reg) gs,
                fsb = out(reg) _,
                gsb = out(reg) _,
                options(nostack, preserves_flags)
            )
        };
    } else {
        const ARCH_SET_GS: u64 = 0x1001;
        const ARCH_SET_FS: u64 = 0x1002;
        const ARCH_GET_FS: libc::c_int = 0x1003;
        const ARCH_GET_GS: libc::c_int = 0x1004;
        let (mut fsb, mut gsb) = (0u64, 0u64);
        // SAFETY: arch_prctl(ARCH_GET_*) writes one u64 through the pointer, to our locals.
        unsafe {
            libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut fsb as *mut u64);
            libc::syscall(libc::SYS_arch_prctl, ARCH_GET_GS, &mut gsb as *mut u64);
        }
        // SAFETY: as above for the loads; the raw `syscall`s (arch_prctl SET_FS, SET_GS with the
        // bases just read) touch no thread-local (no errno: the libc wrapper is not used), clobber
        // only rax, rcx and r11, and restore the bases before any signal can run.
        unsafe {
            std::arch::asm!(
                "mov fs, {fs:x}",
                "mov gs, {gs:x}",
                "mov rsi, {fsb}",
                "mov rdi, {set_fs}",
                "mov eax, {nr}",
                "syscall",
                "mov rsi, {gsb}",
                "mov rdi, {set_gs}",
                "mov eax, {nr}",
                "syscall",
                fs = in(reg) fs,
                gs = in(reg) gs,
                fsb = in(reg) fsb,
                gsb = in(reg) gsb,
                set_fs = const ARCH_SET_FS,
                set_gs = const ARCH_SET_GS,
                nr = const libc::SYS_arch_prctl,
                out("rax") _,
                out("rcx") _,
                out("r11") _,
                out("rdi") _,
                out("rsi") _,
                options(nostack)
            )
        };
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_keeps_the_thread_local_storage_working() {
        thread_local!(static PROBE: std::cell::Cell<u64> = const { std::cell::Cell::new(7) });
        let before = Selectors::current();
        // 0x2b is Linux's user data segment on x86-64; if this host's GDT lacks it, `loadable`
        // turns it into null and the test still checks the round trip.
        Selectors([0x2b; 4]).load(before);
        PROBE.with(|p| p.set(p.get() + 1));
        let during = Selectors::current();
        before.load(during);
        assert_eq!(Selectors::current(), before);
        assert_eq!(PROBE.with(std::cell::Cell::get), 8, "TLS survived the FS/GS loads");
    }

    /// The selectors this thread may load other than its own: Linux's user data segment (0x2b)
    /// if this host's GDT has it (it becomes null otherwise).
    fn user_data() -> u16 {
        Selectors([0x2b; 4]).loadable().0[0]
    }

    #[test]
    fn each_selector_that_differs_is_loaded_and_the_rest_are_kept() {
        let before = Selectors::current();
        let data = user_data();
        // Every register on its own, then all four: each one that differs must be loaded, FS and
        // GS included when only one of them differs.
        for i in 0..5 {
            let mut want = before;
            for (j, s) in want.0.iter_mut().enumerate() {
                if i == 4 || i == j {
                    *s = data;
                }
            }
            want.load(before);
            let during = Selectors::current();
            before.load(during);
            assert_eq!(during, want, "register {i} (4: all of them)");
            assert_eq!(Selectors::current(), before);
        }
    }

    #[test]
    fn fsgsbase_is_read_from_bit_1_of_hwcap2() {
        assert!(fsgsbase_in(1 << 1));
        assert!(fsgsbase_in(u64::MAX));
        assert!(!fsgsbase_in(0));
        assert!(!fsgsbase_in(!(1 << 1)));
    }

    #[test]
    fn fsgsbase_is_used_exactly_when_the_kernel_enables_it() {
        // Since Linux 5.9 the kernel lists `fsgsbase` in /proc/cpuinfo only when it enabled the
        // instructions for user mode (and says so in AT_HWCAP2); earlier kernels never did.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut version = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
        if (major, minor) < (5, 9) {
            return;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let listed = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "fsgsbase"));
        assert_eq!(have_fsgsbase(), listed);
    }

    #[test]
    fn unloadable_selectors_become_null() {
        // A selector past the end of the GDT, and one naming a kernel (DPL 0) segment.
        assert_eq!(Selectors([0xfff8 | 3, 0x10, 0, 3]).loadable(), Selectors([0, 0, 0, 3]));
    }
}
