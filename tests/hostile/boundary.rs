//! B.3 The host-guest boundary: rows 18-30.

use crate::common::hostile::*;
use crate::common::{testguest, HostFailure};
use glint::{Error, Limits, Message, ProtocolError, Sandbox, Value, ValueType};
use glint_abi::code::HostCallError as HostCallCode;
use glint_abi::port;
use glint_abi::wire::DecodeError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self};
use std::time::{Duration, Instant};

#[test]
fn row_18_length_prefixes_beyond_the_buffer_are_refused() {
    require_kvm!();
    // A larger input buffer, so a whole output buffer's worth of frame fits in the arguments.
    let mut sb = builder().input_buffer_size(4 << 20).build(&testguest()).unwrap().init().unwrap();
    let room = boot_info(&mut sb).output_size - 4;
    hostile(&mut sb, |sb| {
        // Every frame the guest sends is length-checked before anything is read or allocated.
        for p in port::GUEST_PORTS {
            for len in [room + 1, 0x8000_0000, u64::from(u32::MAX)] {
                let mut bytes = (len as u32).to_le_bytes().to_vec();
                bytes.extend([0u8; 16]);
                let refused = protocol_of(raw_frame(sb, &bytes, p));
                let source = DecodeError::FrameTooLarge { len, capacity: room };
                assert_eq!(refused, ProtocolError::Malformed { message: message_at(p), source });
                assert!(sb.is_poisoned());
                sb.reset().unwrap();
            }
        }
        // A frame filling the whole buffer is read (once) and then refused by the decoder.
        let mut bytes = (room as u32).to_le_bytes().to_vec();
        bytes.resize(room as usize + 4, 0);
        let refused = protocol_of(raw_frame(sb, &bytes, port::RETURN));
        assert_eq!(refused, malformed(Message::CallResult, DecodeError::TrailingBytes(room - 2)));
    });
}

/// The message a frame at `port` is read as.
fn message_at(p: u16) -> Message {
    match p {
        port::RETURN => Message::CallResult,
        port::HOST_CALL => Message::HostCall,
        port::LOG => Message::Log,
        _ => Message::Abort,
    }
}

fn malformed(message: Message, source: DecodeError) -> ProtocolError {
    ProtocolError::Malformed { message, source }
}

fn wrong_type(function: &str, declared: ValueType, actual: ValueType) -> ProtocolError {
    ProtocolError::WrongResultType { function: function.into(), declared, actual }
}

/// The body of a host call: name, argc, then the encoded values in `args`.
fn host_call_body(name: &[u8], argc: u32, args: &[u8]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(&argc.to_le_bytes());
    v.extend_from_slice(args);
    v
}

