//! The `glint` command line: run a guest function, inspect a guest.
//!
//! Every failure prints one line on stderr and exits with a status below 128:
//! 1 the guest failed (fault, panic, timeout, its own error), 2 usage or arguments,
//! 3 the guest file is unreadable or refused, 4 the host cannot run sandboxes (KVM).

use glint::{Error, GuestImage, SandboxBuilder, Signature, Value, ValueType};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  glint run <GUEST> <FUNCTION> [ARG...] [--timeout-ms N] [--memory-mib N] [--json]
  glint inspect <GUEST> [--timeout-ms N] [--memory-mib N] [--json]
  glint bench <GUEST> [--json]

`bench` measures cold start, calls, host calls, restore, fresh calls from a pool, kill latency
and density next to a bare-KVM floor measured in the same run, in under a minute. The guest must
export add(i32, i32) -> i32; host_calls, dirty and spin are measured when exported (the
benchguest in guest/bins/test exports all).

Arguments are parsed by the function's declared parameter types: integers and floats in
decimal, bool as true/false, String as given, Vec<u8> as hex (e.g. 0a0bff). `--` ends options.";

/// A failure with its exit status.
struct Failure {
    status: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { status: 2, message: message.into() }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Image(_) => 3,
            Error::NoHypervisor { .. }
            | Error::MissingCapability { .. }
            | Error::Kvm { .. }
            | Error::OutOfMemory { .. } => 4,
            Error::InvalidConfig { .. }
            | Error::NoSuchFunction { .. }
            | Error::SignatureMismatch { .. }
            | Error::ArgumentsTooLarge { .. } => 2,
            _ => 1,
        };
        // One line: the error and its sources.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Failure { status, message: message.replace('\n', " ") }
    }
}

struct Options {
    timeout: Option<Duration>,
    memory_mib: Option<u64>,
    json: bool,
    positional: Vec<String>,
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let mut o = Options { timeout: None, memory_mib: None, json: false, positional: Vec::new() };
    let mut args = args.peekable();
    let mut only_positional = false;
    while let Some(a) = args.next() {
        if only_positional {
            o.positional.push(a);
            continue;
        }
        match a.as_str() {
            "--" => only_positional = true,
            "--json" => o.json = true,
            "--timeout-ms" | "--memory-mib" => {
                let v = args.next().ok_or_else(|| usage(format!("{a} needs a value")))?;
                let n: u64 = v.parse().map_err(|_| usage(format!("{a} takes a positive integer, not `{v}`")))?;
                if n == 0 {
                    return Err(usage(format!("{a} must be positive")));
                }
                if a == "--timeout-ms" {
                    o.timeout = Some(Duration::from_millis(n));
                } else {
                    o.memory_mib = Some(n);
                }
            }
            s if s.starts_with("--") => return Err(usage(format!("unknown option `{s}`"))),
            _ => o.positional.push(a),
        }
    }
    Ok(o)
}

fn builder(o: &Options) -> SandboxBuilder {
    let mut b = SandboxBuilder::new().on_log(|r| eprintln!("guest: {}", r.message));
    if let Some(t) = o.timeout {
        b = b.call_timeout(Some(t));
    }
    if let Some(m) = o.memory_mib {
        b = b.memory_mib(m);
    }
    b
}

