//! Calls across the boundary: every value type, several parameters, large values, state, host
//! functions, and the errors a caller can make.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, test_sandbox, testguest, HostFailure};
use glint::{Error, Value, ValueType};

#[test]
fn every_value_type_round_trips_typed() {
    require_kvm!();
    let mut sb = test_sandbox();
    common::assert_every_value_type_round_trips_typed(&mut sb);
}

#[test]
fn every_value_type_round_trips_untyped() {
    require_kvm!();
    let mut sb = test_sandbox();
    common::assert_every_value_type_round_trips(&mut sb);
}

#[test]
fn several_parameters_of_different_types() {
    require_kvm!();
    let mut sb = test_sandbox();
    let mix = sb.typed_fn::<(i32, u64, String, bool, f64, Vec<u8>), String>("mix").unwrap();
    let out = mix.call(&mut sb, (-3, 1 << 40, "abc".into(), true, 0.5, vec![1, 2, 3, 4])).unwrap();
    assert_eq!(out, "-3|1099511627776|abc|true|0.5|4");
}

#[test]
fn one_mebibyte_strings_and_bytes_cross_both_ways() {
    require_kvm!();
    let mut sb = test_sandbox();
    let big: String = (0..1 << 20).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let s = sb.typed_fn::<(String,), String>("rt_string").unwrap();
    assert_eq!(s.call(&mut sb, (big.clone(),)).unwrap(), big);
    let bytes: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let b = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    assert_eq!(b.call(&mut sb, (bytes.clone(),)).unwrap(), bytes);
    let make = sb.typed_fn::<(u64, u32), Vec<u8>>("make_bytes").unwrap();
    assert_eq!(make.call(&mut sb, (1 << 20, 0xab)).unwrap(), vec![0xab; 1 << 20]);
    // Repeated large calls do not exhaust the guest heap (the allocator frees).
    for _ in 0..8 {
        assert_eq!(b.call(&mut sb, (bytes.clone(),)).unwrap().len(), 1 << 20);
    }
}

#[test]
fn arguments_larger_than_the_input_buffer_are_refused_before_the_call() {
    require_kvm!();
    let mut sb = test_builder().input_buffer_size(64 << 10).build(&testguest()).unwrap().init().unwrap();
    let b = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    let err = b.call(&mut sb, (vec![0; 65 << 10],)).unwrap_err();
    assert!(matches!(err, Error::ArgumentsTooLarge { limit, .. } if limit == 64 << 10), "{err}");
    assert!(!sb.is_poisoned());
    assert_eq!(b.call(&mut sb, (vec![1; 10],)).unwrap(), vec![1; 10]);
}

#[test]
fn results_larger_than_the_output_buffer_are_an_error_not_a_crash() {
    require_kvm!();
    let mut sb = test_builder().output_buffer_size(64 << 10).build(&testguest()).unwrap().init().unwrap();
    let make = sb.typed_fn::<(u64, u32), Vec<u8>>("make_bytes").unwrap();
    let err = make.call(&mut sb, (1 << 20, 1)).unwrap_err();
    assert!(matches!(&err, Error::GuestFunction { message, .. } if message.contains("does not fit")), "{err}");
    assert_eq!(make.call(&mut sb, (3, 1)).unwrap(), vec![1; 3]);
}

#[test]
fn state_persists_across_calls() {
    require_kvm!();
    let mut sb = test_sandbox();
    let set = sb.typed_fn::<(u64,), ()>("set_state").unwrap();
    let get = sb.typed_fn::<(), u64>("get_state").unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 0);
    set.call(&mut sb, (42,)).unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 42);
    // A fresh sandbox from the same image starts from the initial state.
    let mut other = test_sandbox();
    assert_eq!(get.call(&mut other, ()).unwrap(), 0);
}