#[test]
fn row_19_malformed_payloads_are_refused_before_use() {
    require_kvm!();
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let mut sb = builder()
        .host_fn("take", move |_: i32, _: bool, _: String| -> i32 {
            counter.fetch_add(1, Ordering::SeqCst);
            0
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    hostile(&mut sb, |sb| {
        // Call results (`raw_frame` declares `()`).
        let results: [(&[u8], DecodeError); 8] = [
            (&[], DecodeError::Truncated),
            (&[2], DecodeError::BadStatus(2)),
            (&[0, 0xee], DecodeError::UnknownTag(238)),
            (&[0, 7, 2], DecodeError::BadBool(2)),
            (&[0, 8, 2, 0, 0, 0, 0xff, 0xfe], DecodeError::BadUtf8),
            (&[0, 9, 0xff, 0xff, 0xff, 0xff, 1, 2], DecodeError::Truncated),
            (&[0, 0, 1], DecodeError::TrailingBytes(1)),
            (&[1, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], DecodeError::Truncated),
        ];
        for (body, why) in results {
            let refused = protocol_of(raw_frame(sb, &frame(body), port::RETURN));
            assert_eq!(refused, malformed(Message::CallResult, why), "{body:x?}");
            sb.reset().unwrap();
        }
        // Host-call heads: refused as a whole, the call ends.
        let heads: [(Vec<u8>, DecodeError); 5] = [
            (host_call_body(&[b'n'; 300], 0, &[]), DecodeError::NameTooLong(300)),
            (host_call_body(&[0xff, 0xfe], 0, &[]), DecodeError::BadUtf8),
            (host_call_body(b"take", 17, &[]), DecodeError::TooMany(17)),
            (host_call_body(b"take", u32::MAX, &[]), DecodeError::TooMany(u64::from(u32::MAX))),
            (vec![0xff, 0xff, 0xff, 0xff, b't'], DecodeError::Truncated),
        ];
        for (body, why) in heads {
            let refused = protocol_of(raw_frame(sb, &frame(&body), port::HOST_CALL));
            assert_eq!(refused, malformed(Message::HostCall, why));
            sb.reset().unwrap();
        }
        // Arguments that do not decode as `take(i32, bool, String)`: the guest gets a
        // BAD_ARGUMENTS response (and `raw_frame` then returns), the function never runs.
        let i32_5 = [1u8, 5, 0, 0, 0];
        let bad_args: [(u32, Vec<u8>); 6] = [
            (3, [&i32_5[..], &[7, 2], &[8, 0, 0, 0, 0]].concat()), // bool byte 2
            (3, [&i32_5[..], &[7, 1], &[8, 2, 0, 0, 0, 0xff, 0xfe]].concat()), // bad UTF-8
            (3, [&i32_5[..], &[7, 1], &[8, 0xff, 0xff, 0xff, 0xff]].concat()), // 4 GiB string
            (3, [&i32_5[..], &[7, 1], &[8, 0, 0, 0, 0], &[0]].concat()), // trailing
            (3, [&[2u8, 5, 0, 0, 0][..], &[7, 1], &[8, 0, 0, 0, 0]].concat()), // u32 for i32
            (2, [&i32_5[..], &[7, 1]].concat()),                   // arity
        ];
        for (argc, args) in bad_args {
            let r = raw_frame(sb, &frame(&host_call_body(b"take", argc, &args)), port::HOST_CALL);
            assert_eq!(r.unwrap(), Value::Unit, "{args:x?}");
            assert_eq!(sb.last_call_stats().host_calls, 1);
        }
        // A well-formed call does run it.
        let good = [&i32_5[..], &[7, 1], &[8, 1, 0, 0, 0, b'x']].concat();
        assert_eq!(raw_frame(sb, &frame(&host_call_body(b"take", 3, &good)), port::HOST_CALL).unwrap(), Value::Unit);
        // Log and abort messages.
        let refused = protocol_of(raw_frame(sb, &frame(&[3, 0xff, 0xff, 0xff, 0xff]), port::LOG));
        assert_eq!(refused, malformed(Message::Log, DecodeError::Truncated));
        sb.reset().unwrap();
        let refused = protocol_of(raw_frame(sb, &frame(&[1, 0, 0, 0, 5, 0, 0, 0, b'a']), port::ABORT));
        assert_eq!(refused, malformed(Message::Abort, DecodeError::Truncated));
    });
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the well-formed host call ran");
}

#[test]
fn row_20_results_of_the_wrong_type_or_no_value_are_refused() {
    require_kvm!();
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        // `raw_frame` declares `()`.
        let wrong: [(&[u8], ValueType); 3] = [
            (&[0, 1, 42, 0, 0, 0], ValueType::I32),
            (&[0, 8, 1, 0, 0, 0, b'x'], ValueType::String),
            (&[0, 9, 0, 0, 0, 0], ValueType::Bytes),
        ];
        for (body, actual) in wrong {
            let refused = protocol_of(raw_frame(sb, &frame(body), port::RETURN));
            assert_eq!(refused, wrong_type("raw_frame", ValueType::Unit, actual));
            sb.reset().unwrap();
        }
        // No value at all.
        let refused = protocol_of(raw_frame(sb, &frame(&[0]), port::RETURN));
        assert_eq!(refused, malformed(Message::CallResult, DecodeError::Truncated));
        sb.reset().unwrap();
        // Error outcomes: the codes a guest may use map to typed errors (no poisoning); any other
        // code is a protocol error.
        let err =
            |code: u32, msg: &[u8]| [&[1u8][..], &code.to_le_bytes(), &(msg.len() as u32).to_le_bytes(), msg].concat();
        let r = raw_frame(sb, &frame(&err(1, b"gone")), port::RETURN);
        assert!(matches!(&r, Err(Error::NoSuchFunction { name }) if name == "raw_frame"), "{r:?}");
        assert!(!sb.is_poisoned());
        sb.reset().unwrap();
        let r = raw_frame(sb, &frame(&err(3, b"mine\x1b")), port::RETURN);
        assert!(
            matches!(&r, Err(Error::GuestFunction { name, message }) if name == "raw_frame" && message == "mine\\u{1b}"),
            "{r:?}"
        );
        sb.reset().unwrap();
        for code in [2u32, 4000, u32::MAX] {
            let refused = protocol_of(raw_frame(sb, &frame(&err(code, b"no")), port::RETURN));
            assert_eq!(refused, ProtocolError::UnexpectedCode { function: "raw_frame".into(), code });
            sb.reset().unwrap();
        }
    });
}

