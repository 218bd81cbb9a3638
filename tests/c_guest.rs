//! The C runtime (`guest/c`) beyond the hello suite, through its test guest `testguest_c`: every
//! value type, sixteen parameters, host calls and their failures, the heap, aborts, and the
//! dispatcher's answers to call frames the host never sends, which must be the Rust library's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, HostFailure};
use glint::{Error, FaultKind, GuestImage, Sandbox, SandboxBuilder, Value};

fn image() -> GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| GuestImage::from_file(glint_guest_artifacts::TESTGUEST_C).expect("load testguest_c")).clone()
}

/// The tests' host functions and the two more the C test guest imports.
fn builder() -> SandboxBuilder {
    test_builder()
        .host_fn("glint:test/concat@1", |a: String, b: Vec<u8>| format!("{a}+{}", String::from_utf8_lossy(&b)))
        .host_fn("nop", || ())
}

fn sandbox() -> Sandbox {
    builder().build(&image()).unwrap().init().unwrap()
}

#[test]
fn every_value_type_round_trips() {
    require_kvm!();
    let mut sb = sandbox();
    common::assert_every_value_type_round_trips_typed(&mut sb);
    common::assert_every_value_type_round_trips(&mut sb);
}

#[test]
fn unit_parameters_renamed_exports_and_sixteen_parameters() {
    require_kvm!();
    let mut sb = sandbox();
    let sig = |sb: &Sandbox, n: &str| sb.signature(n).unwrap().to_string();
    assert_eq!(sig(&sb, "unit_param"), "(i32, (), i32) -> i32");
    assert_eq!(sb.call("unit_param", &[Value::I32(5), Value::Unit, Value::I32(3)]).unwrap(), Value::I32(2));
    assert_eq!(sig(&sb, "rt:i32"), "(i32) -> i32");
    assert_eq!(sb.call("rt:i32", &[Value::I32(11)]).unwrap(), Value::I32(11));
    assert!(sb.signature("rt_i32_renamed").is_none(), "exported under its given name only");

    let mix = sb.typed_fn::<(i32, u64, String, bool, f64, Vec<u8>), String>("mix").unwrap();
    let out = mix.call(&mut sb, (-3, 1 << 40, "abc".into(), true, 2.75, vec![1, 2, 3, 4])).unwrap();
    assert_eq!(out, "-3|1099511627776|abc|true|2|4");

    assert_eq!(sig(&sb, "sum16"), format!("({}) -> u64", ["u32"; 16].join(", ")));
    let args: Vec<Value> = (1..=16).map(|i| Value::U32(i * 1000)).collect();
    let want: u64 = (1..=16u64).map(|i| i * i * 1000).sum();
    assert_eq!(sb.call("sum16", &args).unwrap(), Value::U64(want));
}

#[test]
fn mebibyte_values_cross_both_ways_and_results_too_large_are_errors() {
    require_kvm!();
    let mut sb = sandbox();
    let big: String = (0..1 << 20).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let s = sb.typed_fn::<(String,), String>("rt_string").unwrap();
    assert_eq!(s.call(&mut sb, (big.clone(),)).unwrap(), big);
    let bytes: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let b = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("rt_bytes").unwrap();
    for _ in 0..8 {
        assert_eq!(b.call(&mut sb, (bytes.clone(),)).unwrap(), bytes, "the heap is reused");
    }
    let make = sb.typed_fn::<(u64, u32), Vec<u8>>("make_bytes").unwrap();
    assert_eq!(make.call(&mut sb, (1 << 20, 0xab)).unwrap(), vec![0xab; 1 << 20]);

    let mut small = builder().output_buffer_size(64 << 10).build(&image()).unwrap().init().unwrap();
    match make.call(&mut small, (1 << 20, 1)) {
        Err(Error::GuestFunction { name, message }) => {
            assert_eq!(name, "make_bytes");
            assert_eq!(message, "result does not fit in the 65536-byte output buffer");
        }
        other => panic!("expected RESULT_TOO_LARGE, got {other:?}"),
    }
    assert!(!small.is_poisoned());
    assert_eq!(make.call(&mut small, (3, 1)).unwrap(), vec![1; 3]);
}

