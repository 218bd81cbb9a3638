//! `glint run <GUEST> <FUNCTION> [ARG...]`, `glint run --snapshot FILE <FUNCTION> [ARG...]`

use super::SandboxOptions;
use crate::failure::Failure;
use crate::trust::TrustArgs;
use crate::values;
use glint::{Error, Template};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments are parsed by the function's declared parameter types: integers and floats in
/// decimal, bool as true/false, String as given, `Vec<u8>` as hex (e.g. 0a0bff). `--` ends options.
/// With `--snapshot FILE` no GUEST is given: `glint run --snapshot FILE <FUNCTION> [ARG...]`
/// starts from the file (written by `glint snapshot`) without running the guest's init.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// The guest image (a static x86-64 ELF built with glint-guest); absent with --snapshot.
    #[arg(value_name = "GUEST")]
    pub guest: Option<PathBuf>,
    /// The exported function to call.
    #[arg(value_name = "FUNCTION")]
    pub function: Option<String>,
    /// Its arguments, one per parameter.
    pub args: Vec<String>,
    /// Start from this snapshot file instead of a guest image (its memory sizes are the file's).
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxOptions,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print `{"function", "type", "result"}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Stop the guest before its first instruction and wait for gdb on ADDR, a loopback address
    /// (port 0 picks a free one; the address is printed on stderr). Calls have no deadline then,
    /// unless --timeout-ms sets one.
    #[arg(long, value_name = "ADDR")]
    pub gdb: Option<SocketAddr>,
}

#[derive(serde::Serialize)]
struct Output<'a> {
    function: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    result: serde_json::Value,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let (mut sandbox, function, args) = match (&a.snapshot, a.guest, a.function) {
        (Some(file), Some(first), rest) => {
            // With --snapshot the first positional is the function.
            let function = first.to_string_lossy().into_owned();
            if a.sandbox.memory_mib.is_some() {
                return Err(Failure::usage("--memory-mib cannot be used with --snapshot: the file fixes the memory"));
            }
            if !a.trust.is_empty() {
                return Err(Failure::usage(
                    "--snapshot cannot be combined with trust options: a snapshot file is not a signed image",
                ));
            }
            if a.gdb.is_some() {
                return Err(Failure::usage("--gdb cannot be used with --snapshot: the guest has already started"));
            }
            let template = Template::load_with_embedded_image(file, &a.sandbox.builder()?)?;
            let args: Vec<String> = rest.into_iter().chain(a.args).collect();
            (template.instantiate()?, function, args)
        }
        (Some(_), None, _) => return Err(Failure::usage("missing <FUNCTION> (see `glint run --help`)")),
        (None, Some(guest), Some(function)) => {
            let image = a.trust.load(&guest)?;
            let mut builder = a.sandbox.builder()?;
            let uninit = match a.gdb {
                None => builder.build(&image)?,
                Some(addr) => {
                    let server = glint::GdbServer::bind(addr)?;
                    if a.sandbox.timeout_ms.is_none() {
                        builder = builder.call_timeout(None);
                    }
                    let mut uninit = builder.build(&image)?;
                    eprintln!("note: waiting for gdb on {} (gdb -ex 'target remote {0}' GUEST)", server.local_addr()?);
                    uninit.attach_gdb(server)?;
                    uninit
                }
            };
            (uninit.init()?, function, a.args)
        }
        (None, _, _) => return Err(Failure::usage("missing <GUEST> or <FUNCTION> (see `glint run --help`)")),
    };
    super::note_unprovided_imports(&sandbox);
    let sig = sandbox
        .signature(&function)
        .cloned()
        .ok_or_else(|| Failure::from(Error::NoSuchFunction { name: function.clone() }))?;
    if args.len() != sig.params.len() {
        return Err(Failure::usage(format!(
            "`{}` takes {} argument(s) {sig}, got {}",
            function,
            sig.params.len(),
            args.len()
        )));
    }
    let values = sig
        .params
        .iter()
        .zip(&args)
        .enumerate()
        .map(|(i, (ty, s))| values::parse(*ty, s, i))
        .collect::<Result<Vec<_>, _>>()?;
    let result = sandbox.call(&function, &values)?;
    if a.json {
        let out = Output { function: &function, ty: sig.result.name(), result: values::to_json(&result) };
        println!("{}", serde_json::to_string(&out).unwrap_or_default());
    } else if result != glint::Value::Unit {
        println!("{result}");
    }
    Ok(())
}
