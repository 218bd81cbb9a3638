//! The seed inputs in `fuzz/seeds/<target>/`, made here so that they stay valid as the ABI moves.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml` checks that the committed files are what this file
//! makes and that each is still accepted (an image loads, a message decodes); with
//! `GLINT_WRITE_SEEDS=1` it rewrites them instead. The fuzzer mutates from these, so it starts
//! from inputs that reach past the first length check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../tests/common/elf.rs"]
mod elf;

use std::path::PathBuf;

use elf::{Dynamic, RawElf, Rela, Segment, ET_EXEC, PF_R, PF_W, PF_X, PT_GNU_RELRO, PT_GNU_STACK};
use glint::GuestImage;
use glint_abi::layout::IMAGE_BASE;
use glint_abi::wire::{self, Full};
use glint_abi::ValueType::{self, Bytes, String as Str, I32};
use glint_abi::code::{AbortCode, CallError, LogLevel};
use glint_abi::ValueRef;

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// `hlt`
const HLT: u8 = 0xf4;

fn encode(body: impl FnOnce(&mut Vec<u8>) -> Result<(), Full>) -> Vec<u8> {
    let mut out = Vec::new();
    body(&mut out).unwrap();
    out
}

/// A message body preceded by the `guest_messages` selector byte.
fn message(selector: u8, body: impl FnOnce(&mut Vec<u8>) -> Result<(), Full>) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend(encode(body));
    out
}

