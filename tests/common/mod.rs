//! Helpers shared by the integration tests.

pub mod elf;
pub mod hostile;

use glint::{GuestImage, Sandbox, SandboxBuilder, Value};

/// Whether this test may use KVM: skips (returns false, with a note) when /dev/kvm cannot be
/// opened, unless GLINT_REQUIRE_KVM=1 (set by CI), where a missing KVM fails the test.
pub fn kvm() -> bool {
    let ok = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if !ok {
        assert!(
            std::env::var("GLINT_REQUIRE_KVM").as_deref() != Ok("1"),
            "/dev/kvm cannot be opened but GLINT_REQUIRE_KVM=1"
        );
        eprintln!("note: /dev/kvm cannot be opened; skipping this KVM test");
    }
    ok
}

/// Skips the calling test when KVM is unavailable (see [`kvm`]).
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::common::kvm() {
            return;
        }
    };
}

/// The test guest's image, loaded once per test binary.
pub fn testguest() -> GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| GuestImage::from_file(glint_guest_artifacts::TESTGUEST).expect("load testguest")).clone()
}

/// The hello guest's image.
pub fn hello() -> GuestImage {
    static IMAGE: std::sync::OnceLock<GuestImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| GuestImage::from_file(glint_guest_artifacts::HELLO).expect("load hello")).clone()
}

/// The host function whose error tests look for.
#[derive(Debug, PartialEq, Eq)]
pub struct HostFailure(pub &'static str);

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host says no: {}", self.0)
    }
}

impl std::error::Error for HostFailure {}

/// A builder with the host functions the test guest expects (`add`, `fail`, `hello`, `boom`)
/// and the one the hello guest imports (`greeting`).
pub fn test_builder() -> SandboxBuilder {
    SandboxBuilder::new()
        .host_fn("greeting", |name: String| format!("Hello, {name}"))
        .host_fn("add", |a: i32, b: i32| a.wrapping_add(b))
        .host_fn("fail", || -> Result<String, HostFailure> { Err(HostFailure("on purpose")) })
        .host_fn("hello", || String::from("hi from the host"))
        .host_fn("boom", || -> String { panic!("host function panicked on purpose") })
}

/// A ready test-guest sandbox with [`test_builder`]'s host functions.
pub fn test_sandbox() -> Sandbox {
    test_builder().build(&testguest()).expect("build").init().expect("init")
}

/// Every value type through the `rt_*` echo exports as typed functions, with their edge values
/// (extremes, infinities, NaN payloads, the sign of zero, the largest code points), as both test
/// guests (Rust and C) export them.
pub fn assert_every_value_type_round_trips_typed(sb: &mut Sandbox) {
    macro_rules! rt {
        ($name:literal, $t:ty, $($v:expr),+) => {{
            let f = sb.typed_fn::<($t,), $t>($name).expect("typed export");
            $( assert_eq!(f.call(sb, ($v,)).expect("call"), $v, $name); )+
        }};
    }
    rt!("rt_i32", i32, 0, -1, i32::MIN, i32::MAX);
    rt!("rt_u32", u32, 0, u32::MAX);
    rt!("rt_i64", i64, i64::MIN, -2, i64::MAX);
    rt!("rt_u64", u64, 0, u64::MAX);
    rt!("rt_f32", f32, 0.0, -1.5, f32::MAX, f32::INFINITY, f32::MIN_POSITIVE);
    rt!("rt_f64", f64, 0.1, -1e300, f64::MIN_POSITIVE, f64::NEG_INFINITY);
    rt!("rt_bool", bool, true, false);
    rt!("rt_string", String, String::new(), "héllo ✓".to_string(), "\u{10FFFF}\u{FFFF}\0".to_string());
    rt!("rt_bytes", Vec<u8>, Vec::<u8>::new(), vec![0u8, 1, 255]);
    sb.typed_fn::<(), ()>("rt_unit").expect("typed export").call(sb, ()).expect("call");
    let nan = sb.typed_fn::<(f64,), f64>("rt_f64").expect("typed export").call(sb, (f64::NAN,)).expect("call");
    assert!(nan.is_nan());
    // NaN payloads and the sign of zero cross bit for bit.
    let odd = f32::from_bits(0x7fc0_1234);
    let got = sb.typed_fn::<(f32,), f32>("rt_f32").expect("typed export").call(sb, (odd,)).expect("call");
    assert_eq!(got.to_bits(), odd.to_bits());
    let got = sb.typed_fn::<(f64,), f64>("rt_f64").expect("typed export").call(sb, (-0.0,)).expect("call");
    assert_eq!(got.to_bits(), (-0.0f64).to_bits());
}

/// Every value type through the `rt_*` echo exports untyped, as both test guests (Rust and C)
/// export them: one set of assertions for both languages.
pub fn assert_every_value_type_round_trips(sb: &mut Sandbox) {
    let cases = [
        ("rt_i32", Value::I32(-7)),
        ("rt_u32", Value::U32(7)),
        ("rt_i64", Value::I64(-1 << 40)),
        ("rt_u64", Value::U64(1 << 63)),
        ("rt_f32", Value::F32(2.5)),
        ("rt_f64", Value::F64(-0.125)),
        ("rt_bool", Value::Bool(true)),
        ("rt_string", Value::String("text".into())),
        ("rt_bytes", Value::Bytes(vec![9; 17])),
    ];
    for (name, v) in cases {
        assert_eq!(sb.call(name, std::slice::from_ref(&v)).expect("call"), v, "{name}");
    }
    assert_eq!(sb.call("rt_unit", &[]).expect("call"), Value::Unit);
}

/// Whether gdb is installed, for the debugging tests: skips (false, with a note) when it is not,
/// unless `CI=true`, where a missing gdb fails the test.
pub fn gdb() -> bool {
    let ok = std::process::Command::new("gdb").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "gdb is not installed but CI=true");
        eprintln!("note: gdb is not installed; skipping this test");
    }
    ok
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("glint-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}
