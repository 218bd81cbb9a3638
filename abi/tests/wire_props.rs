//! Properties of the wire format (`glint_abi::wire`), on generated values and bytes.
//!
//! Every value and message kind round-trips through the encoders (`put_*`, `write_frame`,
//! `frame_vec`) and the decoders; a cut anywhere in a valid encoding is refused as truncated rather
//! than read as something else, and a byte more as trailing; a message the decoders accept has one
//! spelling only; arbitrary bytes never make a decoder panic, borrow outside its input or consume
//! other than what it returns; `frame_len` refuses every length that does not fit
//! (HOSTILE-GUESTS.md rows 18-20, 24, 27).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use glint_abi::wire::{
    self, DecodeError, Full, Outcome, Reader, Sink, LEN_PREFIX, MAX_EXPORTS, MAX_NAME_LEN, MAX_PARAMS,
};
use glint_abi::{Value, ValueRef, ValueType};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// A value compared by its bits, so that a NaN equals itself and -0.0 differs from 0.0.
#[derive(Clone, Debug)]
struct Val(Value);

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        }
    }
}

impl Val {
    fn of(v: ValueRef<'_>) -> Self {
        Val(v.to_owned_value())
    }
}

/// One message of each kind the wire carries, owned.
#[derive(Clone, Debug, PartialEq)]
enum Message {
    /// A bare sequence of values, as the arguments of a call carry them.
    Values(Vec<Val>),
    Call {
        index: u32,
        args: Vec<Val>,
    },
    HostCall {
        name: String,
        args: Vec<Val>,
    },
    Ok(Val),
    Err {
        code: u32,
        message: Vec<u8>,
    },
    Abort {
        code: u32,
        message: Vec<u8>,
    },
    Log {
        level: u8,
        message: Vec<u8>,
    },
    /// A function table: exports, then imports.
    Table(Vec<(String, Vec<ValueType>, ValueType)>, Vec<(String, Vec<ValueType>, ValueType)>),
}

fn put_values<S: Sink>(s: &mut S, values: &[Val]) -> Result<(), Full> {
    values.iter().try_for_each(|v| wire::put_value(s, v.0.as_value_ref()))
}

/// Encodes the body of `m` with the encoders both sides use.
fn put<S: Sink>(s: &mut S, m: &Message) -> Result<(), Full> {
    match m {
        Message::Values(values) => put_values(s, values),
        Message::Call { index, args } => {
            wire::put_call_head(s, *index, args.len())?;
            put_values(s, args)
        }
        Message::HostCall { name, args } => {
            wire::put_host_call_head(s, name, args.len())?;
            put_values(s, args)
        }
        Message::Ok(v) => wire::put_ok(s, v.0.as_value_ref()),
        Message::Err { code, message } => wire::put_err(s, *code, message),
        Message::Abort { code, message } => wire::put_abort(s, *code, message),
        Message::Log { level, message } => wire::put_log(s, *level, message),
        Message::Table(exports, imports) => [exports, imports].iter().try_for_each(|list| {
            wire::put_count(s, list.len())?;
            list.iter().try_for_each(|(name, params, result)| wire::put_function(s, name, params, *result))
        }),
    }
}

fn body(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, m).unwrap();
    out
}

/// Reads exactly `argc` values and the end of the message.
fn read_values(mut r: Reader<'_>, argc: usize) -> Result<Vec<Val>, DecodeError> {
    let values = (0..argc).map(|_| r.value().map(Val::of)).collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(values)
}

