//! `glint run <GUEST> <FUNCTION> [ARG...]`

use super::SandboxOptions;
use crate::failure::Failure;
use crate::values;
use glint::{Error, GuestImage, Template};
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
    pub guest: Option<String>,
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
    /// Print `{"function", "type", "result"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to call, once the guest or snapshot is known.
struct Resolved {
    function: String,
    args: Vec<String>,
    json: bool,
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
        (Some(file), Some(function), rest) => {
            if a.sandbox.memory_mib.is_some() {
                return Err(Failure::usage("--memory-mib cannot be used with --snapshot: the file fixes the memory"));
            }
            let template = Template::load_with_embedded_image(file, &a.sandbox.builder())?;
            let args: Vec<String> = rest.into_iter().chain(a.args).collect();
            (template.instantiate()?, function, args)
        }
        (Some(_), None, _) => return Err(Failure::usage("missing <FUNCTION> (see `glint run --help`)")),
        (None, Some(guest), Some(function)) => {
            let image = GuestImage::from_file(&guest)?;
            (a.sandbox.builder().build(&image)?.init()?, function, a.args)
        }
        (None, _, _) => return Err(Failure::usage("missing <GUEST> or <FUNCTION> (see `glint run --help`)")),
    };
    let a = Resolved { function, args, json: a.json };
    super::note_unprovided_imports(&sandbox);
    let sig = sandbox
        .signature(&a.function)
        .cloned()
        .ok_or_else(|| Failure::from(Error::NoSuchFunction { name: a.function.clone() }))?;
    if a.args.len() != sig.params.len() {
        return Err(Failure::usage(format!(
            "`{}` takes {} argument(s) {sig}, got {}",
            a.function,
            sig.params.len(),
            a.args.len()
        )));
    }
    let args = sig
        .params
        .iter()
        .zip(&a.args)
        .enumerate()
        .map(|(i, (ty, s))| values::parse(*ty, s, i))
        .collect::<Result<Vec<_>, _>>()?;
    let result = sandbox.call(&a.function, &args)?;
    if a.json {
        let out = Output { function: &a.function, ty: sig.result.name(), result: values::to_json(&result) };
        println!("{}", serde_json::to_string(&out).unwrap_or_default());
    } else if result != glint::Value::Unit {
        println!("{result}");
    }
    Ok(())
}
