//! VMs made ahead of demand, for the one configuration whose creation can wait on the kernel.
//!
//! `KVM_X86_SET_MSR_FILTER` ends in `synchronize_srcu`, a sleep whose length the kernel's RCU
//! machinery decides: 15-40 us on an idle CPU, about 15 ms on a CPU that just tore a VM down
//! (measured on the kvm_pvm host, see BENCHMARKS.md "Cold start"). A sandbox built with
//! [`MsrFilter::DenyAll`] would pay that on its request path. So VMs with the filter installed
//! (nothing else: no memory slot, no vCPU, which depend on the sandbox) are made here by a few
//! threads, in parallel because each one mostly sleeps, and kept in a small stock that
//! [`take`] hands out. The stock is keyed by the filter policy, and a VM is only ever handed to
//! a request for the key it was made with.
//!
//! Nothing runs until the first request for a key that needs the factory: a process that never
//! builds a filtered sandbox has no factory thread and no stocked VM fd.

use super::host::host;
use super::{Doing, MsrFilter, VmmError};
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// VMs kept ready per key once the key has been asked for.
const STOCK: usize = 8;
/// Threads making them. Each spends most of its time asleep in `synchronize_srcu`, so several
/// at once multiply the rate on a slow CPU (measured: 61 VMs/s with one thread, 675 with 16 on
/// CPU 0 in the shadow of teardown) while costing little CPU.
const THREADS: usize = 4;

/// A VM fd made for `key`, with everything `key` asks for installed.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) vm: VmFd,
    pub(crate) key: MsrFilter,
}

/// Counters of the process-wide VM factory ([`vm_factory_stats`]), for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmFactoryStats {
    /// VMs handed out from the stock.
    pub taken: u64,
    /// Requests that found the stock empty (the caller made its VM itself, waiting).
    pub missed: u64,
    /// VMs the factory threads made.
    pub made: u64,
    /// VMs in stock now, all keys.
    pub stocked: usize,
    /// Factory threads running (0 until a filtered sandbox is first asked for).
    pub threads: usize,
}

#[derive(Default)]
struct State {
    stock: HashMap<MsrFilter, Vec<Prepared>>,
    /// VMs being made, per key.
    making: HashMap<MsrFilter, usize>,
    stats: VmFactoryStats,
}

impl State {
    /// The key most in need of another VM, if any is below its stock.
    fn next_job(&self) -> Option<MsrFilter> {
        self.stock
            .iter()
            .map(|(k, v)| (*k, v.len() + self.making.get(k).copied().unwrap_or(0)))
            .filter(|&(_, have)| have < STOCK)
            .min_by_key(|&(_, have)| have)
            .map(|(k, _)| k)
    }
}

struct Factory {
    state: Mutex<State>,
    work: Condvar,
}

static FACTORY: OnceLock<Factory> = OnceLock::new();