/// Decodes `body` with the decoder for the kind of `like` (for `Values`, as many values as it has).
fn decode(like: &Message, body: &[u8]) -> Result<Message, DecodeError> {
    Ok(match like {
        Message::Values(values) => Message::Values(read_values(Reader::new(body), values.len())?),
        Message::Call { .. } => {
            let (index, argc, r) = wire::read_call_head(body)?;
            Message::Call { index, args: read_values(r, argc)? }
        }
        Message::HostCall { .. } => {
            let (name, argc, r) = wire::read_host_call_head(body)?;
            Message::HostCall { name: name.to_owned(), args: read_values(r, argc)? }
        }
        Message::Ok(_) | Message::Err { .. } => match wire::read_outcome(body)? {
            Outcome::Ok(v) => Message::Ok(Val::of(v)),
            Outcome::Err { code, message } => Message::Err { code, message: message.to_vec() },
        },
        Message::Abort { .. } => {
            let (code, message) = wire::read_abort(body)?;
            Message::Abort { code, message: message.to_vec() }
        }
        Message::Log { .. } => {
            let (level, message) = wire::read_log(body)?;
            Message::Log { level, message: message.to_vec() }
        }
        Message::Table(..) => {
            let (mut exports, mut imports) = (Vec::new(), Vec::new());
            wire::read_table(body, |direction, f| {
                let list = if direction == wire::Direction::Export { &mut exports } else { &mut imports };
                list.push((f.name.to_owned(), f.params().collect(), f.result));
                Ok::<(), ()>(())
            })?
            .unwrap();
            Message::Table(exports, imports)
        }
    })
}

/// Round trip through both frame encoders and the decoder, then every cut and one byte more.
fn check_round_trip(m: &Message) -> Result<(), TestCaseError> {
    let frame = wire::frame_vec(|v| put(v, m)).unwrap();
    let body = &frame[LEN_PREFIX..];
    // The host reads a frame out of a larger buffer: the length prefix says where the body ends.
    let mut buf = vec![0xa5; frame.len() + 13];
    prop_assert_eq!(wire::write_frame(&mut buf, |s| put(s, m)), Ok(frame.len()));
    prop_assert_eq!(&buf[..frame.len()], &frame[..]);
    let len = wire::frame_len(buf[..LEN_PREFIX].try_into().unwrap(), buf.len()).unwrap();
    prop_assert_eq!(len, body.len());
    prop_assert_eq!(decode(m, &buf[LEN_PREFIX..LEN_PREFIX + len]), Ok(m.clone()));
    // A buffer one byte short does not take the frame.
    let mut short = vec![0; frame.len() - 1];
    prop_assert_eq!(wire::write_frame(&mut short, |s| put(s, m)), Err(Full));

    for cut in 0..body.len() {
        prop_assert_eq!(decode(m, &body[..cut]), Err(DecodeError::Truncated), "cut at {} of {}", cut, body.len());
    }
    let mut longer = body.to_vec();
    longer.push(0);
    prop_assert_eq!(decode(m, &longer), Err(DecodeError::TrailingBytes(1)));
    Ok(())
}

/// Every f32 bit pattern, with NaNs (quiet and signalling, either sign, any payload) made common.
fn f32_bits() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        (any::<bool>(), 1u32..1 << 23)
            .prop_map(|(sign, payload)| f32::from_bits((u32::from(sign) << 31) | 0x7f80_0000 | payload)),
        select(vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, f32::NAN]),
    ]
}

fn f64_bits() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        (any::<bool>(), 1u64..1 << 52)
            .prop_map(|(sign, payload)| f64::from_bits((u64::from(sign) << 63) | 0x7ff0_0000_0000_0000 | payload)),
        select(vec![0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, f64::NAN]),
    ]
}

/// Any text: printable, or any `char` at all (NUL, controls, surrogate-free astral planes).
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!(".{{0,{max_chars}}}")).unwrap(),
        vec(any::<char>(), 0..=max_chars).prop_map(String::from_iter),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

/// Values of all ten kinds.
fn value() -> impl Strategy<Value = Val> {
    prop_oneof![
        Just(Value::Unit),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(Value::U32),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(Value::U64),
        f32_bits().prop_map(Value::F32),
        f64_bits().prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        text(24).prop_map(Value::String),
        bytes().prop_map(Value::Bytes),
    ]
    .prop_map(Val)
}

