//! Host-call dispatch (HOSTILE-GUESTS.md rows 19-23): a host-call request as a guest writes it,
//! decoded as the host decodes it and handed to real typed host functions through
//! `glint::HostFunction::call`, the path every registered closure takes.
//!
//! The input is the request body (name, argc, values). The name does not choose the function:
//! every input goes to each of the functions below, so each input exercises every signature. The
//! harness decodes the arguments itself first; a closure runs only when they are exactly what its
//! signature asks for (same count, same types, nothing left over), and then receives exactly those
//! values (floats compared by bits). Any other request must come back as a `BadArguments` error
//! with the closure never run.
#![no_main]
#![allow(clippy::panic, reason = "a panic is how a fuzz target reports a bug")]

use std::cell::{Cell, RefCell};

use glint::{HostFunction, Value};
use glint_abi::wire::{self, Reader};
use glint_abi::ValueRef;
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The arguments the closure about to run must receive; `None` when it must not run at all.
    static EXPECTED: RefCell<Option<Vec<Bits>>> = const { RefCell::new(None) };
    /// Set by every closure when it runs.
    static RAN: Cell<bool> = const { Cell::new(false) };
}

/// A value compared by its bits, so that NaN equals itself.
#[derive(Debug, PartialEq)]
enum Bits {
    Unit,
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(u32),
    F64(u64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
}

fn bits(v: ValueRef<'_>) -> Bits {
    match v {
        ValueRef::Unit => Bits::Unit,
        ValueRef::I32(x) => Bits::I32(x),
        ValueRef::U32(x) => Bits::U32(x),
        ValueRef::I64(x) => Bits::I64(x),
        ValueRef::U64(x) => Bits::U64(x),
        ValueRef::F32(x) => Bits::F32(x.to_bits()),
        ValueRef::F64(x) => Bits::F64(x.to_bits()),
        ValueRef::Bool(x) => Bits::Bool(x),
        ValueRef::String(x) => Bits::String(x.to_owned()),
        ValueRef::Bytes(x) => Bits::Bytes(x.to_vec()),
    }
}

/// Called first thing by every closure with the arguments it was given.
fn received(args: &[Value]) {
    RAN.set(true);
    let got: Vec<Bits> = args.iter().map(|v| bits(v.as_value_ref())).collect();
    EXPECTED.with_borrow(|expected| match expected {
        Some(expected) => assert_eq!(&got, expected, "the closure received other arguments than the guest sent"),
        None => panic!("the closure ran although the request does not match its signature: {got:?}"),
    });
}

/// Dispatches the request in `args` to `f` and checks the outcome against the harness's own
/// reading of the arguments. `fails` tells whether the closure itself returns `Err` for them.
fn dispatch<P, R, F: HostFunction<(), P, R>>(f: &F, args: &Reader<'_>, argc: usize, fails: impl Fn(&[Bits]) -> bool) {
    let signature = <F as HostFunction<(), P, R>>::signature();
    let expected = decode(args.clone(), argc).filter(|values| {
        values.len() == signature.params.len() && values.iter().zip(&signature.params).all(|(v, &ty)| v.ty() == ty)
    });
    let expected: Option<Vec<Bits>> = expected.map(|values| values.into_iter().map(bits).collect());
    let should_fail = expected.as_deref().is_some_and(&fails);
    let matches = expected.is_some();
    EXPECTED.set(expected);
    RAN.set(false);
    let mut out = Vec::new();
    let result = <F as HostFunction<(), P, R>>::call(f, &mut (), args.clone(), argc, &mut out);
    let ran = RAN.get();
    EXPECTED.set(None);
    match result {
        Ok(()) => {
            assert!(matches && ran && !should_fail, "{signature} accepted a request it should refuse");
            match wire::read_outcome(&out) {
                Ok(wire::Outcome::Ok(value)) => assert_eq!(value.ty(), signature.result, "{signature} returned {value:?}"),
                other => panic!("{signature} wrote {other:?}"),
            }
        }
        Err(failure) => {
            let text = format!("{failure:?}");
            if matches {
                assert!(ran && should_fail && text.starts_with("Failed"), "{signature} refused a good request: {text}");
            } else {
                assert!(!ran && text.starts_with("BadArguments"), "{signature} failed wrongly: {text}");
            }
        }
    }
}

/// The harness's own reading: exactly `argc` values and nothing after them.
fn decode(mut r: Reader<'_>, argc: usize) -> Option<Vec<ValueRef<'_>>> {
    let values = (0..argc).map(|_| r.value().ok()).collect::<Option<Vec<_>>>()?;
    r.finish().ok()?;
    Some(values)
}

fuzz_target!(|data: &[u8]| {
    let Ok((_name, argc, args)) = wire::read_host_call_head(data) else {
        return;
    };
    let never = |_: &[Bits]| false;

    let greeting = |n: i32, name: String| -> String {
        received(&[Value::I32(n), Value::String(name.clone())]);
        format!("{n} {name}")
    };
    dispatch::<(i32, String), String, _>(&greeting, &args, argc, never);

    let tick = || received(&[]);
    dispatch::<(), (), _>(&tick, &args, argc, never);

    let echo = |bytes: Vec<u8>| -> Vec<u8> {
        received(&[Value::Bytes(bytes.clone())]);
        bytes
    };
    dispatch::<(Vec<u8>,), Vec<u8>, _>(&echo, &args, argc, never);

    // A closure that may fail: its `Err` must reach the caller as `Failed`, not `BadArguments`.
    let divide = |a: i64, b: i64| -> Result<i64, String> {
        received(&[Value::I64(a), Value::I64(b)]);
        a.checked_div(b).ok_or_else(|| format!("cannot divide {a} by {b}"))
    };
    let divide_fails = |v: &[Bits]| matches!(v, [Bits::I64(a), Bits::I64(b)] if a.checked_div(*b).is_none());
    dispatch::<(i64, i64), Result<i64, String>, _>(&divide, &args, argc, divide_fails);

    // Eight parameters, the most a host function takes, of every other type.
    let all = |a: u32, b: u64, c: f32, d: f64, e: bool, _unit: (), g: String, h: Vec<u8>| -> f64 {
        received(&[
            Value::U32(a),
            Value::U64(b),
            Value::F32(c),
            Value::F64(d),
            Value::Bool(e),
            Value::Unit,
            Value::String(g),
            Value::Bytes(h),
        ]);
        d
    };
    dispatch::<(u32, u64, f32, f64, bool, (), String, Vec<u8>), f64, _>(&all, &args, argc, never);
});
