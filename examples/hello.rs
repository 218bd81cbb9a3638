//! Loads the `hello` guest, registers a host function, calls each export and prints the results.
//!
//! Run with `cargo run --example hello` (builds the guest first).
#![allow(clippy::print_stdout, reason = "an example prints")]

use glint::{Error, GuestImage, SandboxBuilder, Value};

fn main() -> Result<(), Error> {
    let image = GuestImage::from_file(glint_guest_artifacts::HELLO)?;
    let mut sandbox = SandboxBuilder::new()
        .host_fn("greeting", |name: String| -> Result<String, std::io::Error> {
            Ok(if name.is_empty() { "Hello".into() } else { "Hello from the host".into() })
        })
        .on_log(|record| println!("  guest log: {}", record.message))
        .build(&image)?
        .init()?;

    println!("exports:");
    for e in sandbox.exports() {
        println!("  {}{}", e.name, e.signature);
    }

    let add = sandbox.typed_fn::<(i32, i32), i32>("add")?;
    println!("add(2, 3) = {}", add.call(&mut sandbox, (2, 3))?);

    let greet = sandbox.typed_fn::<(String,), String>("greet")?;
    println!("greet(\"Ada\") = {:?}", greet.call(&mut sandbox, ("Ada".into(),))?);

    let echo = sandbox.typed_fn::<(Vec<u8>,), Vec<u8>>("echo")?;
    println!("echo([1, 2, 3]) = {:?}", echo.call(&mut sandbox, (vec![1, 2, 3],))?);

    let hypot = sandbox.typed_fn::<(f64, f64), f64>("hypot")?;
    println!("hypot(3, 4) = {}", hypot.call(&mut sandbox, (3.0, 4.0))?);

    let count = sandbox.typed_fn::<(), u64>("count")?;
    for _ in 0..3 {
        println!("count() = {}", count.call(&mut sandbox, ())?);
    }

    // Dynamic callers use `call` with `Value`s.
    let sum = sandbox.call("add", &[Value::I32(40), Value::I32(2)])?;
    println!("call(\"add\", [40, 2]) = {sum}");

    // A guest panic is an error, not a crash; the sandbox is poisoned afterwards.
    match sandbox.call("fail", &[Value::String("on purpose".into())]) {
        Err(e) => println!("fail(\"on purpose\") -> error: {e}"),
        Ok(v) => println!("fail unexpectedly returned {v}"),
    }
    match add.call(&mut sandbox, (1, 1)) {
        Err(e) => println!("after the panic: {e}"),
        Ok(v) => println!("after the panic add returned {v}"),
    }
    Ok(())
}