#[test]
fn state_persists_across_calls() {
    require_kvm!();
    let mut sb = sandbox();
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(0));
    sb.call("set_state", &[Value::U64(42)]).unwrap();
    assert_eq!(sb.call("get_state", &[]).unwrap(), Value::U64(42));
    assert_eq!(sandbox().call("get_state", &[]).unwrap(), Value::U64(0));
}

#[test]
fn host_calls_and_what_the_guest_sees_of_their_failures() {
    require_kvm!();
    let mut sb = sandbox();
    let probe = sb.typed_fn::<(String,), String>("host_probe").unwrap();
    let mut probe = |name: &str| probe.call(&mut sb, (name.into(),)).unwrap();
    assert_eq!(probe("hello"), "ok:hi from the host");
    assert_eq!(probe("fail"), "err:3:host says no: on purpose");
    assert_eq!(probe("nope"), "err:1:no host function named `nope`");
    let out = probe("add");
    assert!(out.starts_with("err:2:`add` takes 2 arguments, got 0"), "{out}");
    // A response of another type than the declared one is the guest's own (local) error.
    let out = sb.call("host_wrong_type", &[]).unwrap();
    assert_eq!(out, Value::String("0:`hello` returned String, expected u64".into()));
}

#[test]
fn a_host_error_passed_on_is_the_host_functions_and_a_quoted_one_the_guests() {
    require_kvm!();
    let mut sb = sandbox();
    match sb.call("host_fail_propagates", &[]) {
        Err(Error::HostFunction { name, source }) => {
            assert_eq!(name, "fail");
            assert_eq!(source.downcast_ref::<HostFailure>(), Some(&HostFailure("on purpose")));
        }
        other => panic!("expected HostFunction, got {other:?}"),
    }
    match sb.call("host_fail_own_error", &[]) {
        Err(Error::GuestFunction { name, message }) => {
            assert_eq!(name, "host_fail_own_error");
            assert_eq!(message, "gave up after: host says no: on purpose");
        }
        other => panic!("expected the guest's own error, got {other:?}"),
    }
    assert!(!sb.is_poisoned());
}

#[test]
fn declared_imports_are_listed_once_and_their_wrappers_call_the_host() {
    require_kvm!();
    let mut sb = sandbox();
    let imports: Vec<String> = sb.imports().iter().map(|i| format!("{}{}", i.name, i.signature)).collect();
    // `add` is declared in two files: listed once.
    assert_eq!(imports, ["add(i32, i32) -> i32", "glint:test/concat@1(String, Vec<u8>) -> String", "nop() -> ()"]);
    assert_eq!(sb.call("import_add", &[Value::I32(40), Value::I32(2)]).unwrap(), Value::I32(42));
    assert_eq!(sb.call("import_add_twice", &[Value::I32(5)]).unwrap(), Value::I32(20));
    let out = sb.call("import_concat", &[Value::String("a".into()), Value::Bytes(b"bc".to_vec())]).unwrap();
    assert_eq!(out, Value::String("a+bc".into()));
    // The host checks them at init.
    match test_builder().build(&image()).unwrap().init() {
        Err(Error::Imports(e)) => {
            let text = e.to_string();
            assert!(text.contains("glint:test/concat@1") && text.contains("nop"), "{text}");
            assert!(!text.contains("`add"), "{text}");
        }
        other => panic!("expected the missing imports to be refused, got {other:?}"),
    }
}

#[test]
fn log_lines_reach_the_hook() {
    require_kvm!();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut sb = builder()
        .on_log(move |r| sink.lock().unwrap().push(r.message.clone()))
        .build(&image())
        .unwrap()
        .init()
        .unwrap();
    assert_eq!(sb.call("log_lines", &[Value::U32(3)]).unwrap(), Value::U32(3));
    assert_eq!(*lines.lock().unwrap(), ["line 0", "line 1", "line 2"]);
}

