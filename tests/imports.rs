//! Declared host imports: checked against the registered host functions at initialisation, one
//! error naming each problem; an opt-in turns unknown imports into stubs that fail when called.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{hello, test_builder, testguest};
use glint::{Error, ImportError, SandboxBuilder, Signature, Value, ValueType};

#[test]
fn a_sandbox_lists_the_imports_its_guest_declares() {
    require_kvm!();
    let sb = test_builder().build(&hello()).unwrap().init().unwrap();
    let imports: Vec<(String, String)> =
        sb.imports().iter().map(|i| (i.name.clone(), i.signature.to_string())).collect();
    assert_eq!(imports, vec![("greeting".to_owned(), "(String) -> String".to_owned())]);
    let sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    assert_eq!(sb.imports().len(), 1);
    assert_eq!(
        sb.imports()[0].signature,
        Signature { params: vec![ValueType::I32, ValueType::I32], result: ValueType::I32 }
    );
}

#[test]
fn a_missing_import_is_refused_at_init_naming_it() {
    require_kvm!();
    match SandboxBuilder::new().build(&hello()).unwrap().init() {
        Err(Error::Imports(errors)) => {
            assert_eq!(
                errors.0,
                vec![ImportError::Missing {
                    name: "greeting".into(),
                    signature: Signature { params: vec![ValueType::String], result: ValueType::String },
                }]
            );
            assert!(errors.to_string().contains("`greeting(String) -> String` is not provided"), "{errors}");
            assert_eq!(Error::Imports(errors).kind(), glint::ErrorKind::ImageRefused);
        }
        other => panic!("expected the import to be refused, got {other:?}"),
    }
}

#[test]
fn an_import_registered_with_another_signature_is_refused_even_with_stubs_allowed() {
    require_kvm!();
    for traps in [false, true] {
        let b = SandboxBuilder::new().unknown_imports_as_traps(traps).host_fn("greeting", |n: u32| n + 1);
        match b.build(&hello()).unwrap().init() {
            Err(Error::Imports(errors)) => assert_eq!(
                errors.0,
                vec![ImportError::Mismatched {
                    name: "greeting".into(),
                    declared: Signature { params: vec![ValueType::String], result: ValueType::String },
                    provided: Signature { params: vec![ValueType::U32], result: ValueType::U32 },
                }],
                "traps {traps}"
            ),
            other => panic!("traps {traps}: {other:?}"),
        }
    }
}

#[test]
fn every_problem_is_named_in_one_error() {
    require_kvm!();
    // The test guest imports `add(i32, i32) -> i32`; the hello guest `greeting`. A builder with a
    // wrong `add` refuses the test guest with that one problem, and nothing else is reported.
    let wrong_add = SandboxBuilder::new().host_fn("add", |a: i64, b: i64| a + b);
    match wrong_add.build(&testguest()).unwrap().init() {
        Err(Error::Imports(errors)) => {
            assert_eq!(errors.0.len(), 1);
            assert!(matches!(&errors.0[0], ImportError::Mismatched { name, .. } if name == "add"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_imports_can_be_stubs_that_fail_when_called() {
    require_kvm!();
    let mut sb = SandboxBuilder::new().unknown_imports_as_traps(true).build(&hello()).unwrap().init().unwrap();
    assert_eq!(sb.call("add", &[Value::I32(2), Value::I32(3)]).unwrap(), Value::I32(5), "the rest works");
    match sb.call("greet", &[Value::String("Ada".into())]) {
        Err(Error::NoSuchHostFunction { name }) => assert_eq!(name, "greeting"),
        other => panic!("expected the stub to fail, got {other:?}"),
    }
    assert!(!sb.is_poisoned(), "a failed host call is the guest's to handle, not a poisoning");
}

#[test]
fn a_typed_import_wrapper_calls_the_host_function() {
    require_kvm!();
    let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    assert_eq!(sb.call("import_add", &[Value::I32(40), Value::I32(2)]).unwrap(), Value::I32(42));
    let mut hello = test_builder().build(&hello()).unwrap().init().unwrap();
    assert_eq!(hello.call("greet", &[Value::String("Ada".into())]).unwrap(), Value::String("Hello, Ada, Ada!".into()));
}

#[test]
fn a_guest_that_fails_for_its_own_reason_after_a_host_error_is_not_blamed_on_the_host() {
    require_kvm!();
    let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    // The guest quotes the host's message in its own error: attribution is by code, not text.
    match sb.call("host_fail_own_error", &[]) {
        Err(Error::GuestFunction { name, message }) => {
            assert_eq!(name, "host_fail_own_error");
            assert!(message.starts_with("gave up after: host says no"), "{message}");
        }
        other => panic!("expected the guest's own error, got {other:?}"),
    }
    // Passing the host's error on with `?` is the host function's failure.
    assert!(matches!(sb.call("host_fail_propagates", &[]), Err(Error::HostFunction { name, .. }) if name == "fail"));
}
