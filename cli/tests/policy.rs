//! `glint policy check` and the same check at `glint serve` start: every violation one line
//! naming the rule and the function, a non-zero exit, an audit event each; a clean manifest passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/signing.rs"]
mod signing;

use signing::{openssl_digest, SignedHello};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn glint(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glint")).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stderr.clone()).unwrap().lines().map(str::to_owned).collect()
}

/// [`SignedHello`] (`hello`, `release.pub`, `hello.sig`) and the guest's digest.
struct Fixture {
    signed: SignedHello,
    digest: String,
}

impl Fixture {
    fn new() -> Fixture {
        let signed = SignedHello::new();
        let digest = openssl_digest(&signed.image);
        Fixture { signed, digest }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.signed.path(name)
    }
}

/// One function table; `extra` lines go at its end.
fn function(name: &str, extra: &str) -> String {
    format!("\n[[function]]\nname = \"{name}\"\nimage = \"hello\"\nroute = \"/{name}\"\nkind = \"typed\"\n{extra}\n")
}

fn header() -> &'static str {
    "[server]\nmax_memory_mib = 64\nmax_timeout_ms = 10000\n\n[trust]\nkeys = [\"release.pub\"]\nrequire_digests = true\naudit_log = \"audit.jsonl\"\n"
}

/// Five functions, each breaking one different rule.
fn bad_manifest(f: &Fixture) -> String {
    let d = &f.digest;
    let signed = format!("signature = \"hello.sig\"\ndigest = \"{d}\"");
    [
        header().to_owned(),
        function("unsigned", &format!("digest = \"{d}\"")),
        function("unpinned", "signature = \"hello.sig\""),
        function("big", &format!("{signed}\nmemory_mib = 128")),
        function("slow", &format!("{signed}\ntimeout_ms = 60000")),
        function("open", &format!("{signed}\n[function.capabilities]\nallowed_outbound_hosts = [\"https://*\"]")),
    ]
    .concat()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l == needle).unwrap() + 1
}

