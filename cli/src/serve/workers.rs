//! Worker OS threads that run guest calls. `KVM_RUN` blocks its thread for the whole call, so
//! calls never run on the async runtime's threads: each function has a lane of its own threads
//! (as many as its `max_concurrency`), fed by a channel. A function whose guest spins holds only
//! its own threads; the kernel schedules them against everyone else's.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Work for a lane: one guest call and what follows it (restoring the sandbox).
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// The worker threads of one function.
#[derive(Debug)]
pub struct Lane {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The lane is closed (the server is stopping).
#[derive(Debug)]
pub struct Closed;

impl Lane {
    /// Starts `threads` threads named after `function`.
    ///
    /// # Errors
    /// The OS refused a thread.
    pub fn new(function: &str, threads: usize) -> std::io::Result<Lane> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            // Linux keeps 15 bytes of a thread name.
            let name: String = format!("fn-{function}").chars().take(12).chain(format!("{i}").chars()).collect();
            handles.push(std::thread::Builder::new().name(name).spawn(move || work(&rx))?);
        }
        Ok(Lane { tx: Mutex::new(Some(tx)), threads: Mutex::new(handles) })
    }

    /// Queues a job; it runs on the first free thread.
    ///
    /// # Errors
    /// [`Closed`] once [`Lane::close`] was called.
    pub fn submit(&self, job: Job) -> Result<(), Closed> {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        tx.as_ref().ok_or(Closed)?.send(job).map_err(|_| Closed)
    }

    /// Refuses new jobs, lets the queued ones finish, and joins the threads.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).take();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.close();
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // One thread waits in `recv` holding the lock, the others wait for the lock: each job
        // goes to exactly one thread.
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => {
                // A panicking job must not take the thread (and the lane's capacity) with it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a worker job panicked; the worker carries on");
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_on_the_lane_threads_and_close_drains_them() {
        let lane = Lane::new("t", 3).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let done = Arc::clone(&done);
            lane.submit(Box::new(move || {
                assert!(std::thread::current().name().unwrap().starts_with("fn-t"));
                done.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        lane.submit(Box::new(|| panic!("a bad job"))).unwrap();
        lane.close();
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(lane.submit(Box::new(|| {})).is_err());
    }
}