fn host_call(name: &str, args: &[ValueRef<'_>]) -> Vec<u8> {
    encode(|s| {
        wire::put_host_call_head(s, name, args.len())?;
        args.iter().try_for_each(|&v| wire::put_value(s, v))
    })
}

fn image_load() -> Seeds {
    // Segments sit at small page offsets, so their file offsets (congruent modulo the page size)
    // stay small and so do the files.
    let exec =
        RawElf::new(ET_EXEC).entry(IMAGE_BASE + 0x100).segment(Segment::load(PF_R | PF_X, IMAGE_BASE + 0x100, &[HLT]));
    let mut note_in_section = exec.clone();
    note_in_section.note_in_section = true;
    let pie = RawElf::pie(&[HLT; 0x20], 0x200)
        .entry(0x210)
        .segment(Segment::load(PF_R | PF_W, 0x1280, &[0; 0x40]).mem_size(0x200))
        .segment(Segment::new(PT_GNU_RELRO, PF_R, 0x1280, &[]).mem_size(0x40))
        .segment(Segment::new(PT_GNU_STACK, PF_R | PF_W, 0, &[]))
        .dynamic(Dynamic::new(0x2300, vec![Rela::relative(0x1280, 0x210), Rela::relative(0x1288, 0x1290)]));
    vec![("exec", exec.build()), ("note_in_section", note_in_section.build()), ("pie_relocated", pie.build())]
}

fn guest_messages() -> Seeds {
    let exports = |s: &mut Vec<u8>| {
        wire::put_count(s, 3)?;
        wire::put_function(s, "add", &[I32, I32], I32)?;
        wire::put_function(s, "greet", &[Str], Str)?;
        wire::put_function(s, "echo", &[Bytes], Bytes)?;
        wire::put_count(s, 1)?;
        wire::put_function(s, "greeting", &[Str], Str)
    };
    let every_type = [
        ValueRef::Unit,
        ValueRef::I32(-5),
        ValueRef::U32(7),
        ValueRef::I64(i64::MIN),
        ValueRef::U64(u64::MAX),
        ValueRef::F32(f32::NAN),
        ValueRef::F64(-0.25),
        ValueRef::Bool(true),
        ValueRef::String("héllo"),
        ValueRef::Bytes(&[0, 1, 255]),
    ];
    // A whole output buffer: the frame, then the rest of the buffer.
    let framed = |selector: u8, body: Vec<u8>| {
        let mut out = vec![selector | 0x80];
        out.extend(wire::frame_vec(|v| wire::Sink::put(v, &body)).unwrap());
        out.extend([0; 8]);
        out
    };
    vec![
        ("outcome_ok", message(0, |s| wire::put_ok(s, ValueRef::I32(5)))),
        ("outcome_ok_string", message(0, |s| wire::put_ok(s, ValueRef::String("Hello, Ada!")))),
        ("outcome_err", message(0, |s| wire::put_err(s, CallError::FunctionFailed.number(), b"boom"))),
        ("host_call", [vec![1], host_call("greeting", &[ValueRef::String("Ada")])].concat()),
        ("abort", message(2, |s| wire::put_abort(s, AbortCode::Panic.number(), b"panicked at src/main.rs:3:5"))),
        ("log", message(3, |s| wire::put_log(s, LogLevel::Info.number(), b"greeting Ada\n"))),
        ("exports", message(4, exports)),
        (
            "call",
            message(5, |s| {
                wire::put_call_head(s, 0, 2)?;
                wire::put_value(s, ValueRef::I32(2))?;
                wire::put_value(s, ValueRef::I32(3))
            }),
        ),
        ("every_type", [vec![0x7f], host_call("all", &every_type)].concat()),
        ("framed_outcome", framed(0, encode(|s| wire::put_ok(s, ValueRef::F64(1.5))))),
        ("framed_exports", framed(4, encode(exports))),
    ]
}

fn host_call_args() -> Seeds {
    use ValueRef as V;
    vec![
        ("greeting", host_call("greeting", &[V::I32(7), V::String("Ada")])),
        ("greeting_swapped", host_call("greeting", &[V::String("Ada"), V::I32(7)])),
        ("tick", host_call("tick", &[])),
        ("echo", host_call("echo", &[V::Bytes(&[0, 1, 255])])),
        ("divide", host_call("divide", &[V::I64(-9), V::I64(3)])),
        ("divide_by_zero", host_call("divide", &[V::I64(1), V::I64(0)])),
        (
            "all",
            host_call(
                "all",
                &[
                    V::U32(1),
                    V::U64(2),
                    V::F32(f32::NAN),
                    V::F64(-0.0),
                    V::Bool(true),
                    V::Unit,
                    V::String("three"),
                    V::Bytes(b"four"),
                ],
            ),
        ),
    ]
}

/// Checks that each seed is still a valid input of its kind.
fn check_valid(target: &str, name: &str, seed: &[u8]) {
    match target {
        "image_load" => {
            GuestImage::from_bytes(seed).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        "guest_messages" => {
            let (&selector, mut body) = seed.split_first().unwrap();
            if selector & 0x80 != 0 {
                let len = wire::frame_len(body[..4].try_into().unwrap(), body.len()).unwrap();
                body = &body[4..4 + len];
            }
            let ok = match selector & 0x7f {
                0 => wire::read_outcome(body).is_ok(),
                2 => wire::read_abort(body).is_ok(),
                3 => wire::read_log(body).is_ok(),
                4 => wire::read_table(body, |_, _| Ok::<(), ()>(())) == Ok(Ok(())),
                5 => wire::read_call_head(body).is_ok(),
                _ => wire::read_host_call_head(body).is_ok(),
            };
            assert!(ok, "{name} does not decode");
        }
        _ => {
            let (_, argc, mut r) = wire::read_host_call_head(seed).unwrap();
            for _ in 0..argc {
                r.value().unwrap();
            }
            r.finish().unwrap();
        }
    }
}

#[test]
fn seeds_are_current_and_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = std::env::var("GLINT_WRITE_SEEDS").as_deref() == Ok("1");
    let targets =
        [("image_load", image_load()), ("guest_messages", guest_messages()), ("host_call_args", host_call_args())];
    for (target, seeds) in targets {
        let target_dir = dir.join(target);
        if write {
            std::fs::create_dir_all(&target_dir).unwrap();
        }
        let mut names: Vec<String> = Vec::new();
        for (name, seed) in seeds {
            check_valid(target, name, &seed);
            let path = target_dir.join(name);
            if write {
                std::fs::write(&path, &seed).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_default();
                assert!(committed == seed, "{} is stale; regenerate with GLINT_WRITE_SEEDS=1", path.display());
            }
            names.push(name.into());
        }
        // No leftover seed this file no longer makes.
        for entry in std::fs::read_dir(&target_dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(names.contains(&name), "{target}/{name} is not made by this file");
        }
    }
}

#[test]
fn every_value_type_has_a_seed() {
    let seeds = guest_messages();
    let (_, every_type) = seeds.iter().find(|(name, _)| *name == "every_type").unwrap();
    let (_, argc, _) = wire::read_host_call_head(&every_type[1..]).unwrap();
    assert_eq!(argc, ValueType::ALL.len());
}
