//! B.4 Reuse, restore, multi-tenancy: rows 31-34.

use crate::common::hostile::*;
use crate::common::testguest;
use glint::{Error, SandboxBuilder, SnapshotMismatch, Value};
use glint_abi::port;

const INITIAL_SECRETS: &str = "0|none|0|0x1f80";

#[test]
fn row_31_globals_heap_and_registers_revert_on_reset() {
    require_kvm!();
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        sb.call("secrets_set", &[Value::U64(0x5ec4e7)]).unwrap();
        sb.call("x87_cw_set", &[Value::U32(0x0c7f)]).unwrap();
        assert_eq!(sb.call("secrets_get", &[]).unwrap(), Value::String("6210791|6210791|6210791|0x7f80".into()));
        // Reuse without reset is explicit: the next tenant would see it.
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(6210791));
        sb.reset().unwrap();
        assert_eq!(sb.call("secrets_get", &[]).unwrap(), Value::String(INITIAL_SECRETS.into()));
        assert_eq!(sb.call("x87_cw_get", &[]).unwrap(), Value::U32(0x037f));
        // A later snapshot is a state of its own: it brings back exactly what it holds.
        sb.call("set_state", &[Value::U64(7)]).unwrap();
        let seven = sb.snapshot().unwrap();
        sb.call("secrets_set", &[Value::U64(9)]).unwrap();
        sb.restore(&seven).unwrap();
        assert_eq!(sb.call("secrets_get", &[]).unwrap(), Value::String("7|none|0|0x1f80".into()));
    });
}

#[test]
fn row_31_a_snapshot_taken_right_after_reset_holds_the_reset_state() {
    require_kvm!();
    let mut sb = sandbox();
    // A clean call that stops at a RETURN of the guest's choosing: inside `raw_frame`, one frame
    // deeper than the dispatcher.
    assert_eq!(raw_frame(&mut sb, &frame(&[0, 0]), port::RETURN).unwrap(), Value::Unit);
    sb.reset().unwrap();
    let after_reset = sb.snapshot().unwrap();
    assert_eq!(sb.call("rt_i32", &[Value::I32(5)]).unwrap(), Value::I32(5));
    // Restoring that snapshot must give the reset state; with the bug it resumes the guest
    // inside `raw_frame`, over the initial memory, and the guest's allocator panics.
    sb.restore(&after_reset).unwrap();
    assert_eq!(sb.call("rt_i32", &[Value::I32(6)]).unwrap(), Value::I32(6));
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
}

#[test]
fn row_32_a_poisoned_sandbox_refuses_everything_until_restored() {
    require_kvm!();
    let mut sb = sandbox();
    let before = sb.snapshot().unwrap();
    hostile(&mut sb, |sb| {
        let cause = fault_of(sb.call("ud2", &[]));
        let typed = sb.typed_fn::<(i32,), i32>("rt_i32").unwrap();
        for _ in 0..3 {
            let r = sb.call("rt_i32", &[Value::I32(1)]);
            assert!(
                matches!(&r, Err(Error::Poisoned { cause: c }) if matches!(&**c, Error::GuestFault(f) if *f == cause)),
                "{r:?}"
            );
            assert!(matches!(typed.call(sb, (1,)), Err(Error::Poisoned { .. })));
            assert!(matches!(sb.snapshot(), Err(Error::Poisoned { .. })));
        }
        // Refusals do not poison further or change the cause; any snapshot of this sandbox
        // (here one taken before the failure) brings it back.
        sb.restore(&before).unwrap();
        assert_eq!(typed.call(sb, (4,)).unwrap(), 4);
        // Poisoned again, for `hostile`'s own check of refusal and reset.
        assert!(matches!(sb.call("gp_fault", &[]), Err(Error::GuestFault(_))));
    });
}

#[test]
fn row_34_snapshots_fit_only_sandboxes_of_their_image_and_layout() {
    require_kvm!();
    let mut other = sandbox();
    other.call("set_state", &[Value::U64(21)]).unwrap();
    let foreign = other.snapshot().unwrap();
    let wide = builder().memory_mib(32).build(&testguest()).unwrap().init().unwrap().initial_snapshot().clone();
    let hello = builder().build(&crate::common::hello()).unwrap().init().unwrap().initial_snapshot().clone();
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (what, snap) in [(SnapshotMismatch::OtherLayout, &wide), (SnapshotMismatch::OtherImage, &hello)] {
            match sb.restore(snap) {
                Err(Error::SnapshotMismatch(why)) => assert_eq!(why, what),
                other => panic!("{what}: {other:?}"),
            }
            assert!(!sb.is_poisoned(), "a refused snapshot leaves the sandbox as it was");
            assert_eq!(sb.call("rt_i32", &[Value::I32(3)]).unwrap(), Value::I32(3));
        }
        // Refused while poisoned too, and the sandbox stays poisoned.
        let _ = sb.call("ud2", &[]);
        assert!(matches!(sb.restore(&hello), Err(Error::SnapshotMismatch { .. })));
        assert!(sb.is_poisoned());
        // Same image and layout: accepted, from another sandbox, even one with other host
        // functions (they are not guest state); a missing one is then an ordinary error.
        sb.restore(&foreign).unwrap();
        assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(21));
    });
    let mut bare = SandboxBuilder::new().unknown_imports_as_traps(true).build(&testguest()).unwrap().init().unwrap();
    beside_bystander(|| {
        bare.restore(&foreign).unwrap();
        assert_eq!(bare.call("get_state", &[]).unwrap(), Value::U64(21));
        let r = bare.call("host_add", &[Value::I32(1), Value::I32(2)]);
        assert!(matches!(&r, Err(Error::NoSuchHostFunction { name }) if name == "add"), "{r:?}");
    });
}