#[test]
fn failures_aborts_and_faults_end_the_call_as_the_host_expects() {
    require_kvm!();
    let mut sb = sandbox();
    match sb.call("returns_err", &[Value::String("nope".into())]) {
        Err(Error::GuestFunction { name, message }) => {
            assert_eq!((name.as_str(), message.as_str()), ("returns_err", "nope"))
        }
        other => panic!("{other:?}"),
    }
    match sb.call("bad_utf8", &[]) {
        Err(Error::GuestFunction { message, .. }) => assert_eq!(message, "returned a String that is not valid UTF-8"),
        other => panic!("the runtime checks a String result: {other:?}"),
    }
    assert!(!sb.is_poisoned(), "a function's own failure does not poison");
    sb.call("asserts", &[Value::I32(1)]).unwrap();

    let aborts: [(&str, Vec<Value>, &str); 3] = [
        ("panics", vec![Value::String("boom".into())], "boom"),
        ("asserts", vec![Value::I32(2)], "assertion failed: v == 1 (at main.c:"),
        ("double_free", vec![], "free: not a pointer malloc returned, or freed twice"),
    ];
    for (name, args, want) in aborts {
        match sb.call(name, &args) {
            Err(Error::GuestPanic { message }) => assert!(message.starts_with(want), "{name}: {message}"),
            other => panic!("{name}: expected a guest panic, got {other:?}"),
        }
        assert!(sb.is_poisoned());
        sb.reset().unwrap();
    }
    match sb.call("read_unmapped", &[Value::U64(0xdead_0000)]) {
        Err(Error::GuestFault(f)) => assert_eq!((f.kind, f.address), (FaultKind::PageFault, Some(0xdead_0000))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_heap_allocates_frees_and_merges() {
    require_kvm!();
    let mut sb = sandbox();
    for rounds in [1_000u32, 50_000] {
        match sb.call("heap", &[Value::U32(rounds)]) {
            Ok(Value::U64(checked)) => assert!(checked > 0),
            other => panic!("{rounds} rounds: {other:?}"),
        }
    }
    // Twice more on the same sandbox: what was freed can be had again.
    for _ in 0..2 {
        assert!(matches!(sb.call("heap", &[Value::U32(20_000)]), Ok(Value::U64(_))));
    }
}

/// A frame: the body's length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A call body: index, argc, then the encoded arguments as given.
fn call_body(index: u32, argc: u32, args: &[u8]) -> Vec<u8> {
    let mut b = index.to_le_bytes().to_vec();
    b.extend_from_slice(&argc.to_le_bytes());
    b.extend_from_slice(args);
    b
}

/// What the dispatcher answered: `Ok(value bytes)` or `Err((code, message))`.
/// A call's result bytes, or its error code and message.
type Reply = Result<Vec<u8>, (u32, String)>;

fn outcome(frame: &[u8]) -> Reply {
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    let body = &frame[4..];
    assert_eq!(body.len(), len, "the frame's length prefix");
    match body[0] {
        0 => Ok(body[1..].to_vec()),
        1 => {
            let code = u32::from_le_bytes(body[1..5].try_into().unwrap());
            let n = u32::from_le_bytes(body[5..9].try_into().unwrap()) as usize;
            assert_eq!(body.len(), 9 + n, "nothing after the message");
            Err((code, String::from_utf8(body[9..].to_vec()).unwrap()))
        }
        s => panic!("status {s}"),
    }
}

#[test]
fn malformed_call_frames_get_the_rust_librarys_answers() {
    require_kvm!();
    let mut sb = sandbox();
    let index = |name: &str| sb.exports().iter().position(|e| e.name == name).unwrap() as u32;
    let (i32_, bool_, string, sum16) = (index("rt_i32"), index("rt_bool"), index("rt_string"), index("sum16"));
    let raw = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("raw_call").unwrap();
    let mut send = |bytes: Vec<u8>| outcome(&raw.call(&mut sb, (bytes,)).unwrap());
    let str_arg = |bytes: &[u8]| {
        let mut v = vec![8];
        v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    };

    // Well-formed calls still work through the same path.
    assert_eq!(send(frame(&call_body(i32_, 1, &[1, 0xfb, 0xff, 0xff, 0xff]))), Ok(vec![1, 0xfb, 0xff, 0xff, 0xff]));
    assert_eq!(
        send(frame(&call_body(string, 1, &str_arg("é\u{10FFFF}".as_bytes())))),
        Ok(str_arg("é\u{10FFFF}".as_bytes()))
    );
    let mut sixteen = Vec::new();
    for i in 1..=16u32 {
        sixteen.push(2);
        sixteen.extend_from_slice(&i.to_le_bytes());
    }
    let want: u64 = (1..=16u64).map(|i| i * i).sum();
    let mut want_bytes = vec![4];
    want_bytes.extend_from_slice(&want.to_le_bytes());
    assert_eq!(send(frame(&call_body(sum16, 16, &sixteen))), Ok(want_bytes));

    let bad = |m: &str| Err((2, m.to_owned()));
    let cases: Vec<(Vec<u8>, Reply)> = vec![
        (frame(&[]), bad("malformed call: message is truncated")),
        (frame(&i32_.to_le_bytes()), bad("malformed call: message is truncated")),
        (frame(&call_body(i32_, 17, &[])), bad("malformed call: count 17 exceeds the limit")),
        (frame(&call_body(9999, 0, &[])), Err((1, "no exported function has index 9999".into()))),
        (frame(&call_body(i32_, 2, &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0])), bad("`rt_i32` takes 1 arguments, got 2")),
        (frame(&call_body(i32_, 0, &[])), bad("`rt_i32` takes 1 arguments, got 0")),
        (frame(&call_body(i32_, 1, &[2, 0, 0, 0, 0])), bad("`rt_i32` argument 0 must be i32, got u32")),
        (frame(&call_body(string, 1, &[9, 0, 0, 0, 0])), bad("`rt_string` argument 0 must be String, got Vec<u8>")),
        (frame(&call_body(i32_, 1, &[1, 0, 0])), bad("`rt_i32` arguments do not decode: message is truncated")),
        (
            frame(&call_body(i32_, 1, &[1, 0, 0, 0, 0, 7, 7, 7])),
            bad("`rt_i32` arguments do not decode: 3 unexpected bytes after the message"),
        ),
        (
            frame(&call_body(bool_, 1, &[7, 2])),
            bad("`rt_bool` arguments do not decode: boolean byte 2 is neither 0 nor 1"),
        ),
        (frame(&call_body(i32_, 1, &[10])), bad("`rt_i32` arguments do not decode: unknown value tag 10")),
        (
            frame(&call_body(i32_, 1, &[255, 0, 0, 0, 0])),
            bad("`rt_i32` arguments do not decode: unknown value tag 255"),
        ),
        (
            frame(&call_body(string, 1, &[8, 100, 0, 0, 0, b'a', b'b', b'c'])),
            bad("`rt_string` arguments do not decode: message is truncated"),
        ),
        (
            vec![0xff, 0xff, 0xff, 0xff],
            bad(&format!(
                "malformed call frame: frame announces 4294967295 bytes but the buffer holds {}",
                (2 << 20) - 4
            )),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(send(bytes.clone()), want, "{bytes:02x?}");
    }
    // Text that Rust's `str::from_utf8` refuses: a stray byte, an overlong NUL, a surrogate, a
    // code point above U+10FFFF, a sequence cut short.
    for text in [&[0xff][..], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80], &[0xe2, 0x82], &[0x80]] {
        assert_eq!(
            send(frame(&call_body(string, 1, &str_arg(text)))),
            bad("`rt_string` arguments do not decode: text is not valid UTF-8"),
            "{text:02x?}"
        );
    }
    assert!(!sb.is_poisoned());
}

/// docs/ABI.md shows tested code only: each block after an `<!-- excerpt: PATH ... -->` marker is
/// text of that file (which the suites build and run), and every flag of its build line is one
/// of `guest/c/glint.mk`'s.
#[test]
fn the_abi_documents_excerpts_are_the_tested_files_text() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ABI.md")).unwrap();
    let mut excerpts = 0;
    for (i, _) in doc.match_indices("<!-- excerpt: ") {
        let rest = &doc[i + "<!-- excerpt: ".len()..];
        let path = rest.split_whitespace().next().unwrap();
        let code = rest.split_once("```c\n").unwrap().1.split_once("```").unwrap().0;
        let file = std::fs::read_to_string(root.join(path)).unwrap();
        assert!(file.contains(code), "the excerpt of {path} in docs/ABI.md is not the file's text:\n{code}");
        excerpts += 1;
    }
    assert!(excerpts >= 1, "docs/ABI.md has its C excerpt");

    let mk = std::fs::read_to_string(root.join("guest/c/glint.mk")).unwrap();
    let appendix = doc.split_once("## Appendix A.").unwrap().1.split_once("## Appendix B.").unwrap().0;
    let build = appendix.split_once("```sh\n").unwrap().1.split_once("```").unwrap().0;
    for flag in build.split_whitespace().filter(|w| w.starts_with('-') && *w != "-o") {
        assert!(mk.split_whitespace().any(|w| w == flag), "{flag} of docs/ABI.md's build line is not in glint.mk");
    }
}

/// The C guest in the README's "Writing a guest" compiles with the flags of `glint.mk` and works.
#[test]
fn the_readmes_c_guest_builds_and_runs() {
    require_kvm!();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if std::process::Command::new(&cc).arg("--version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no C compiler `{cc}` but CI=true");
        eprintln!("note: no C compiler `{cc}`; skipping");
        return;
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme.split_once("## Writing a guest").unwrap().1;
    let code = section.split_once("```c\n").unwrap().1.split_once("```").unwrap().0;
    let dir = std::env::temp_dir().join(format!("glint-readme-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.c"), code).unwrap();
    let mk = std::fs::read_to_string(root.join("guest/c/glint.mk")).unwrap().replace("\\\n", " ");
    let flags = |name: &str| -> Vec<String> {
        let line = mk.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        line.trim_start_matches([' ', '=']).split_whitespace().map(str::to_owned).collect()
    };
    let exe = dir.join("guest");
    let out = std::process::Command::new(&cc)
        .args(flags("GLINT_CFLAGS"))
        .arg("-I")
        .arg(root.join("guest/c"))
        .arg("-o")
        .arg(&exe)
        .arg(dir.join("main.c"))
        .arg(root.join("guest/c/glint.c"))
        .args(flags("GLINT_LDFLAGS"))
        .args(flags("GLINT_LDLIBS"))
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = GuestImage::from_file(&exe).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut sb = test_builder().build(&image).unwrap().init().unwrap();
    assert_eq!(sb.call("add", &[Value::I32(2), Value::I32(3)]).unwrap(), Value::I32(5));
    assert_eq!(sb.call("greet", &[Value::String("Ada".into())]).unwrap(), Value::String("Hello, Ada!".into()));
    assert_eq!(sb.call("echo", &[Value::Bytes(vec![1, 2])]).unwrap(), Value::Bytes(vec![1, 2]));
}

/// An encoded request (docs/ABI.md, Appendix C.2).
fn http_request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    glint_abi::http::put_request(&mut out, method, target, headers.iter().copied(), body).unwrap();
    out
}