fn args() -> impl Strategy<Value = Vec<Val>> {
    vec(value(), 0..=MAX_PARAMS)
}

/// A function name the decoders accept: at most `MAX_NAME_LEN` bytes (63 chars of 4 bytes fit).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![text(63), "[a-z_]{0,255}"]
}

fn value_type() -> impl Strategy<Value = ValueType> {
    select(ValueType::ALL.to_vec())
}

fn export_table() -> impl Strategy<Value = Vec<(String, Vec<ValueType>, ValueType)>> {
    vec((name(), vec(value_type(), 0..=MAX_PARAMS), value_type()), 0..8)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(value(), 0..8).prop_map(Message::Values),
        (any::<u32>(), args()).prop_map(|(index, args)| Message::Call { index, args }),
        (name(), args()).prop_map(|(name, args)| Message::HostCall { name, args }),
        value().prop_map(Message::Ok),
        (any::<u32>(), bytes()).prop_map(|(code, message)| Message::Err { code, message }),
        (any::<u32>(), bytes()).prop_map(|(code, message)| Message::Abort { code, message }),
        (any::<u8>(), bytes()).prop_map(|(level, message)| Message::Log { level, message }),
        (export_table(), export_table()).prop_map(|(e, i)| Message::Table(e, i)),
    ]
}

/// Whether `part` lies inside `whole`.
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (whole, part) = (whole.as_ptr_range(), part.as_ptr_range());
    whole.start <= part.start && part.end <= whole.end
}

/// Bytes a value takes on the wire, tag included.
fn encoded_len(v: ValueRef<'_>) -> usize {
    1 + match v {
        ValueRef::Unit => 0,
        ValueRef::Bool(_) => 1,
        ValueRef::I32(_) | ValueRef::U32(_) | ValueRef::F32(_) => 4,
        ValueRef::I64(_) | ValueRef::U64(_) | ValueRef::F64(_) => 8,
        ValueRef::String(s) => 4 + s.len(),
        ValueRef::Bytes(b) => 4 + b.len(),
    }
}

/// Runs every decoder on `input`; each may refuse it, none may panic or borrow outside it.
fn decode_everything(input: &[u8]) -> Result<(), TestCaseError> {
    let inside = |part: &[u8]| within(input, part);
    let value_inside = |v: &ValueRef<'_>| match v {
        ValueRef::String(s) => inside(s.as_bytes()),
        ValueRef::Bytes(b) => inside(b),
        _ => true,
    };
    match wire::read_outcome(input) {
        Ok(Outcome::Ok(v)) => prop_assert!(value_inside(&v)),
        Ok(Outcome::Err { message, .. }) => prop_assert!(inside(message)),
        Err(_) => {}
    }
    if let Ok((_, message)) = wire::read_abort(input) {
        prop_assert!(inside(message));
    }
    if let Ok((_, message)) = wire::read_log(input) {
        prop_assert!(inside(message));
    }
    if let Ok((name, argc, mut r)) = wire::read_host_call_head(input) {
        prop_assert!(inside(name.as_bytes()) && name.len() <= MAX_NAME_LEN && argc <= MAX_PARAMS);
        for _ in 0..argc {
            match r.value() {
                Ok(v) => prop_assert!(value_inside(&v)),
                Err(_) => break,
            }
        }
    }
    if let Ok((_, argc, mut r)) = wire::read_call_head(input) {
        prop_assert!(argc <= MAX_PARAMS);
        while let Ok(v) = r.value() {
            prop_assert!(value_inside(&v));
        }
    }
    let mut entries = 0usize;
    let walk = wire::read_table(input, |_, e| {
        entries += 1;
        let ok = inside(e.name.as_bytes()) && e.name.len() <= MAX_NAME_LEN && e.params().count() <= MAX_PARAMS;
        if ok {
            Ok(())
        } else {
            Err(e.name.to_owned())
        }
    });
    if let Ok(Err(name)) = walk {
        prop_assert!(false, "export entry {:?} escaped its input or its limits", name);
    }
    prop_assert!(entries <= MAX_EXPORTS);
    Ok(())
}