#[test]
fn guest_calls_a_host_function_that_returns_a_value() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = sb.typed_fn::<(i32, i32), i32>("host_add").unwrap();
    assert_eq!(f.call(&mut sb, (40, 2)).unwrap(), 42);
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();
    assert_eq!(probe.call(&mut sb, ("hello".into(),)).unwrap(), "ok:hi from the host");
}

#[test]
fn guest_sees_a_host_function_error_and_the_caller_gets_it_typed() {
    require_kvm!();
    let mut sb = test_sandbox();
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();
    assert_eq!(probe.call(&mut sb, ("fail".into(),)).unwrap(), "err:3:host says no: on purpose");
    let f = sb.typed_fn::<(), String>("host_fail_propagates").unwrap();
    match f.call(&mut sb, ()).unwrap_err() {
        Error::HostFunction { name, source } => {
            assert_eq!(name, "fail");
            assert_eq!(source.downcast_ref::<HostFailure>(), Some(&HostFailure("on purpose")));
        }
        other => panic!("expected HostFunction, got {other}"),
    }
    assert!(!sb.is_poisoned(), "a handled host error leaves the sandbox usable");
    assert_eq!(probe.call(&mut sb, ("hello".into(),)).unwrap(), "ok:hi from the host");
}

#[test]
fn unregistered_or_mistyped_host_calls_reach_the_guest_as_errors() {
    require_kvm!();
    let mut sb = test_sandbox();
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();
    assert_eq!(probe.call(&mut sb, ("nope".into(),)).unwrap(), "err:1:no host function named `nope`");
    // `add` takes two i32s; the probe calls it with none: the closure never runs.
    let out = probe.call(&mut sb, ("add".into(),)).unwrap();
    assert!(out.starts_with("err:2:`add` takes 2 arguments, got 0"), "{out}");
}

#[test]
fn a_panicking_host_function_ends_the_call_and_poisons() {
    require_kvm!();
    let mut sb = test_sandbox();
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();
    let err = probe.call(&mut sb, ("boom".into(),)).unwrap_err();
    assert!(
        matches!(&err, Error::HostFunctionPanicked { name, panic } if name == "boom" && panic.as_str().contains("on purpose")),
        "{err}"
    );
    assert!(sb.is_poisoned());
    assert!(matches!(probe.call(&mut sb, ("hello".into(),)), Err(Error::Poisoned { .. })));
}

#[test]
fn guest_function_errors_are_typed_and_do_not_poison() {
    require_kvm!();
    let mut sb = test_sandbox();
    let f = sb.typed_fn::<(String,), i32>("returns_err").unwrap();
    let err = f.call(&mut sb, ("nope".into(),)).unwrap_err();
    assert!(
        matches!(&err, Error::GuestFunction { name, message } if name == "returns_err" && message == "nope"),
        "{err}"
    );
    assert!(!sb.is_poisoned());
}

#[test]
fn unknown_function_and_wrong_signatures_are_refused_before_the_call() {
    require_kvm!();
    let mut sb = test_sandbox();
    assert!(matches!(sb.call("no_such", &[]), Err(Error::NoSuchFunction { name }) if name == "no_such"));
    assert!(matches!(sb.typed_fn::<(), ()>("no_such"), Err(Error::NoSuchFunction { .. })));
    // Wrong parameter types.
    match sb.typed_fn::<(String,), i32>("rt_i32").unwrap_err() {
        Error::SignatureMismatch { name, guest, requested } => {
            assert_eq!(name, "rt_i32");
            assert_eq!(guest.params, vec![ValueType::I32]);
            assert_eq!(requested.params, vec![ValueType::String]);
            assert_eq!(
                Error::SignatureMismatch { name, guest, requested }.to_string(),
                "`rt_i32` has signature (i32) -> i32, but was called as (String) -> i32"
            );
        }
        other => panic!("expected SignatureMismatch, got {other}"),
    }
    // Wrong result type.
    assert!(matches!(sb.typed_fn::<(i32,), i64>("rt_i32"), Err(Error::SignatureMismatch { .. })));
    // Wrong number of parameters, typed and untyped.
    assert!(matches!(sb.typed_fn::<(i32, i32), i32>("rt_i32"), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("rt_i32", &[]), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("rt_i32", &[Value::I32(1), Value::I32(2)]), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("rt_i32", &[Value::U32(1)]), Err(Error::SignatureMismatch { .. })));
    assert!(!sb.is_poisoned());
    assert_eq!(sb.call("rt_i32", &[Value::I32(5)]).unwrap(), Value::I32(5));
}