/// A decoded HTTP response: status, headers, body.
type HttpResponse = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

/// Calls `handle` with `request` and decodes the response.
fn handle(sb: &mut Sandbox, request: Vec<u8>) -> Result<HttpResponse, Error> {
    let out = sb.typed_fn::<(Vec<u8>,), Vec<u8>>("handle").unwrap().call(sb, (request,))?;
    let r = glint_abi::http::read_response(&out).unwrap();
    Ok((r.status, r.headers.map(|h| (h.name.to_owned(), h.value.to_vec())).collect(), r.body.to_vec()))
}

#[test]
fn the_c_http_handler_answers_its_routes() {
    require_kvm!();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let image = GuestImage::from_file(glint_guest_artifacts::HTTP_C).unwrap();
    let mut sb = SandboxBuilder::new()
        .on_log(move |r| sink.lock().unwrap().push(r.message.clone()))
        .build(&image)
        .unwrap()
        .init()
        .unwrap();
    let (status, headers, body) =
        handle(&mut sb, http_request("PUT", "/echo/a%20b?x=1", &[("x-a", b"1")], b"body!")).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"PUT /echo/a%20b?x=1\nbody!"[..]));
    assert_eq!(headers, [("x-echo".to_owned(), b"1".to_vec())]);
    assert_eq!(*lines.lock().unwrap(), ["echo PUT /echo/a%20b?x=1"]);

    let (status, headers, body) = handle(&mut sb, http_request("GET", "/hello/ada%20l%C3%A9", &[], b"")).unwrap();
    assert_eq!((status, String::from_utf8(body).unwrap()), (200, "Hello, ada lé!\n".to_owned()));
    assert_eq!(headers, [("content-type".to_owned(), b"text/plain; charset=utf-8".to_vec())]);
    for bad in ["/hello/%ff", "/hello/%zz", "/hello/"] {
        assert_eq!(handle(&mut sb, http_request("GET", bad, &[], b"")).unwrap().0, 400, "{bad}");
    }
    assert_eq!(handle(&mut sb, http_request("GET", "/nothing", &[], b"")).unwrap().0, 404);
    assert_eq!(handle(&mut sb, http_request("POST", "/hello/x", &[], b"")).unwrap().0, 404);
    assert_eq!(handle(&mut sb, http_request("GET", "/status/299", &[], b"")).unwrap().0, 299);
    for (target, message) in [
        ("/fail", "the handler failed on purpose".to_owned()),
        ("/status/42", "cannot encode HTTP message: status 42 is outside 100..=999".to_owned()),
        ("/status/1000", "cannot encode HTTP message: status 1000 is outside 100..=999".to_owned()),
    ] {
        match handle(&mut sb, http_request("GET", target, &[], b"")) {
            Err(Error::GuestFunction { name, message: got }) => assert_eq!((name.as_str(), got), ("handle", message)),
            other => panic!("{target}: {other:?}"),
        }
    }
    assert!(!sb.is_poisoned());
    assert_eq!(sb.call("add", &[Value::I32(2), Value::I32(40)]).unwrap(), Value::I32(42));
}

