//! The interrupt signal is process-wide, so this file is its own test binary (its own process):
//! glint refuses to take over a signal the embedder handles, and uses another when told to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use glint::{ConfigError, Error, Value};
use std::time::Duration;

extern "C" fn embedders_handler(_: libc::c_int) {}

fn handler_of(signal: libc::c_int) -> usize {
    // SAFETY: reads the current disposition into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[test]
fn an_embedders_signal_is_not_taken_over_and_another_can_be_chosen() {
    require_kvm!();
    let theirs = libc::SIGRTMIN() + 2;
    // SAFETY: installs a do-nothing handler for a real-time signal nobody sends in this test.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = embedders_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(theirs, &sa, std::ptr::null_mut()), 0);
    }
    match test_builder().build(&testguest()) {
        Err(Error::Config(e @ ConfigError::SignalInUse { offset: 2 })) => {
            assert!(e.to_string().contains("set_interrupt_signal_offset"), "{e}");
        }
        other => panic!("expected the signal to be refused, got {other:?}"),
    }
    // Any offset from 0 to SIGRTMAX - SIGRTMIN may be chosen (until a sandbox uses one), and
    // nothing outside.
    let last = libc::SIGRTMAX() - libc::SIGRTMIN();
    for offset in [-1, last + 1, 99] {
        assert!(
            matches!(
                glint::set_interrupt_signal_offset(offset),
                Err(Error::Config(ConfigError::SignalOutOfRange { offset: o })) if o == offset
            ),
            "offset {offset}"
        );
    }
    glint::set_interrupt_signal_offset(0).unwrap();
    glint::set_interrupt_signal_offset(last).unwrap();
    glint::set_interrupt_signal_offset(5).unwrap();

    let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    sb.set_call_timeout(Some(Duration::from_millis(100)));
    assert!(matches!(sb.call("spin", &[]), Err(Error::Timeout(_))), "deadlines work through SIGRTMIN+5");
    sb.reset().unwrap();
    assert_eq!(sb.call("rt_i32", &[Value::I32(4)]).unwrap(), Value::I32(4));

    assert!(
        matches!(
            glint::set_interrupt_signal_offset(6),
            Err(Error::Config(ConfigError::SignalAlreadyChosen { current: 5 }))
        ),
        "fixed once in use"
    );
    assert_eq!(handler_of(theirs), embedders_handler as *const () as usize, "the embedder's handler is untouched");
    assert_ne!(handler_of(libc::SIGRTMIN() + 5), libc::SIG_DFL);
}
