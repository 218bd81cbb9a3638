//! The hello suite: one set of assertions, run against the Rust example guest
//! (`guest/bins/examples/hello`) and the C example guest (`guest/c/examples/hello_c`), which export
//! the same functions. Every value type the two use (i32 through `add`, `Vec<u8>` through `echo`,
//! f64 through `hypot`, String through `greet` and `fail`, u64 through `count` and `peek`), the
//! host call `greet` makes, state that persists until a restore, an abort with its message and a
//! fault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, HostFailure};
use glint::{Error, FaultKind, GuestImage, SandboxBuilder, Value};
use std::sync::{Arc, Mutex};

/// One test per function below, for each guest.
macro_rules! hello_suite {
    ($($guest:ident => $path:expr),* $(,)?) => {$(
        mod $guest {
            fn image() -> glint::GuestImage {
                static IMAGE: std::sync::OnceLock<glint::GuestImage> = std::sync::OnceLock::new();
                IMAGE.get_or_init(|| glint::GuestImage::from_file($path).expect("load the guest")).clone()
            }
            hello_suite!(@tests
                exports_and_imports_are_listed_with_signatures,
                add_works_typed_and_untyped_and_wraps,
                echo_returns_its_bytes_up_to_a_mebibyte,
                hypot_computes_floats_as_the_host_does,
                greet_calls_the_host_and_logs,
                greet_passes_a_failed_host_call_on_as_the_host_functions_error,
                a_missing_greeting_is_refused_at_init_or_fails_the_call_when_stubbed,
                count_persists_across_calls_until_a_restore,
                fail_aborts_with_its_message_and_poisons,
                peek_at_an_unmapped_address_faults_and_poisons,
                arguments_of_the_wrong_type_are_refused_before_the_guest_runs,
            );
        }
    )*};
    (@tests $($test:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            crate::require_kvm!();
            super::$test(&image());
        }
    )*};
}

hello_suite! {
    rust => glint_guest_artifacts::HELLO,
    c => glint_guest_artifacts::HELLO_C,
}

fn sandbox(image: &GuestImage) -> glint::Sandbox {
    test_builder().build(image).unwrap().init().unwrap()
}

fn exports_and_imports_are_listed_with_signatures(image: &GuestImage) {
    let sb = sandbox(image);
    let exports: Vec<String> = sb.exports().iter().map(|e| format!("{}{}", e.name, e.signature)).collect();
    assert_eq!(
        exports,
        [
            "add(i32, i32) -> i32",
            "greet(String) -> String",
            "echo(Vec<u8>) -> Vec<u8>",
            "hypot(f64, f64) -> f64",
            "count() -> u64",
            "fail(String) -> i32",
            "peek(u64) -> u64",
        ]
    );
    let imports: Vec<String> = sb.imports().iter().map(|i| format!("{}{}", i.name, i.signature)).collect();
    assert_eq!(imports, ["greeting(String) -> String"]);
}

fn add_works_typed_and_untyped_and_wraps(image: &GuestImage) {
    let mut sb = sandbox(image);
    let add = sb.typed_fn::<(i32, i32), i32>("add").unwrap();
    for (a, b) in [(2, 3), (-2, -3), (0, 0), (i32::MIN, -1), (i32::MAX, 1), (-7, i32::MAX)] {
        assert_eq!(add.call(&mut sb, (a, b)).unwrap(), a.wrapping_add(b), "add({a}, {b})");
    }
    assert_eq!(sb.call("add", &[Value::I32(40), Value::I32(2)]).unwrap(), Value::I32(42));
}

fn echo_returns_its_bytes_up_to_a_mebibyte(image: &GuestImage) {
    let mut sb = sandbox(image);
    let echo = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("echo").unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    for bytes in [vec![], vec![0, 1, 255], big] {
        assert_eq!(echo.call(&mut sb, (bytes.clone(),)).unwrap(), bytes);
    }
    // Repeated large calls do not exhaust the guest's heap.
    let big = vec![0xa5; 1 << 20];
    for _ in 0..8 {
        assert_eq!(echo.call(&mut sb, (big.clone(),)).unwrap().len(), 1 << 20);
    }
    assert_eq!(sb.call("echo", &[Value::Bytes(vec![9; 17])]).unwrap(), Value::Bytes(vec![9; 17]));
}

