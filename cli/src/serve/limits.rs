//! Admission control per function: at most `max_concurrency` requests run and at most `queue`
//! wait; one more is refused at once (503 with Retry-After), never queued without bound.
//!
//! Running is bounded by the function's worker threads (see `workers`); this counter bounds
//! running plus waiting. A permit is released when the guest call is over (not when the client
//! goes away), so clients that disconnect cannot pile up calls behind the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The admission counter of one function.
#[derive(Debug)]
pub struct Admission {
    capacity: usize,
    used: AtomicUsize,
}

/// One admitted request; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
}

impl Admission {
    /// Room for `running + waiting` requests.
    pub fn new(running: usize, waiting: usize) -> Arc<Admission> {
        Arc::new(Admission { capacity: running.saturating_add(waiting), used: AtomicUsize::new(0) })
    }

    /// A permit, or `None` when the function is full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.capacity).then_some(n + 1))
            .ok()
            .map(|_| Permit { admission: Arc::clone(self) })
    }

    /// Requests admitted now (running or waiting).
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_running_plus_waiting_and_frees_on_drop() {
        let a = Admission::new(2, 1);
        let permits: Vec<Permit> = (0..3).map(|_| a.try_admit().unwrap()).collect();
        assert!(a.try_admit().is_none());
        assert_eq!(a.in_use(), 3);
        drop(permits);
        assert_eq!(a.in_use(), 0);
        assert!(a.try_admit().is_some());
    }

    #[test]
    fn concurrent_admission_never_exceeds_the_capacity() {
        let a = Admission::new(4, 4);
        let max_seen = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(p) = a.try_admit() {
                            max_seen.fetch_max(a.in_use(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(max_seen.load(Ordering::Relaxed) <= 8);
        assert_eq!(a.in_use(), 0);
    }
}
