//! What can go wrong below the sandbox: the hypervisor and the system calls glint makes.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What glint was doing when a system call or ioctl failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Doing {
    /// Opening and probing `/dev/kvm`.
    Probing,
    /// Creating the VM.
    CreatingVm,
    /// Allocating or mapping guest memory.
    MappingMemory,
    /// Creating and configuring the vCPU.
    CreatingVcpu,
    /// Entering the guest.
    Running,
    /// Reading or clearing the dirty-page log.
    TrackingDirtyPages,
    /// Saving the vCPU's state for a snapshot.
    SavingState,
    /// Restoring the vCPU's state.
    RestoringState,
    /// Installing the kick signal's handler.
    InstallingSignal,
    /// Starting one of glint's own threads.
    StartingThread,
}

impl fmt::Display for Doing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Doing::Probing => "probing /dev/kvm",
            Doing::CreatingVm => "creating the VM",
            Doing::MappingMemory => "mapping guest memory",
            Doing::CreatingVcpu => "setting up the vCPU",
            Doing::Running => "running the guest",
            Doing::TrackingDirtyPages => "tracking dirty pages",
            Doing::SavingState => "saving the vCPU state",
            Doing::RestoringState => "restoring the vCPU state",
            Doing::InstallingSignal => "installing the interrupt signal handler",
            Doing::StartingThread => "starting a thread",
        })
    }
}

/// A failure of KVM or of the operating system underneath a sandbox.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// `/dev/kvm` could not be opened.
    #[error(
        "KVM is not available: glint needs read-write access to /dev/kvm (is the kvm module loaded, and may this user open it?)"
    )]
    NoKvm {
        /// The error from opening `/dev/kvm`.
        #[source]
        source: Arc<io::Error>,
    },
    /// KVM lacks a capability glint needs.
    #[error("KVM lacks {capability}, which glint needs; a newer host kernel is required")]
    MissingCapability {
        /// The capability's name.
        capability: &'static str,
    },
    /// A KVM ioctl failed.
    #[error("{ioctl} failed while {doing}{}", hint(source))]
    Ioctl {
        /// The ioctl.
        ioctl: &'static str,
        /// What glint was doing.
        doing: Doing,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A system call other than a KVM ioctl failed (memfd_create, mmap, sigaction, ...).
    #[error("{call} failed while {doing}{}", hint(source))]
    System {
        /// The system call.
        call: &'static str,
        /// What glint was doing.
        doing: Doing,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The host's own access to guest memory failed: addresses are host-computed, so this is a
    /// bug in glint.
    #[error("host access to {len} bytes of guest memory at {addr:#x} failed")]
    GuestMemory {
        /// Guest address.
        addr: u64,
        /// Bytes accessed.
        len: usize,
    },
}

impl VmmError {
    /// Whether this is the OS running out of something (file descriptors, memory): a limit
    /// that more or smaller sandboxes, or a higher rlimit, would move.
    pub fn is_resource_limit(&self) -> bool {
        match self {
            VmmError::Ioctl { source, .. } | VmmError::System { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN))
            }
            _ => false,
        }
    }

    /// The ioctl error for errno `errno`.
    pub(crate) fn ioctl_errno(ioctl: &'static str, doing: Doing, errno: i32) -> VmmError {
        VmmError::Ioctl { ioctl, doing, source: Arc::new(io::Error::from_raw_os_error(errno)) }
    }

    /// The ioctl error for `op` while `doing`, from kvm-ioctls' error.
    pub(crate) fn ioctl(ioctl: &'static str, doing: Doing) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |e| VmmError::Ioctl { ioctl, doing, source: Arc::new(io::Error::from_raw_os_error(e.errno())) }
    }

    /// The system-call error for `call` while `doing`, from `errno`.
    pub(crate) fn last_os(call: &'static str, doing: Doing) -> VmmError {
        VmmError::System { call, doing, source: Arc::new(io::Error::last_os_error()) }
    }
}

/// A hint for the OS errors that creating many sandboxes runs into.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            " (out of file descriptors: each sandbox holds three; raise the limit with `ulimit -n`)"
        }
        Some(libc::ENOMEM) => " (out of memory: fewer or smaller sandboxes, or more memory)",
        Some(libc::EAGAIN) => " (refused for now; retry later)",
        _ => "",
    }
}