#[test]
fn five_violations_give_five_lines_and_a_non_zero_exit() {
    require_openssl!();
    let f = Fixture::new();
    let text = bad_manifest(&f);
    let m = f.write("bad.toml", &text);
    let out = glint(&[&"policy", &"check", &m]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
    let lines = stderr_lines(&out);
    let file = m.display().to_string();
    let at = |name: &str| {
        // The line of the function's `[[function]]` table: the one before `name = ...`.
        line_of(&text, &format!("name = \"{name}\"")) - 1
    };
    let expected = [
        format!("glint: {file}:{}: policy `require_signatures` denies function `unsigned`: its image has no `signature`, and [trust] requires signed images", at("unsigned")),
        format!("glint: {file}:{}: policy `require_digests` denies function `unpinned`: its image has no `digest` pin, and [trust] require_digests = true", at("unpinned")),
        format!("glint: {file}:{}: policy `max_memory` denies function `big`: memory_mib = 128 is above the server maximum 64 ([server] max_memory_mib)", at("big")),
        format!("glint: {file}:{}: policy `max_timeout` denies function `slow`: timeout_ms = 60000 is above the server maximum 10000 ([server] max_timeout_ms)", at("slow")),
        format!("glint: {file}:{}: policy `outbound_hosts` denies function `open`: allowed_outbound_hosts pattern \"https://*\" matches any host; name the hosts, or set [trust] allow_broad_outbound = true", at("open")),
    ];
    assert_eq!(lines, expected);

    // One policy_denied audit event per violation, naming the rule and the function.
    let audit = std::fs::read_to_string(f.path("audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["rule"].as_str().unwrap().into(),
                e["function"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("require_signatures", "unsigned"),
        ("require_digests", "unpinned"),
        ("max_memory", "big"),
        ("max_timeout", "slow"),
        ("outbound_hosts", "open"),
    ]
    .iter()
    .map(|(r, n)| ("policy_denied".into(), (*r).into(), (*n).into()))
    .collect();
    assert_eq!(got, want);

    // glint serve refuses to start with the same lines (before any VM exists).
    let served = glint(&[&"serve", &m, &"--listen", &"127.0.0.1:0"]);
    assert_eq!(served.status.code(), Some(3), "{served:?}");
    let served_lines: Vec<String> = stderr_lines(&served).into_iter().filter(|l| l.starts_with("glint: ")).collect();
    assert_eq!(served_lines, expected);
    assert!(!String::from_utf8_lossy(&served.stdout).contains("listening"));
}

#[test]
fn the_clean_manifest_passes() {
    require_openssl!();
    let f = Fixture::new();
    let d = &f.digest;
    let signed = format!("signature = \"hello.sig\"\ndigest = \"{d}\"");
    let text = [
        header().to_owned(),
        function("a", &signed),
        function("b", &format!("{signed}\nmemory_mib = 64\ntimeout_ms = 10000")),
        function("c", &format!("{signed}\n[function.capabilities]\nallowed_outbound_hosts = [\"https://*.example.com\", \"http://127.0.0.1:*\"]")),
    ]
    .concat();
    let m = f.write("good.toml", &text);
    let out = glint(&[&"policy", &"check", &m]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("policy check passed: 3 function(s) in {}\n", m.display())
    );
    assert!(out.stderr.is_empty());
    assert!(!f.path("audit.jsonl").exists(), "no denial, no audit event");
    // Broad patterns are allowed when the manifest says so.
    let open = text.replace("require_digests = true", "require_digests = true\nallow_broad_outbound = true")
        + &function("d", &format!("{signed}\n[function.capabilities]\nallowed_outbound_hosts = [\"https://*\"]"));
    let m = f.write("open.toml", &open);
    assert!(glint(&[&"policy", &"check", &m]).status.success());
}

#[test]
fn bad_signatures_pins_and_ungranted_imports_are_denied() {
    require_openssl!();
    let f = Fixture::new();
    // The example HTTP guest declares every capability it uses (clock, random, variables, kv,
    // http); correctly signed.
    std::fs::copy(glint_guest_artifacts::HTTP, f.path("kv")).unwrap();
    f.signed.key.sign(&f.path("kv"), &f.path("kv.sig"));
    let kv_digest = openssl_digest(&f.path("kv"));
    let wrong = format!("sha256:{}", "0".repeat(64));
    // Every capability but key-value.
    let all_but_kv = "[function.capabilities]\nclock = true\nrandom = true\nallowed_outbound_hosts = [\"http://127.0.0.1:9\"]\n[function.variables]\ngreeting = \"hi\"";
    let text = [
        "[trust]\nkeys = [\"release.pub\"]\n".to_owned(),
        // Signed by the trusted key but pinned to other bytes.
        function("pinned", &format!("signature = \"hello.sig\"\ndigest = \"{wrong}\"")),
        // A signature over another file.
        function("mismatch", "signature = \"kv.sig\""),
        function("kv", &format!("signature = \"kv.sig\"\ndigest = \"{kv_digest}\"\n{all_but_kv}"))
            .replace("image = \"hello\"", "image = \"kv\""),
        function(
            "kv_granted",
            &format!(
                "signature = \"kv.sig\"\n{}",
                all_but_kv.replace("clock = true", "clock = true\nkey_value_stores = [\"default\"]")
            ),
        )
        .replace("image = \"hello\"", "image = \"kv\""),
    ]
    .concat();
    let m = f.write("m.toml", &text);
    let out = glint(&[&"policy", &"check", &m]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(lines[0].contains("policy `trusted_image` denies function `pinned`: image digest is"), "{}", lines[0]);
    assert!(lines[0].ends_with(&format!("the pin expects {wrong}")), "{}", lines[0]);
    assert!(
        lines[1].contains("policy `trusted_image` denies function `mismatch`: the signature on image"),
        "{}",
        lines[1]
    );
    // One line per declared key-value import, each naming the grant.
    for (line, import) in
        lines[2..].iter().zip(["glint:kv/get@1", "glint:kv/set@1", "glint:kv/delete@1", "glint:kv/list@1"])
    {
        assert!(line.ends_with(&format!(
            "policy `capability_grant` denies function `kv`: imports `{import}` but its manifest entry does not grant it: add `key_value_stores = [\"<store>\"]` under [function.capabilities]"
        )), "{line}");
    }
}

#[test]
fn a_malformed_manifest_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(&m, "[trust]\nkeys = 3\n").unwrap();
    let out = glint(&[&"policy", &"check", &m]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let missing: &Path = &dir.path().join("none.toml");
    assert_eq!(glint(&[&"policy", &"check", &missing]).status.code(), Some(3));
}