fn parse_arg(ty: ValueType, s: &str, index: usize) -> Result<Value, Failure> {
    let bad = || usage(format!("argument {} `{s}` is not a valid {ty}", index + 1));
    Ok(match ty {
        ValueType::Unit => Value::Unit,
        ValueType::I32 => Value::I32(s.parse().map_err(|_| bad())?),
        ValueType::U32 => Value::U32(s.parse().map_err(|_| bad())?),
        ValueType::I64 => Value::I64(s.parse().map_err(|_| bad())?),
        ValueType::U64 => Value::U64(s.parse().map_err(|_| bad())?),
        ValueType::F32 => Value::F32(s.parse().map_err(|_| bad())?),
        ValueType::F64 => Value::F64(s.parse().map_err(|_| bad())?),
        ValueType::Bool => Value::Bool(s.parse().map_err(|_| bad())?),
        ValueType::String => Value::String(s.to_owned()),
        ValueType::Bytes => {
            let hex = s.strip_prefix("0x").unwrap_or(s);
            if hex.len() % 2 != 0 {
                return Err(bad());
            }
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            Value::Bytes(bytes.ok_or_else(bad)?)
        }
    })
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Unit => "null".into(),
        Value::F32(f) if !f.is_finite() => json_string(&f.to_string()),
        Value::F64(f) if !f.is_finite() => json_string(&f.to_string()),
        Value::String(s) => json_string(s),
        Value::Bytes(_) => json_string(&v.to_string()),
        other => other.to_string(),
    }
}

fn run(o: Options) -> Result<(), Failure> {
    let [guest, function, args @ ..] = o.positional.as_slice() else {
        return Err(usage("run needs a guest and a function name"));
    };
    let image = GuestImage::from_file(guest)?;
    let mut sandbox = builder(&o).build(&image)?.init()?;
    let sig: Signature = sandbox
        .signature(function)
        .cloned()
        .ok_or_else(|| Failure::from(Error::NoSuchFunction { name: function.clone() }))?;
    if args.len() != sig.params.len() {
        return Err(usage(format!("`{function}` takes {} argument(s) {sig}, got {}", sig.params.len(), args.len())));
    }
    let values = sig
        .params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(i, (t, a))| parse_arg(*t, a, i))
        .collect::<Result<Vec<_>, _>>()?;
    let result = sandbox.call(function, &values)?;
    if o.json {
        println!(
            "{{\"function\":{},\"type\":{},\"result\":{}}}",
            json_string(function),
            json_string(sig.result.name()),
            json_value(&result)
        );
    } else if result != Value::Unit {
        println!("{result}");
    }
    Ok(())
}

fn inspect(o: Options) -> Result<(), Failure> {
    let [guest] = o.positional.as_slice() else {
        return Err(usage("inspect needs exactly one guest"));
    };
    let image = GuestImage::from_file(guest)?;
    let sandbox = builder(&o).build(&image)?.init()?;
    if o.json {
        let fns: Vec<String> = sandbox
            .exports()
            .iter()
            .map(|e| {
                format!("{{\"name\":{},\"signature\":{}}}", json_string(&e.name), json_string(&e.signature.to_string()))
            })
            .collect();
        println!(
            "{{\"abi_version\":{},\"entry\":{},\"position_independent\":{},\"functions\":[{}]}}",
            image.abi_version(),
            image.entry(),
            image.is_position_independent(),
            fns.join(",")
        );
        return Ok(());
    }
    println!("guest:     {guest}");
    println!("abi:       version {}", image.abi_version());
    println!(
        "entry:     {:#x} ({})",
        image.entry(),
        if image.is_position_independent() { "position-independent, relocated" } else { "static" }
    );
    println!("functions:");
    for e in sandbox.exports() {
        println!("  {}{}", e.name, e.signature);
    }
    Ok(())
}

fn bench(o: Options) -> Result<(), Failure> {
    let [guest] = o.positional.as_slice() else {
        return Err(usage("bench needs exactly one guest"));
    };
    let image = GuestImage::from_file(guest)?;
    if !o.json {
        eprintln!("glint: measuring {guest} (about half a minute)...");
    }
    let report = glint::bench::run(&image, &glint::bench::Options::default())?;
    if o.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let result = match command.as_deref() {
        Some("run") => parse_options(args).and_then(run),
        Some("inspect") => parse_options(args).and_then(inspect),
        Some("bench") => parse_options(args).and_then(bench),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("-V" | "--version") => {
            println!("glint {} (ABI {})", env!("CARGO_PKG_VERSION"), glint::ABI_VERSION);
            Ok(())
        }
        Some(other) => Err(usage(format!("unknown command `{other}`\n{USAGE}"))),
        None => Err(usage(USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("glint: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}
