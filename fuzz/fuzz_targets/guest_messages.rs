//! Every decoder the host applies to what a guest writes into its output buffer (HOSTILE-GUESTS.md
//! rows 18-20, 24, 26, 27), on arbitrary bytes.
//!
//! The first byte selects the message kind (low 7 bits: 0 call result, 1 host call, 2 abort, 3 log,
//! 4 export table, 5 call, anything else all of them); with its top bit set, the rest is the whole
//! output buffer, length prefix first, cut with `wire::frame_len` as the host does, otherwise it is
//! the message body itself. No input may panic, a decoded slice must lie inside the input, and a
//! message that decodes must re-encode to exactly its bytes: the decoders accept one spelling per
//! message, so nothing the host accepts is ambiguous.
#![no_main]
#![allow(clippy::panic, reason = "a panic is how a fuzz target reports a bug")]

use glint_abi::wire::{self, Full, Outcome, Reader, LEN_PREFIX, MAX_EXPORTS, MAX_NAME_LEN, MAX_PARAMS};
use glint_abi::{Value, ValueRef, ValueType};
use libfuzzer_sys::fuzz_target;

/// Selector bit: the input is a whole output buffer, not a bare body.
const FRAMED: u8 = 0x80;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    check_frame_len(rest);
    let body = if selector & FRAMED != 0 {
        match frame(rest) {
            Some(body) => body,
            None => return,
        }
    } else {
        rest
    };
    match selector & !FRAMED {
        0 => outcome(body),
        1 => host_call(body),
        2 => abort(body),
        3 => log(body),
        4 => exports(body),
        5 => call(body),
        _ => {
            outcome(body);
            host_call(body);
            abort(body);
            log(body);
            exports(body);
            call(body);
        }
    }
});

/// `frame_len` with the first 4 bytes as prefix and the next 8 as the capacity: a length it accepts
/// is the prefix and fits, one it refuses does not.
fn check_frame_len(rest: &[u8]) {
    let (Some(prefix), Some(capacity)) = (rest.get(..LEN_PREFIX), rest.get(LEN_PREFIX..LEN_PREFIX + 8)) else {
        return;
    };
    let prefix: [u8; LEN_PREFIX] = prefix.try_into().unwrap_or_default();
    let announced = u64::from(u32::from_le_bytes(prefix));
    let capacity = u64::from_le_bytes(capacity.try_into().unwrap_or_default());
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    let room = capacity.saturating_sub(LEN_PREFIX) as u64;
    match wire::frame_len(prefix, capacity) {
        Ok(len) => assert!(
            len as u64 == announced && announced <= room && capacity >= LEN_PREFIX,
            "accepted {len} of {capacity}"
        ),
        Err(_) => assert!(announced > room || capacity < LEN_PREFIX, "refused {announced} of {capacity}"),
    }
}

/// The body of the frame in `buf`, an output buffer of `buf.len()` bytes, as the host cuts it.
fn frame(buf: &[u8]) -> Option<&[u8]> {
    let prefix: [u8; LEN_PREFIX] = buf.get(..LEN_PREFIX)?.try_into().ok()?;
    let len = wire::frame_len(prefix, buf.len()).ok()?;
    match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
        Some(body) => Some(body),
        None => panic!("frame_len admitted {len} bytes in a buffer of {}", buf.len()),
    }
}

/// Whether `part` lies inside `whole`: decoders borrow from their input and nothing else.
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (whole, part) = (whole.as_ptr_range(), part.as_ptr_range());
    whole.start <= part.start && part.end <= whole.end
}

/// Encodes with the encoders both sides use.
fn encode(body: impl FnOnce(&mut Vec<u8>) -> Result<(), Full>) -> Vec<u8> {
    let mut out = Vec::new();
    if body(&mut out).is_err() {
        panic!("a vector never fills up");
    }
    out
}