#[test]
fn exports_are_listed_with_signatures() {
    require_kvm!();
    let sb = test_sandbox();
    let mix = sb.exports().iter().find(|e| e.name == "mix").unwrap();
    assert_eq!(mix.signature.to_string(), "(i32, u64, String, bool, f64, Vec<u8>) -> String");
    assert_eq!(sb.signature("rt_unit").unwrap().to_string(), "() -> ()");
}

#[test]
fn a_panicking_log_hook_ends_the_call_typed_and_poisons() {
    require_kvm!();
    let mut sb = test_builder()
        .on_log(|r| {
            if r.message == "line 1" {
                panic!("log hook panicked on purpose");
            }
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    sb.call("set_state", &[Value::U64(41)]).unwrap();
    let log = sb.typed_fn::<(u32,), u32>("log_lines").unwrap();
    match log.call(&mut sb, (3,)) {
        Err(Error::CallbackPanicked { callback, panic }) => {
            assert_eq!(callback, "on_log");
            assert_eq!(panic.as_str(), "log hook panicked on purpose");
        }
        other => panic!("expected CallbackPanicked, got {other:?}"),
    }
    assert!(sb.is_poisoned());
    // The next call is refused: it must not hand back the interrupted call's result.
    assert!(matches!(sb.call("get_state", &[]), Err(Error::Poisoned { .. })));
    sb.reset().unwrap();
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
    assert_eq!(log.call(&mut sb, (1,)).unwrap(), 1, "line 0 does not panic the hook");
}

#[test]
fn guest_log_lines_reach_the_hook_sanitised() {
    require_kvm!();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut sb = test_builder()
        .on_log(move |r| sink.lock().unwrap().push(r.message.clone()))
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    let f = sb.typed_fn::<(u32,), u32>("log_lines").unwrap();
    assert_eq!(f.call(&mut sb, (3,)).unwrap(), 3);
    assert_eq!(*lines.lock().unwrap(), vec!["line 0", "line 1", "line 2"]);
}

#[test]
fn typed_handles_work_on_every_sandbox_of_the_image() {
    require_kvm!();
    let a = test_sandbox();
    let add = a.typed_fn::<(i32,), i32>("rt_i32").unwrap();
    let mut b = test_sandbox();
    assert_eq!(add.call(&mut b, (9,)).unwrap(), 9);
    let mut hello = test_builder().build(&common::hello()).unwrap().init().unwrap();
    assert!(matches!(add.call(&mut hello, (1,)), Err(Error::NoSuchFunction { .. })));
}

#[test]
fn host_functions_see_a_kill_or_deadline_through_call_cancelled() {
    require_kvm!();
    // A host function that waits for the cancel token instead of blocking blindly.
    let waiter = || -> Result<String, std::io::Error> {
        let start = std::time::Instant::now();
        while !glint::call_cancelled() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                return Ok("never cancelled".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(std::io::Error::other("cancelled"))
    };
    assert!(!glint::call_cancelled(), "outside a call nothing is cancelled");
    let mut sb = test_builder().host_fn("wait", waiter).build(&testguest()).unwrap().init().unwrap();
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();

    sb.set_call_timeout(Some(std::time::Duration::from_millis(100)));
    let start = std::time::Instant::now();
    assert!(matches!(probe.call(&mut sb, ("wait".into(),)), Err(Error::Timeout(_))));
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "the host function saw the deadline");

    sb.reset().unwrap();
    sb.set_call_timeout(None);
    let handle = sb.interrupt_handle();
    let killer = std::thread::spawn(move || {
        while !handle.kill() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let start = std::time::Instant::now();
    assert!(matches!(probe.call(&mut sb, ("wait".into(),)), Err(Error::Cancelled)));
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "the host function saw the kill");
    killer.join().unwrap();
    sb.reset().unwrap();
    assert_eq!(probe.call(&mut sb, ("hello".into(),)).unwrap(), "ok:hi from the host");
}

/// Per-sandbox host state: what the host functions of one sandbox have seen.
#[derive(Debug, Default)]
struct Tenant {
    calls: u32,
    names: Vec<String>,
}

#[test]
fn host_functions_reach_their_sandboxs_own_data_through_the_caller() {
    require_kvm!();
    let builder = glint::SandboxBuilder::<Tenant>::with_data()
        .host_fn("hello", |mut caller: glint::Caller<'_, Tenant>| -> String {
            caller.data_mut().calls += 1;
            format!("call {}", caller.data().calls)
        })
        .host_fn("add", |mut caller: glint::Caller<'_, Tenant>, a: i32, b: i32| {
            caller.data_mut().names.push(format!("{a}+{b}"));
            a + b
        })
        // A plain closure keeps working next to them.
        .host_fn("greeting", |name: String| name);
    let mut a = builder.build(&testguest()).unwrap().init().unwrap();
    let mut b = builder.build_with(&testguest(), Tenant { calls: 100, names: vec![] }).unwrap().init().unwrap();
    let probe = a.typed_fn::<(String,), String>("host_probe").unwrap();
    assert_eq!(probe.call(&mut a, ("hello".into(),)).unwrap(), "ok:call 1");
    assert_eq!(probe.call(&mut a, ("hello".into(),)).unwrap(), "ok:call 2");
    assert_eq!(probe.call(&mut b, ("hello".into(),)).unwrap(), "ok:call 101", "each sandbox has its own data");
    assert_eq!(a.call("host_add", &[Value::I32(2), Value::I32(3)]).unwrap(), Value::I32(5));
    assert_eq!((a.data().calls, a.data().names.clone()), (2, vec!["2+3".to_owned()]));
    assert_eq!(b.data().calls, 101);
    // The data is the host's, not the guest's: a restore leaves it alone.
    a.reset().unwrap();
    assert_eq!(a.data().calls, 2);
    a.data_mut().calls = 0;
    assert_eq!(probe.call(&mut a, ("hello".into(),)).unwrap(), "ok:call 1");
}

#[test]
fn a_pool_gives_every_checkout_fresh_data() {
    require_kvm!();
    let builder = glint::SandboxBuilder::<Tenant>::with_data()
        .host_fn("hello", |mut caller: glint::Caller<'_, Tenant>| -> String {
            caller.data_mut().calls += 1;
            format!("call {}", caller.data().calls)
        })
        .host_fn("add", |a: i32, b: i32| a + b);
    let config = glint::PoolConfig { max_sandboxes: 1, ready_target: 1, ..Default::default() };
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = made.clone();
    let pool = glint::SandboxPool::with_data(&builder, &testguest(), config, move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Tenant::default()
    })
    .unwrap();
    let probe = pool.typed_fn::<(String,), String>("host_probe").unwrap();
    for round in 0..3 {
        let mut sb = pool.take().unwrap();
        assert_eq!(sb.data().calls, 0, "round {round}: the data starts fresh");
        assert_eq!(probe.call(&mut sb, ("hello".into(),)).unwrap(), "ok:call 1", "round {round}");
        assert_eq!(probe.call(&mut sb, ("hello".into(),)).unwrap(), "ok:call 2");
    }
    assert_eq!(pool.stats().created, 1, "one VM served every checkout");
    assert!(
        made.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "data made for the template, the VM and each give-back"
    );
}