/// The guests' own algorithm, on the host: both compute IEEE 754 binary64 in the same order.
fn newton_hypot(a: f64, b: f64) -> f64 {
    let s = a * a + b * b;
    if s == 0.0 {
        return 0.0;
    }
    let mut x = s;
    for _ in 0..64 {
        x = 0.5 * (x + s / x);
    }
    x
}

fn hypot_computes_floats_as_the_host_does(image: &GuestImage) {
    let mut sb = sandbox(image);
    let hypot = sb.typed_fn::<(f64, f64), f64>("hypot").unwrap();
    assert_eq!(hypot.call(&mut sb, (3.0, 4.0)).unwrap(), 5.0);
    assert_eq!(hypot.call(&mut sb, (5.0, -12.0)).unwrap(), 13.0);
    assert_eq!(hypot.call(&mut sb, (0.0, -0.0)).unwrap(), 0.0);
    for (a, b) in [(1.5, 2.0), (1e-3, 2e-3), (123.456, 7.0e10), (f64::MIN_POSITIVE, 1.0)] {
        let got = hypot.call(&mut sb, (a, b)).unwrap();
        assert_eq!(got.to_bits(), newton_hypot(a, b).to_bits(), "hypot({a}, {b}) = {got}");
    }
    assert!(hypot.call(&mut sb, (f64::NAN, 1.0)).unwrap().is_nan());
    assert_eq!(sb.call("hypot", &[Value::F64(6.0), Value::F64(8.0)]).unwrap(), Value::F64(10.0));
}

fn greet_calls_the_host_and_logs(image: &GuestImage) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut sb = test_builder()
        .on_log(move |r| sink.lock().unwrap().push(r.message.clone()))
        .build(image)
        .unwrap()
        .init()
        .unwrap();
    let greet = sb.typed_fn::<(String,), String>("greet").unwrap();
    // The builder's `greeting` returns "Hello, {name}"; the guest adds ", {name}!".
    assert_eq!(greet.call(&mut sb, ("Ada".into(),)).unwrap(), "Hello, Ada, Ada!");
    assert_eq!(greet.call(&mut sb, ("héllo ✓".into(),)).unwrap(), "Hello, héllo ✓, héllo ✓!");
    assert_eq!(greet.call(&mut sb, (String::new(),)).unwrap(), "Hello, , !");
    assert_eq!(*lines.lock().unwrap(), ["greeting Ada", "greeting héllo ✓", "greeting "]);
    // A long name crosses both ways.
    let long = "x".repeat(100_000);
    assert_eq!(greet.call(&mut sb, (long.clone(),)).unwrap(), format!("Hello, {long}, {long}!"));
}

fn greet_passes_a_failed_host_call_on_as_the_host_functions_error(image: &GuestImage) {
    let builder = SandboxBuilder::new().host_fn("greeting", |name: String| -> Result<String, HostFailure> {
        if name == "nobody" {
            Err(HostFailure("no greeting for nobody"))
        } else {
            Ok(format!("Hi {name}"))
        }
    });
    let mut sb = builder.build(image).unwrap().init().unwrap();
    match sb.call("greet", &[Value::String("nobody".into())]) {
        Err(Error::HostFunction { name, source }) => {
            assert_eq!(name, "greeting");
            assert_eq!(source.downcast_ref::<HostFailure>(), Some(&HostFailure("no greeting for nobody")));
        }
        other => panic!("expected the host function's error, got {other:?}"),
    }
    assert!(!sb.is_poisoned(), "a failed host call passed on does not poison");
    assert_eq!(sb.call("greet", &[Value::String("Bo".into())]).unwrap(), Value::String("Hi Bo, Bo!".into()));
}

