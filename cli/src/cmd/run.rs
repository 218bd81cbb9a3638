//! `glint run <GUEST> <FUNCTION> [ARG...]`

use super::SandboxOptions;
use crate::failure::Failure;
use crate::trust::TrustArgs;
use crate::values;
use glint::Error;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments are parsed by the function's declared parameter types: integers and floats in
/// decimal, bool as true/false, String as given, `Vec<u8>` as hex (e.g. 0a0bff). `--` ends options.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// The guest image (a static x86-64 ELF built with glint-guest).
    pub guest: PathBuf,
    /// The exported function to call.
    pub function: String,
    /// Its arguments, one per parameter.
    pub args: Vec<String>,
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
    let image = a.trust.load(&a.guest)?;
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
    let mut sandbox = uninit.init()?;
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