impl Factory {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn worker(&'static self) {
        let mut s = self.lock();
        loop {
            let Some(key) = s.next_job() else {
                s = self.work.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            *s.making.entry(key).or_default() += 1;
            drop(s);
            let made = make(key);
            s = self.lock();
            if let Some(n) = s.making.get_mut(&key) {
                *n -= 1;
            }
            match made {
                Ok(p) => {
                    s.stats.made += 1;
                    s.stock.entry(key).or_default().push(p);
                }
                Err(e) => {
                    // Out of fds or memory: the request path will see the same error itself. Do
                    // not spin on it.
                    tracing::warn!(error = %e, "the VM factory could not make a VM");
                    drop(s);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    s = self.lock();
                }
            }
        }
    }
}

/// Makes a VM for `key` on the calling thread (this is where the wait is).
pub(crate) fn make(key: MsrFilter) -> Result<Prepared, VmmError> {
    let vm = host()?.kvm.create_vm().map_err(VmmError::ioctl("KVM_CREATE_VM", Doing::CreatingVm))?;
    install(&vm, key)?;
    Ok(Prepared { vm, key })
}

/// Installs what `key` asks for on a new VM.
fn install(vm: &VmFd, key: MsrFilter) -> Result<(), VmmError> {
    match key {
        MsrFilter::Off => Ok(()),
        MsrFilter::DenyAll => {
            if !host()?.msr_filter {
                return Err(VmmError::MissingCapability { capability: "KVM_CAP_X86_MSR_FILTER" });
            }
            // Deny every MSR access that reaches KVM. The one explicit range is required (KVM
            // refuses a deny-all filter without ranges) and denies MSR 0 too.
            let deny = [0u8; 1];
            let range = MsrFilterRange {
                flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
                base: 0,
                msr_count: 1,
                bitmap: &deny,
            };
            vm.set_msr_filter(MsrFilterDefaultAction::DENY, &[range])
                .map_err(VmmError::ioctl("KVM_X86_SET_MSR_FILTER", Doing::CreatingVm))
        }
    }
}

/// Whether VMs for `key` are worth making ahead: only those whose creation can wait.
fn ahead(key: MsrFilter) -> bool {
    key != MsrFilter::Off
}

/// A VM for `key`: from the stock when one is ready, else made here. The first request for a
/// key that needs the factory starts it.
pub(crate) fn take(key: MsrFilter) -> Result<Prepared, VmmError> {
    if !ahead(key) {
        return make(key);
    }
    let factory = start()?;
    let mut s = factory.lock();
    let stock = s.stock.entry(key).or_default();
    let got = stock.pop();
    if got.is_some() {
        s.stats.taken += 1;
    } else {
        s.stats.missed += 1;
    }
    drop(s);
    factory.work.notify_all();
    match got {
        Some(p) if p.key == key => Ok(p),
        // A VM stocked under another key would be a bug here; never hand it out.
        Some(_) | None => make(key),
    }
}

/// Starts making VMs for `filter` ahead of demand, so the first sandboxes built with it do not
/// wait (see [`MsrFilter`]). Nothing to do for [`MsrFilter::Off`]. Building a sandbox with a
/// filter does this too; call it at start-up to have the stock ready before the first request.
///
/// # Errors
/// KVM is unavailable.
pub fn prepare_vms(filter: MsrFilter) -> Result<(), crate::Error> {
    prepare(filter).map_err(crate::Error::from)
}

fn prepare(key: MsrFilter) -> Result<(), VmmError> {
    if ahead(key) {
        let factory = start()?;
        factory.lock().stock.entry(key).or_default();
        factory.work.notify_all();
    }
    Ok(())
}

/// The factory, its threads started on the first call.
fn start() -> Result<&'static Factory, VmmError> {
    if let Some(f) = FACTORY.get() {
        return Ok(f);
    }
    // Probe first: a host without KVM must not get threads.
    host()?;
    let mut first = false;
    let factory = FACTORY.get_or_init(|| {
        first = true;
        Factory { state: Mutex::new(State::default()), work: Condvar::new() }
    });
    if first {
        for i in 0..THREADS {
            let spawned =
                std::thread::Builder::new().name(format!("glint-vm-factory-{i}")).spawn(move || factory.worker());
            match spawned {
                Ok(_) => factory.lock().stats.threads += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a VM factory thread"),
            }
        }
    }
    Ok(factory)
}

/// The VM factory's counters (all zero if it never started).
pub fn vm_factory_stats() -> VmFactoryStats {
    FACTORY
        .get()
        .map(|f| {
            let s = f.lock();
            VmFactoryStats { stocked: s.stock.values().map(Vec::len).sum(), ..s.stats }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stock never hands a VM to a request of another key, even if one were misfiled.
    #[test]
    fn a_vm_made_for_one_key_is_never_taken_for_another() {
        if let Err(e) = host() {
            // As `require_kvm!` in the integration tests: skip without KVM unless told not to.
            assert!(
                std::env::var_os("GLINT_REQUIRE_KVM").is_none(),
                "GLINT_REQUIRE_KVM is set but KVM is unusable: {e}"
            );
            return;
        }
        let misfiled = make(MsrFilter::Off).unwrap_or_else(|e| panic!("{e}"));
        let factory = start().unwrap_or_else(|e| panic!("{e}"));
        factory.lock().stock.entry(MsrFilter::DenyAll).or_default().push(misfiled);
        // Whatever the stock holds, every VM a DenyAll request gets was made for DenyAll.
        for _ in 0..2 * STOCK {
            let p = take(MsrFilter::DenyAll).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.key, MsrFilter::DenyAll);
        }
        // Off is never stocked: it is always made on the spot.
        assert!(!factory.lock().stock.contains_key(&MsrFilter::Off));
        assert_eq!(take(MsrFilter::Off).unwrap_or_else(|e| panic!("{e}")).key, MsrFilter::Off);
    }
}