#[test]
fn row_21_unregistered_host_functions_are_an_error_the_guest_sees() {
    require_kvm!();
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        // The guest sees NOT_FOUND and may handle it.
        let seen = sb.call("host_probe", &[Value::String("nope".into())]).unwrap();
        assert_eq!(seen, Value::String("err:1:no host function named `nope`".into()));
        // If the guest fails after it, the caller learns which name was missing.
        let r = sb.call("host_call_named", &[Value::String("nope".into())]);
        assert!(matches!(&r, Err(Error::NoSuchHostFunction { name }) if name == "nope"), "{r:?}");
        assert!(!sb.is_poisoned());
        // Guest-chosen names are checked (UTF-8, at most 255 bytes) and reported sanitised.
        let r = sb.call("host_call_named", &[Value::String("\u{1b}[2J\u{0}".into())]);
        assert!(matches!(&r, Err(Error::NoSuchHostFunction { name }) if name == "\\u{1b}[2J\\u{0}"), "{r:?}");
    });
}

#[test]
fn row_22_mistyped_host_calls_never_run_the_function() {
    require_kvm!();
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let mut sb = builder()
        .host_fn("count2", move |a: i32, b: i32| {
            counter.fetch_add(1, Ordering::SeqCst);
            a + b
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    hostile(&mut sb, |sb| {
        let arity = sb.call("host_call_str", &[Value::String("count2".into()), Value::String("x".into())]);
        match arity {
            Err(Error::GuestFunction { name, message }) => {
                assert_eq!(name, "host_call_str");
                assert_eq!(message, "host call failed (code 2): `count2` takes 2 arguments, got 1");
            }
            other => panic!("{other:?}"),
        }
        let types = sb.call(
            "host_call_str2",
            &[Value::String("count2".into()), Value::String("x".into()), Value::String("y".into())],
        );
        match types {
            Err(Error::GuestFunction { message, .. }) => {
                assert_eq!(message, "host call failed (code 2): `count2` argument 0 must be i32, got String");
            }
            other => panic!("{other:?}"),
        }
        // A result of another type than the guest expects is caught in the guest.
        let seen = sb.call("host_fetch_bytes", &[Value::String("hello".into())]).unwrap();
        assert_eq!(seen, Value::String("err:0:`hello` returned String, expected Vec<u8>".into()));
        assert!(!sb.is_poisoned());
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn row_23_host_function_arguments_and_results_are_capped_by_the_buffers() {
    require_kvm!();
    let largest = Arc::new(AtomicU64::new(0));
    let seen = largest.clone();
    let mut sb = builder()
        .host_fn("sink", move |v: Vec<u8>| {
            seen.fetch_max(v.len() as u64, Ordering::SeqCst);
            v.len() as u64
        })
        .host_fn("big", || vec![7u8; 3 << 20])
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    let info = boot_info(&mut sb);
    hostile(&mut sb, |sb| {
        let send = |sb: &mut Sandbox, len: u64| {
            sb.call("host_call_bytes", &[Value::String("sink".into()), Value::U64(len)]).unwrap()
        };
        assert_eq!(send(sb, 1 << 20), Value::String(format!("ok:{}", 1 << 20)));
        // The request must fit the output buffer: the guest cannot even send a larger one.
        assert_eq!(
            send(sb, info.output_size),
            Value::String("err:0:host call arguments do not fit in the output buffer".into())
        );
        // A result larger than the input buffer is replaced by REFUSED.
        let r = sb.call("host_fetch_bytes", &[Value::String("big".into())]).unwrap();
        let expected = format!(
            "err:{}:result of {} bytes exceeds the {}-byte input buffer",
            HostCallCode::Refused.number(),
            (3 << 20) + 10,
            info.input_size
        );
        assert_eq!(r, Value::String(expected));
    });
    // The closure only ever saw arguments that fit the buffer.
    assert_eq!(largest.load(Ordering::SeqCst), 1 << 20);
}

#[test]
fn row_24_guest_log_text_is_sanitised_and_bounded() {
    require_kvm!();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut sb = builder()
        .limits(Limits { max_log_bytes: 16 << 10, ..Limits::default() })
        .on_log(move |r| sink.lock().unwrap().push((r.level, r.message.clone())))
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    let log = |level: u8, msg: &[u8]| frame(&[&[level][..], &(msg.len() as u32).to_le_bytes(), msg].concat());
    let cases: [(u8, Vec<u8>, tracing::Level, String); 6] = [
        (3, b"\x1b[31mred\x1b[0m".to_vec(), tracing::Level::INFO, "\\u{1b}[31mred\\u{1b}[0m".into()),
        (1, b"one\nFAKE: second line\r".to_vec(), tracing::Level::ERROR, "one\\nFAKE: second line\\r".into()),
        (0, vec![0xff, 0xfe, b'x'], tracing::Level::INFO, "\u{fffd}\u{fffd}x".into()),
        (99, b"\x07\x00".to_vec(), tracing::Level::INFO, "\\u{7}\\u{0}".into()),
        (5, b"trace".to_vec(), tracing::Level::TRACE, "trace".into()),
        (3, vec![b'a'; 10_000], tracing::Level::INFO, "a".repeat(4096) + "…"),
    ];
    hostile(&mut sb, |sb| {
        for (level, msg, _, _) in &cases {
            assert_eq!(raw_frame(sb, &log(*level, msg), port::LOG).unwrap(), Value::Unit);
        }
        let got = lines.lock().unwrap().drain(..).collect::<Vec<_>>();
        let want: Vec<_> = cases.iter().map(|(_, _, l, m)| (*l, m.clone())).collect();
        assert_eq!(got, want);
        // A flood: lines past the per-call budget are dropped and counted.
        assert_eq!(sb.call("log_lines", &[Value::U32(20_000)]).unwrap(), Value::U32(20_000));
        let stats = sb.last_call_stats();
        let delivered: usize = lines.lock().unwrap().iter().map(|(_, m)| m.len()).sum();
        assert_eq!(stats.log_lines, 20_000);
        assert!(stats.log_lines_dropped > 17_000 && delivered <= 16 << 10, "{stats:?}, {delivered} bytes delivered");
    });
}

#[test]
fn row_25_the_host_copies_guest_data_once() {
    require_kvm!();
    // The host copies a request out of the output buffer once, checks the copy and decodes only
    // that; the single vCPU is stopped while the host handles the exit, so there is no window
    // for the guest to change it. The guest scribbling over its buffer after a host call does
    // not reach what the host function got.
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    let mut sb = builder()
        .host_fn("keep", move |v: Vec<u8>| {
            let n = v.len() as u64;
            sink.lock().unwrap().push(v);
            n
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    let r = hostile(&mut sb, |sb| sb.call("host_keep_then_scribble", &[Value::U64(1 << 20)]));
    assert_eq!(r.unwrap(), Value::U64((1 << 20) + 16));
    let kept = kept.lock().unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept[0].len() == 1 << 20 && kept[0].iter().all(|&b| b == 0xaa));
    assert_eq!(kept[1], vec![0xbb; 16]);
}

#[test]
fn row_26_return_without_a_fresh_result_reads_only_the_guests_own_frame() {
    require_kvm!();
    // The host never writes the output buffer (docs/ABI.md 8): a RETURN that wrote nothing
    // makes the host read the guest's own previous frame, which fails the declared type unless
    // it happens to fit. Nothing after a RETURN runs within the call.
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        // Right after reset the buffer holds the export table from init: not an outcome.
        let refused = protocol_of(raw_frame(sb, &[], port::RETURN));
        assert!(matches!(refused, ProtocolError::Malformed { message: Message::CallResult, .. }), "{refused:?}");
        sb.reset().unwrap();
        // After a String result, the stale frame is that String.
        sb.call("rt_string", &[Value::String("stale".into())]).unwrap();
        let refused = protocol_of(raw_frame(sb, &[], port::RETURN));
        assert_eq!(refused, wrong_type("raw_frame", ValueType::Unit, ValueType::String));
        sb.reset().unwrap();
        // After a unit result it fits, and is taken: the guest's own bytes, never the host's or
        // another sandbox's.
        sb.call("rt_unit", &[]).unwrap();
        assert_eq!(raw_frame(sb, &[], port::RETURN).unwrap(), Value::Unit);
        sb.reset().unwrap();
        // A result, RETURN, and more code after it (the dispatcher writing a second outcome): the
        // call ends at the first RETURN, with one exit.
        assert_eq!(raw_frame(sb, &frame(&[0, 0]), port::RETURN).unwrap(), Value::Unit);
        assert_eq!(sb.last_call_stats().exits, 1);
        // That leftover code runs only when the next call resumes the guest, and its outcome is
        // checked against the next call's signature like any other.
        let refused = protocol_of(sb.call("rt_i32", &[Value::I32(5)]));
        assert_eq!(refused, wrong_type("rt_i32", ValueType::I32, ValueType::Unit));
    });
}

#[test]
fn row_27_abort_messages_are_capped_and_sanitised() {
    require_kvm!();
    let abort = |msg: &[u8]| frame(&[&1u32.to_le_bytes()[..], &(msg.len() as u32).to_le_bytes(), msg].concat());
    let cases: [(Vec<u8>, String); 3] = [
        (vec![b'A'; 1 << 20], "A".repeat(4096) + "…"),
        (vec![0xff, b'x', 0xc3], "\u{fffd}x\u{fffd}".into()),
        (b"\x1b]0;pwned\x07\ninjected".to_vec(), "\\u{1b}]0;pwned\\u{7}\\ninjected".into()),
    ];
    let mut sb = sandbox();
    hostile(&mut sb, |sb| {
        for (msg, expected) in cases {
            match raw_frame(sb, &abort(&msg), port::ABORT) {
                Err(Error::GuestPanic { message }) => assert_eq!(message, expected),
                other => panic!("{other:?}"),
            }
            assert!(sb.is_poisoned());
            sb.reset().unwrap();
        }
        // Trailing bytes after the message.
        let mut bytes = abort(b"x");
        bytes.push(0);
        bytes[0] += 1;
        assert_eq!(
            protocol_of(raw_frame(sb, &bytes, port::ABORT)),
            malformed(Message::Abort, DecodeError::TrailingBytes(1))
        );
        sb.reset().unwrap();
        // Each abort is a message of its own: nothing of the 1 MiB one above is left over.
        match sb.call("panics", &[Value::String("short".into())]) {
            Err(Error::GuestPanic { message }) => {
                assert!(message.starts_with("short (at ") && message.len() < 200, "{message}")
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn row_28_a_panicking_host_function_ends_the_call() {
    require_kvm!();
    let mut sb = builder()
        .host_fn("boom_any", || -> String { std::panic::panic_any(42u8) })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    hostile(&mut sb, |sb| {
        let r = sb.call("host_probe", &[Value::String("boom".into())]);
        match r {
            Err(Error::HostFunctionPanicked { name, panic }) => {
                assert_eq!(name, "boom");
                assert_eq!(panic.as_str(), "host function panicked on purpose");
            }
            other => panic!("{other:?}"),
        }
        assert!(sb.is_poisoned());
        // The guest was not resumed: the host call was the last exit.
        assert_eq!((sb.last_call_stats().exits, sb.last_call_stats().host_calls), (1, 1));
        sb.reset().unwrap();
        let r = sb.call("host_probe", &[Value::String("boom_any".into())]);
        assert!(
            matches!(&r, Err(Error::HostFunctionPanicked { panic, .. }) if panic.as_str() == "non-string panic payload"),
            "{r:?}"
        );
        sb.reset().unwrap();
        // A host function's Err is a value the guest sees; propagated, the caller gets it typed.
        match sb.call("host_fail_propagates", &[]) {
            Err(Error::HostFunction { name, source }) => {
                assert_eq!(name, "fail");
                assert_eq!(source.downcast_ref::<HostFailure>(), Some(&HostFailure("on purpose")));
            }
            other => panic!("{other:?}"),
        }
        assert!(!sb.is_poisoned());
    });
}

#[test]
fn row_29_kill_or_deadline_during_a_host_function_takes_effect_when_it_returns() {
    require_kvm!();
    let entered = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let read_result = Arc::new(Mutex::new(String::new()));
    let reading = Arc::new(AtomicBool::new(false));
    let (e, f, r, rr, rd) = (entered.clone(), finished.clone(), resumed.clone(), read_result.clone(), reading.clone());
    let builder = builder()
        .host_fn("sleep_ms", move |ms: u32| {
            e.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(u64::from(ms)));
            f.fetch_add(1, Ordering::SeqCst);
            ms
        })
        .host_fn("block_read", move || -> String {
            // A blocking syscall with nothing to read: the kick signal interrupts it (EINTR).
            let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            a.set_read_timeout(Some(PATIENCE)).unwrap();
            rd.store(true, Ordering::SeqCst);
            let outcome = match std::io::Read::read(&mut a, &mut [0u8; 1]) {
                Ok(n) => format!("read {n}"),
                Err(err) => format!("{:?}", err.kind()),
            };
            *rr.lock().unwrap() = outcome.clone();
            outcome
        })
        .on_log(move |l| {
            if l.message.contains("resumed") {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
    let mut sb = builder.build(&testguest()).unwrap().init().unwrap();
    // kill() while the host function sleeps 300 ms: the sleep completes (std retries after
    // EINTR), then the call ends Cancelled without resuming the guest.
    let (err, elapsed, stats) = hostile(&mut sb, |sb| {
        let handle = sb.interrupt_handle();
        let entered = entered.clone();
        let killer = thread::spawn(move || {
            assert!(wait_until(PATIENCE, || entered.load(Ordering::SeqCst) == 1));
            assert!(handle.kill(), "the call is running while its host function runs");
        });
        let start = Instant::now();
        let err = sb.call("host_sleep_then_log", &[Value::U32(300)]).unwrap_err();
        killer.join().unwrap();
        (err, start.elapsed(), sb.last_call_stats())
    });
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the host function ran to its end");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!((stats.exits, stats.host_calls, stats.log_lines), (1, 1, 0), "{stats:?}");
    assert_eq!(resumed.load(Ordering::SeqCst), 0, "the guest ran after the host call");

    // The deadline passing during the host function: the same, as Timeout.
    sb.set_call_timeout(Some(Duration::from_millis(100)));
    let err = hostile(&mut sb, |sb| sb.call("host_sleep_then_log", &[Value::U32(300)]).unwrap_err());
    assert!(matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)), "{err}");
    assert_eq!(finished.load(Ordering::SeqCst), 2);
    assert_eq!(resumed.load(Ordering::SeqCst), 0);

    // A host function blocked in a syscall that does not restart sees EINTR from the kick signal.
    // (Only a syscall already blocked when the signal arrives: one that starts after it blocks.)
    sb.set_call_timeout(Some(PATIENCE));
    let err = hostile(&mut sb, |sb| {
        let handle = sb.interrupt_handle();
        let reading = reading.clone();
        let killer = thread::spawn(move || {
            assert!(wait_until(PATIENCE, || reading.load(Ordering::SeqCst)));
            thread::sleep(Duration::from_millis(100));
            assert!(handle.kill());
        });
        let start = Instant::now();
        let err = sb.call("host_call_named", &[Value::String("block_read".into())]).unwrap_err();
        killer.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        err
    });
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(*read_result.lock().unwrap(), "Interrupted");
}

#[test]
fn row_30_a_host_function_cannot_reenter_its_sandbox() {
    require_kvm!();
    // A call holds `&mut Sandbox`, so a host function can reach the same sandbox only through
    // shared ownership the caller already holds locked: re-entry finds it busy.
    let slot: Arc<Mutex<Option<Sandbox>>> = Arc::new(Mutex::new(None));
    let inner = slot.clone();
    let sb = builder()
        .host_fn("reenter", move || -> String {
            match inner.try_lock() {
                Ok(_) => "reached the sandbox".into(),
                Err(std::sync::TryLockError::WouldBlock) => "busy".into(),
                Err(std::sync::TryLockError::Poisoned(_)) => "poisoned".into(),
            }
        })
        .build(&testguest())
        .unwrap()
        .init()
        .unwrap();
    *slot.lock().unwrap() = Some(sb);
    let mut guard = slot.lock().unwrap();
    let sb = guard.as_mut().unwrap();
    let seen = hostile(sb, |sb| sb.call("host_probe", &[Value::String("reenter".into())]).unwrap());
    assert_eq!(seen, Value::String("ok:busy".into()));
}