/// Copies a decoded value out, as the host does, and checks the copy is the same value.
fn owned(body: &[u8], v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::String(s) => assert!(within(body, s.as_bytes())),
        ValueRef::Bytes(b) => assert!(within(body, b)),
        _ => {}
    }
    let value = v.to_owned_value();
    assert_eq!(encode(|s| wire::put_value(s, value.as_value_ref())), encode(|s| wire::put_value(s, v)));
    let _ = value.to_string();
    value
}

/// Reads `argc` values and the end of the message, or `None` if they are malformed.
fn values<'a>(mut r: Reader<'a>, argc: usize) -> Option<Vec<ValueRef<'a>>> {
    let mut out = Vec::new();
    for _ in 0..argc {
        let before = r.remaining();
        let v = r.value().ok()?;
        assert!(r.remaining() < before, "a value took no bytes");
        out.push(v);
    }
    r.finish().ok()?;
    Some(out)
}

fn outcome(body: &[u8]) {
    match wire::read_outcome(body) {
        Ok(Outcome::Ok(v)) => {
            owned(body, v);
            assert_eq!(encode(|s| wire::put_ok(s, v)), body);
        }
        Ok(Outcome::Err { code, message }) => {
            assert!(within(body, message));
            assert_eq!(encode(|s| wire::put_err(s, code, message)), body);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn host_call(body: &[u8]) {
    let Ok((name, argc, r)) = wire::read_host_call_head(body) else {
        return;
    };
    assert!(name.len() <= MAX_NAME_LEN && argc <= MAX_PARAMS && within(body, name.as_bytes()));
    let Some(args) = values(r, argc) else {
        return;
    };
    let again = encode(|s| {
        wire::put_host_call_head(s, name, argc)?;
        args.iter().try_for_each(|&v| wire::put_value(s, v))
    });
    assert_eq!(again, body);
    for v in args {
        owned(body, v);
    }
}

fn call(body: &[u8]) {
    let Ok((index, argc, r)) = wire::read_call_head(body) else {
        return;
    };
    assert!(argc <= MAX_PARAMS);
    let Some(args) = values(r, argc) else {
        return;
    };
    let again = encode(|s| {
        wire::put_call_head(s, index, argc)?;
        args.iter().try_for_each(|&v| wire::put_value(s, v))
    });
    assert_eq!(again, body);
    for v in args {
        owned(body, v);
    }
}

fn abort(body: &[u8]) {
    if let Ok((code, message)) = wire::read_abort(body) {
        assert!(within(body, message));
        assert_eq!(encode(|s| wire::put_abort(s, code, message)), body);
        let _ = String::from_utf8_lossy(message);
    }
}

fn log(body: &[u8]) {
    if let Ok((level, message)) = wire::read_log(body) {
        assert!(within(body, message));
        assert_eq!(encode(|s| wire::put_log(s, level, message)), body);
        let _ = String::from_utf8_lossy(message);
    }
}

fn exports(body: &[u8]) {
    let mut lists: [Vec<(&str, Vec<ValueType>, ValueType)>; 2] = [Vec::new(), Vec::new()];
    let read = wire::read_table(body, |direction, e| {
        assert!(e.name.len() <= MAX_NAME_LEN && within(body, e.name.as_bytes()));
        lists[usize::from(direction == wire::Direction::Import)].push((e.name, e.params().collect(), e.result));
        Ok::<(), ()>(())
    });
    for list in &lists {
        assert!(list.len() <= MAX_EXPORTS);
        assert!(list.iter().all(|(_, params, _)| params.len() <= MAX_PARAMS));
    }
    let list = &lists[0];
    match read {
        Ok(Ok(())) => {
            let again = encode(|s| {
                lists.iter().try_for_each(|list| {
                    wire::put_count(s, list.len())?;
                    list.iter().try_for_each(|(name, params, result)| wire::put_function(s, name, params, *result))
                })
            });
            assert_eq!(again, body);
        }
        Ok(Err(())) => panic!("the callback never fails"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // A callback that refuses the first entry stops the walk there, with its own error.
    if !list.is_empty() {
        assert_eq!(wire::read_table(body, |_, _| Err(7u8)), Ok(Err(7)));
    }
}
