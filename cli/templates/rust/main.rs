//! A glint guest: `hello` is exported to the host; `greeting` is a host function it imports.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

glint_guest::imports! {
    /// Provided by the embedder (`SandboxBuilder::host_fn("greeting", ...)`); the host checks at
    /// initialisation that it exists with this signature.
    fn greeting(name: &str) -> String;
}

/// Greets `name`, with the host's greeting when the host provides one.
fn hello(name: String) -> String {
    glint_guest::println!("hello({name})"); // goes to the host's log
    match greeting(&name) {
        Ok(greeting) => format!("{greeting}, {name}!"),
        // `glint run` provides no host functions: the import is a stub that fails.
        Err(e) => format!("Hello, {name}! (the host says: {})", e.message),
    }
}

glint_guest::exports!(hello);