/// Requests that do not decode get the same message from the C runtime as from glint-guest (the
/// Rust example HTTP guest), both as glint_abi::http words it.
#[test]
fn malformed_http_requests_get_the_rust_librarys_messages() {
    require_kvm!();
    let sandbox = |path: &str| {
        let image = GuestImage::from_file(path).unwrap();
        SandboxBuilder::new().unknown_imports_as_traps(true).build(&image).unwrap().init().unwrap()
    };
    let (mut c, mut rust) = (sandbox(glint_guest_artifacts::HTTP_C), sandbox(glint_guest_artifacts::HTTP));
    let field = |b: &[u8]| {
        let mut v = (b.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let raw = |parts: &[&[u8]]| parts.concat();
    let ok_head = [field(b"GET"), field(b"/")].concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "malformed HTTP message: message is truncated"),
        (
            raw(&[&field(b"G E"), &field(b"/"), &[0; 4], &[0; 4]]),
            "invalid HTTP message: method is not a token of at most 32 bytes",
        ),
        (
            raw(&[&field(&[b'A'; 33]), &field(b"/"), &[0; 8]]),
            "invalid HTTP message: method is not a token of at most 32 bytes",
        ),
        (raw(&[&field(b"GET"), &field(b""), &[0; 8]]), "invalid HTTP message: target is empty or not visible ASCII"),
        (
            raw(&[&field(b"GET"), &field(b"/a b"), &[0; 8]]),
            "invalid HTTP message: target is empty or not visible ASCII",
        ),
        (
            raw(&[&ok_head, &1000u32.to_le_bytes(), &[0; 4]]),
            "invalid HTTP message: header count 1000 does not match the headers",
        ),
        (
            raw(&[&ok_head, &1u32.to_le_bytes(), &field(b"bad name"), &field(b"v"), &[0; 4]]),
            "invalid HTTP message: header 0 has an invalid name",
        ),
        (
            raw(&[&ok_head, &2u32.to_le_bytes(), &field(b"a"), &field(b"1"), &field(b"b"), &field(b"x\r\ny"), &[0; 4]]),
            "invalid HTTP message: header 1 has CR, LF or NUL in its value",
        ),
        (
            raw(&[&ok_head, &1u32.to_le_bytes(), &field(&[0xff]), &field(b"v"), &[0; 4]]),
            "malformed HTTP message: text is not valid UTF-8",
        ),
        (
            raw(&[&ok_head, &[0; 4], &field(b"body"), &[7, 7]]),
            "malformed HTTP message: 2 unexpected bytes after the message",
        ),
        (raw(&[&ok_head, &[0; 4], &100u32.to_le_bytes(), b"short"]), "malformed HTTP message: message is truncated"),
    ];
    for (bytes, want) in cases {
        for (guest, sb) in [("C", &mut c), ("Rust", &mut rust)] {
            match sb.call("handle", &[Value::Bytes(bytes.clone())]) {
                Err(Error::GuestFunction { message, .. }) => assert_eq!(message, want, "{guest}: {bytes:02x?}"),
                other => panic!("{guest}: expected the request to be refused, got {other:?}"),
            }
        }
    }
}
