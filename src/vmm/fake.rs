//! A fake vCPU and fake guest memory, so the run loop and restore can be tested without KVM.
//!
//! The fake vCPU plays a script: each `run` takes the next step, which may write guest memory
//! (through [`GuestSide`], marking pages dirty as the guest would) and returns an [`Exit`].
#![allow(clippy::indexing_slicing, clippy::unwrap_used, reason = "test support")]

use super::selectors::Selectors;
use super::{Exit, GuestMemory, Restore, Vcpu, VcpuState, VmmError};
use glint_abi::layout::PAGE_SIZE;
use kvm_bindings::{kvm_debugregs, kvm_regs, kvm_sregs, kvm_xcrs, kvm_xsave};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

#[derive(Default)]
struct Shared {
    bytes: Vec<u8>,
    /// Pages the guest wrote since the last `take_dirty`.
    guest_dirty: Vec<u64>,
}

/// Guest memory in a vector.
pub(crate) struct FakeMemory {
    shared: Rc<RefCell<Shared>>,
    host_dirty: Vec<u64>,
    /// Every page `write_untracked` wrote (what restore copied back), in order.
    pub(crate) copied_back: Vec<u64>,
}

/// What the fake guest uses to touch its memory.
#[derive(Clone)]
pub(crate) struct GuestSide(Rc<RefCell<Shared>>);

fn mark(bitmap: &mut [u64], addr: u64, len: usize) {
    if len == 0 {
        return;
    }
    for page in addr / PAGE_SIZE..=(addr + len as u64 - 1) / PAGE_SIZE {
        bitmap[(page / 64) as usize] |= 1 << (page % 64);
    }
}

impl GuestSide {
    /// A guest write: lands in memory and in the dirty log.
    pub(crate) fn write(&self, addr: u64, bytes: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.bytes[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
        mark(&mut s.guest_dirty, addr, bytes.len());
    }

    pub(crate) fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        self.0.borrow().bytes[addr as usize..addr as usize + len].to_vec()
    }
}

impl FakeMemory {
    pub(crate) fn new(size: u64) -> (FakeMemory, GuestSide) {
        let words = (size / PAGE_SIZE).div_ceil(64) as usize;
        let shared = Rc::new(RefCell::new(Shared { bytes: vec![0; size as usize], guest_dirty: vec![0; words] }));
        (
            FakeMemory { shared: Rc::clone(&shared), host_dirty: vec![0; words], copied_back: Vec::new() },
            GuestSide(shared),
        )
    }
}