fn a_missing_greeting_is_refused_at_init_or_fails_the_call_when_stubbed(image: &GuestImage) {
    match SandboxBuilder::new().build(image).unwrap().init() {
        Err(Error::Imports(errors)) => {
            assert!(errors.to_string().contains("`greeting(String) -> String` is not provided"), "{errors}")
        }
        other => panic!("expected the missing import to be refused, got {other:?}"),
    }
    let mut sb = SandboxBuilder::new().unknown_imports_as_traps(true).build(image).unwrap().init().unwrap();
    assert_eq!(sb.call("add", &[Value::I32(1), Value::I32(2)]).unwrap(), Value::I32(3));
    match sb.call("greet", &[Value::String("Ada".into())]) {
        Err(Error::NoSuchHostFunction { name }) => assert_eq!(name, "greeting"),
        other => panic!("expected the stub to fail the call, got {other:?}"),
    }
    assert!(!sb.is_poisoned());
}

fn count_persists_across_calls_until_a_restore(image: &GuestImage) {
    let mut sb = sandbox(image);
    let count = sb.typed_fn::<(), u64>("count").unwrap();
    assert_eq!(count.call(&mut sb, ()).unwrap(), 1);
    assert_eq!(count.call(&mut sb, ()).unwrap(), 2);
    let at_two = sb.snapshot().unwrap();
    assert_eq!(count.call(&mut sb, ()).unwrap(), 3);
    // Another sandbox of the image has its own counter.
    let mut other = sandbox(image);
    assert_eq!(count.call(&mut other, ()).unwrap(), 1);
    sb.restore(&at_two).unwrap();
    assert_eq!(count.call(&mut sb, ()).unwrap(), 3);
    sb.reset().unwrap();
    assert_eq!(count.call(&mut sb, ()).unwrap(), 1);
    assert_eq!(sb.call("count", &[]).unwrap(), Value::U64(2));
}

fn fail_aborts_with_its_message_and_poisons(image: &GuestImage) {
    let mut sb = sandbox(image);
    let fail = sb.typed_fn::<(String,), i32>("fail").unwrap();
    match fail.call(&mut sb, ("boom: the guest gave up".into(),)) {
        // The Rust guest's panic handler adds where it panicked: "boom (at src/main.rs:60)".
        Err(Error::GuestPanic { message }) => {
            assert!(
                message == "boom: the guest gave up" || message.starts_with("boom: the guest gave up (at "),
                "{message}"
            )
        }
        other => panic!("expected a guest panic, got {other:?}"),
    }
    assert!(sb.is_poisoned());
    assert!(matches!(sb.call("add", &[Value::I32(1), Value::I32(1)]), Err(Error::Poisoned { .. })));
    sb.reset().unwrap();
    assert_eq!(sb.call("add", &[Value::I32(1), Value::I32(1)]).unwrap(), Value::I32(2));
}

fn peek_at_an_unmapped_address_faults_and_poisons(image: &GuestImage) {
    let mut sb = sandbox(image);
    let peek = sb.typed_fn::<(u64,), u64>("peek").unwrap();
    for addr in [0xdead_0000u64, 0, 0x1000] {
        match peek.call(&mut sb, (addr,)) {
            Err(Error::GuestFault(f)) => {
                assert_eq!((f.kind, f.address, f.stack_overflow), (FaultKind::PageFault, Some(addr), false), "{f}");
                assert!(f.rip >= 0x20_0000, "the fault is in the guest's code: {f}");
            }
            other => panic!("expected a page fault at {addr:#x}, got {other:?}"),
        }
        assert!(sb.is_poisoned());
        sb.reset().unwrap();
    }
    // A mapped address reads: the boot info's magic, "bo_glint".
    assert_eq!(peek.call(&mut sb, (0x1f_f000,)).unwrap(), 0x746e_696c_675f_6f62);
}

fn arguments_of_the_wrong_type_are_refused_before_the_guest_runs(image: &GuestImage) {
    let mut sb = sandbox(image);
    assert!(matches!(sb.typed_fn::<(String,), i32>("add"), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("echo", &[Value::String("x".into())]), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("count", &[Value::U64(1)]), Err(Error::SignatureMismatch { .. })));
    assert!(matches!(sb.call("nope", &[]), Err(Error::NoSuchFunction { .. })));
    assert!(!sb.is_poisoned());
    assert_eq!(sb.call("count", &[]).unwrap(), Value::U64(1));
}