/// One step of [`reader_consumes_exactly_what_it_returns`].
#[derive(Clone, Copy, Debug)]
enum Op {
    U8,
    U32,
    U64,
    Bytes,
    Str,
    Name,
    ValueType,
    Value,
    ArgCount,
    Take(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        select(vec![Op::U8, Op::U32, Op::U64, Op::Bytes, Op::Str, Op::Name, Op::ValueType, Op::Value, Op::ArgCount]),
        prop_oneof![0usize..16, any::<usize>()].prop_map(Op::Take),
    ]
}

/// Bytes that look like wire data more often than uniform noise does: small lengths, valid tags.
fn wireish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        vec(prop_oneof![0u8..12, Just(0xff), any::<u8>()], 0..256),
        message().prop_map(|m| body(&m)),
    ]
}

fn capacity() -> impl Strategy<Value = usize> {
    let u32_edge = u32::MAX as usize;
    prop_oneof![0usize..64, any::<usize>(), u32_edge - 8..u32_edge + 8, usize::MAX - 8..=usize::MAX]
}

/// proptest's default (256 cases, or `PROPTEST_CASES`), a handful under Miri.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig { cases: if cfg!(miri) { 4 } else { default.cases }, ..default }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn values_round_trip(values in vec(value(), 0..16)) {
        check_round_trip(&Message::Values(values))?;
    }

    #[test]
    fn one_value_round_trips_and_owns_the_same_value(v in value()) {
        let body = body(&Message::Values(vec![v.clone()]));
        let mut r = Reader::new(&body);
        let decoded = r.value().unwrap();
        prop_assert_eq!(r.remaining(), 0);
        prop_assert_eq!(decoded.ty(), v.0.ty());
        prop_assert_eq!(Val(decoded.to_owned_value()), v.clone());
        prop_assert_eq!(Val::of(v.0.as_value_ref()), v);
    }

    #[test]
    fn calls_round_trip(index in any::<u32>(), args in args()) {
        check_round_trip(&Message::Call { index, args })?;
    }

    #[test]
    fn host_calls_round_trip(name in name(), args in args()) {
        check_round_trip(&Message::HostCall { name, args })?;
    }

    #[test]
    fn ok_outcomes_round_trip(v in value()) {
        check_round_trip(&Message::Ok(v))?;
    }

    #[test]
    fn err_outcomes_round_trip(code in any::<u32>(), message in bytes()) {
        check_round_trip(&Message::Err { code, message })?;
    }

    #[test]
    fn aborts_round_trip(code in any::<u32>(), message in bytes()) {
        check_round_trip(&Message::Abort { code, message })?;
    }

    #[test]
    fn logs_round_trip(level in any::<u8>(), message in bytes()) {
        check_round_trip(&Message::Log { level, message })?;
    }

    #[test]
    fn export_tables_round_trip(list in export_table()) {
        check_round_trip(&Message::Table(list.clone(), list))?;
    }

    /// A valid message with one byte changed either is refused or decodes to a message that
    /// encodes to exactly those bytes: no two spellings of one message.
    #[test]
    fn accepted_messages_have_one_spelling(m in message(), at in any::<Index>(), byte in any::<u8>()) {
        let mut b = body(&m);
        if !b.is_empty() {
            let at = at.index(b.len());
            b[at] = byte;
        }
        if let Ok(decoded) = decode(&m, &b) {
            prop_assert_eq!(body(&decoded), b.clone());
        }
        decode_everything(&b)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in wireish_bytes()) {
        decode_everything(&input)?;
        // The same bytes followed by more: a decoder that accepted the shorter input saw only it.
        let mut padded = input.clone();
        padded.extend_from_slice(&[1, 0, 0, 0, 0xff]);
        decode_everything(&padded[..input.len()])?;
    }

    /// Each `Reader` method consumes exactly the bytes of what it returns, never more than remain.
    #[test]
    fn reader_consumes_exactly_what_it_returns(input in wireish_bytes(), ops in vec(op(), 0..24)) {
        let mut r = Reader::new(&input);
        for op in ops {
            let before = r.remaining();
            let used = match op {
                Op::U8 => r.u8().map(|_| 1),
                Op::U32 => r.u32().map(|_| 4),
                Op::U64 => r.u64().map(|_| 8),
                Op::Bytes => r.bytes().map(|b| { assert!(within(&input, b)); 4 + b.len() }),
                Op::Str => r.str().map(|s| { assert!(within(&input, s.as_bytes())); 4 + s.len() }),
                Op::Name => r.name().map(|s| { assert!(s.len() <= MAX_NAME_LEN); 4 + s.len() }),
                Op::ValueType => r.value_type().map(|_| 1),
                Op::Value => r.value().map(encoded_len),
                Op::ArgCount => r.arg_count().map(|n| { assert!(n <= MAX_PARAMS); 4 }),
                Op::Take(n) => r.take(n).map(|b| { assert!(within(&input, b) && b.len() == n); n }),
            };
            match used {
                Ok(used) => prop_assert_eq!(before - r.remaining(), used, "{:?}", op),
                // A refused read may have consumed its length prefix, never more than there was.
                Err(_) => { prop_assert!(r.remaining() <= before); break; }
            }
        }
    }

    #[test]
    fn frame_len_refuses_what_does_not_fit(len in any::<u32>(), capacity in capacity()) {
        let room = capacity.saturating_sub(LEN_PREFIX);
        let fits = capacity >= LEN_PREFIX && usize::try_from(len).is_ok_and(|len| len <= room);
        match wire::frame_len(len.to_le_bytes(), capacity) {
            Ok(n) => prop_assert!(fits && n == len as usize),
            Err(e) => {
                prop_assert!(!fits);
                prop_assert_eq!(e, DecodeError::FrameTooLarge { len: u64::from(len), capacity: room as u64 });
            }
        }
    }

    #[test]
    fn frame_len_boundary(capacity in LEN_PREFIX..1 << 20, delta in -3i64..=3) {
        let len = u32::try_from((capacity - LEN_PREFIX) as i64 + delta).unwrap_or(0);
        let fits = len as usize + LEN_PREFIX <= capacity;
        prop_assert_eq!(wire::frame_len(len.to_le_bytes(), capacity).is_ok(), fits);
    }

    #[test]
    fn names_longer_than_the_limit_are_refused(len in 0usize..600) {
        let name = "n".repeat(len);
        let call = body(&Message::HostCall { name: name.clone(), args: vec![] });
        let export = body(&Message::Table(vec![(name, vec![], ValueType::Unit)], vec![]));
        if len <= MAX_NAME_LEN {
            prop_assert!(wire::read_host_call_head(&call).is_ok());
            prop_assert_eq!(wire::read_table(&export, |_, _| Ok::<(), ()>(())), Ok(Ok(())));
        } else {
            prop_assert_eq!(wire::read_host_call_head(&call).err(), Some(DecodeError::NameTooLong(len as u64)));
            prop_assert_eq!(wire::read_table(&export, |_, _| Ok::<(), ()>(())), Err(DecodeError::NameTooLong(len as u64)));
        }
    }

    #[test]
    fn counts_above_the_limits_are_refused(
        argc in prop_oneof![0u32..40, any::<u32>()],
        count in prop_oneof![0u32..2048, any::<u32>()],
        params in 0u8..=255,
    ) {
        let mut call = 9u32.to_le_bytes().to_vec();
        call.extend_from_slice(&argc.to_le_bytes());
        let host_call = [&[1, 0, 0, 0, b'f'][..], &argc.to_le_bytes()].concat();
        let refused = Some(DecodeError::TooMany(u64::from(argc)));
        if argc as usize <= MAX_PARAMS {
            prop_assert_eq!(wire::read_call_head(&call).map(|(i, n, _)| (i, n)).ok(), Some((9, argc as usize)));
            prop_assert_eq!(wire::read_host_call_head(&host_call).map(|(_, n, _)| n).ok(), Some(argc as usize));
        } else {
            prop_assert_eq!(wire::read_call_head(&call).err(), refused);
            prop_assert_eq!(wire::read_host_call_head(&host_call).err(), refused);
        }

        // A function table announcing `count` exports (and no imports), and one entry with `params`
        // parameters.
        let table = [count.to_le_bytes(), 0u32.to_le_bytes()].concat();
        let walk = wire::read_table(&table, |_, _| Ok::<(), ()>(()));
        match count {
            0 => prop_assert_eq!(walk, Ok(Ok(()))),
            c if c as usize <= MAX_EXPORTS => prop_assert_eq!(walk, Err(DecodeError::Truncated)),
            c => prop_assert_eq!(walk, Err(DecodeError::TooMany(u64::from(c)))),
        }
        let mut entry = [&1u32.to_le_bytes()[..], &[1, 0, 0, 0, b'f', params]].concat();
        entry.extend(std::iter::repeat_n(ValueType::I32.tag(), usize::from(params)));
        entry.push(ValueType::Unit.tag());
        entry.extend_from_slice(&0u32.to_le_bytes());
        let walk = wire::read_table(&entry, |_, _| Ok::<(), ()>(()));
        if usize::from(params) <= MAX_PARAMS {
            prop_assert_eq!(walk, Ok(Ok(())));
        } else {
            prop_assert_eq!(walk, Err(DecodeError::TooMany(u64::from(params))));
        }
    }

    #[test]
    fn malformed_scalars_are_refused(tag in 10u8..=255, boolean in 2u8..=255, status in 2u8..=255) {
        let (tag_byte, bool_value, outcome) = ([tag], [ValueType::Bool.tag(), boolean], [status, 0]);
        prop_assert_eq!(Reader::new(&tag_byte).value(), Err(DecodeError::UnknownTag(tag)));
        prop_assert_eq!(Reader::new(&tag_byte).value_type(), Err(DecodeError::UnknownTag(tag)));
        prop_assert_eq!(Reader::new(&bool_value).value(), Err(DecodeError::BadBool(boolean)));
        prop_assert_eq!(wire::read_outcome(&outcome), Err(DecodeError::BadStatus(status)));
        let export = [&1u32.to_le_bytes()[..], &[1, 0, 0, 0, b'f', 1, tag, 0, 0, 0, 0, 0]].concat();
        prop_assert_eq!(wire::read_table(&export, |_, _| Ok::<(), ()>(())), Err(DecodeError::UnknownTag(tag)));
    }

    #[test]
    fn invalid_utf8_is_refused(b in vec(any::<u8>(), 1..32).prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err())) {
        let len = u32::try_from(b.len()).unwrap().to_le_bytes();
        let text = [&[ValueType::String.tag()][..], &len, &b].concat();
        prop_assert_eq!(Reader::new(&text).value(), Err(DecodeError::BadUtf8));
        let host_call = [&len[..], &b, &0u32.to_le_bytes()].concat();
        prop_assert_eq!(wire::read_host_call_head(&host_call).err(), Some(DecodeError::BadUtf8));
        // Bytes need not be text.
        let bytes = [&[ValueType::Bytes.tag()][..], &len, &b].concat();
        prop_assert_eq!(Reader::new(&bytes).value(), Ok(ValueRef::Bytes(&b)));
    }
}