impl GuestMemory for FakeMemory {
    fn pages(&self) -> u64 {
        self.shared.borrow().bytes.len() as u64 / PAGE_SIZE
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), VmmError> {
        let s = self.shared.borrow();
        let src = s
            .bytes
            .get(addr as usize..addr as usize + buf.len())
            .ok_or(VmmError::GuestMemory { addr, len: buf.len() })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError> {
        let mut s = self.shared.borrow_mut();
        let dst = s
            .bytes
            .get_mut(addr as usize..addr as usize + bytes.len())
            .ok_or(VmmError::GuestMemory { addr, len: bytes.len() })?;
        dst.copy_from_slice(bytes);
        mark(&mut self.host_dirty, addr, bytes.len());
        Ok(())
    }

    fn write_with<R>(&mut self, addr: u64, len: usize, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Result<R, VmmError> {
        let mut s = self.shared.borrow_mut();
        let dst = s.bytes.get_mut(addr as usize..addr as usize + len).ok_or(VmmError::GuestMemory { addr, len })?;
        let (written, r) = f(dst);
        drop(s);
        mark(&mut self.host_dirty, addr, written.min(len));
        Ok(r)
    }

    fn read_with<R>(&self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, VmmError> {
        let s = self.shared.borrow();
        let src = s.bytes.get(addr as usize..addr as usize + len).ok_or(VmmError::GuestMemory { addr, len })?;
        Ok(f(src))
    }

    fn write_untracked(&mut self, addr: u64, bytes: &[u8]) -> Result<(), VmmError> {
        let mut s = self.shared.borrow_mut();
        let dst = s
            .bytes
            .get_mut(addr as usize..addr as usize + bytes.len())
            .ok_or(VmmError::GuestMemory { addr, len: bytes.len() })?;
        dst.copy_from_slice(bytes);
        if bytes.len() as u64 == PAGE_SIZE {
            self.copied_back.push(addr / PAGE_SIZE);
        }
        Ok(())
    }

    fn take_dirty(&mut self) -> Result<Vec<u64>, VmmError> {
        let mut s = self.shared.borrow_mut();
        let mut dirty = std::mem::replace(&mut s.guest_dirty, vec![0; self.host_dirty.len()]);
        for (d, h) in dirty.iter_mut().zip(self.host_dirty.iter_mut()) {
            *d |= std::mem::take(h);
        }
        Ok(dirty)
    }
}

/// One step of the fake guest: it may write memory and change registers, then exits.
pub(crate) type Step = Box<dyn FnMut(&GuestSide, &mut kvm_regs) -> Exit>;

/// A vCPU that plays a script of steps.
pub(crate) struct FakeVcpu {
    guest: GuestSide,
    script: VecDeque<Step>,
    pub(crate) regs: kvm_regs,
    pub(crate) cr2: u64,
    immediate_exit: Box<u8>,
    /// Every restore, in order.
    pub(crate) restores: Vec<(u64, Restore)>,
}

impl FakeVcpu {
    pub(crate) fn new(guest: GuestSide) -> FakeVcpu {
        FakeVcpu {
            guest,
            script: VecDeque::new(),
            regs: kvm_regs::default(),
            cr2: 0,
            immediate_exit: Box::new(0),
            restores: Vec::new(),
        }
    }

    /// Appends a step to the script.
    pub(crate) fn then(&mut self, step: impl FnMut(&GuestSide, &mut kvm_regs) -> Exit + 'static) -> &mut Self {
        self.script.push_back(Box::new(step));
        self
    }
}

pub(crate) fn state_with(regs: kvm_regs) -> VcpuState {
    VcpuState {
        regs,
        sregs: kvm_sregs::default(),
        xsave: Box::new(kvm_xsave::default()),
        xcrs: kvm_xcrs::default(),
        debugregs: kvm_debugregs::default(),
        msrs: Vec::new(),
        selectors: Selectors::NULL,
    }
}

impl Vcpu for FakeVcpu {
    fn run(&mut self) -> Result<Exit, VmmError> {
        let Some(mut step) = self.script.pop_front() else {
            panic!("the fake guest ran past the end of its script");
        };
        Ok(step(&self.guest, &mut self.regs))
    }

    fn enter_long_mode(&mut self, rip: u64, rsp: u64, rdi: u64) -> Result<(), VmmError> {
        self.regs = kvm_regs { rip, rsp, rdi, rflags: 2, ..Default::default() };
        Ok(())
    }

    fn save(&mut self) -> Result<VcpuState, VmmError> {
        Ok(state_with(self.regs))
    }

    fn restore(&mut self, state: &VcpuState, how: Restore) -> Result<(), VmmError> {
        self.regs = state.regs;
        self.restores.push((state.regs.rip, how));
        Ok(())
    }

    fn resume_guest(&mut self, state: &VcpuState) -> Result<(), VmmError> {
        self.regs = state.regs;
        Ok(())
    }

    fn fault_address(&self) -> u64 {
        self.cr2
    }

    fn immediate_exit(&mut self) -> *mut u8 {
        &mut *self.immediate_exit
    }

    fn clear_immediate_exit(&mut self) {
        *self.immediate_exit = 0;
    }

    fn warm_up(&mut self) -> Result<(), VmmError> {
        Ok(())
    }
}
