//! Many sandboxes at once: eight sandboxes from one image on eight threads, each with its own
//! state, and a sandbox moved between threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
mod common;

use common::{test_builder, testguest};
use std::sync::{Arc, Barrier};

#[test]
fn eight_sandboxes_from_one_image_on_eight_threads_keep_their_own_state() {
    require_kvm!();
    let image = testguest();
    let builder = test_builder();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let (image, builder, barrier) = (image.clone(), builder.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut sb = builder.build(&image).unwrap().init().unwrap();
                let set = sb.typed_fn::<(u64,), ()>("set_state").unwrap();
                let get = sb.typed_fn::<(), u64>("get_state").unwrap();
                let add = sb.typed_fn::<(i32, i32), i32>("host_add").unwrap();
                barrier.wait();
                for round in 0..200u64 {
                    set.call(&mut sb, (i * 1000 + round,)).unwrap();
                    assert_eq!(add.call(&mut sb, (i as i32, round as i32)).unwrap(), (i + round) as i32);
                    assert_eq!(get.call(&mut sb, ()).unwrap(), i * 1000 + round, "sandbox {i} saw another's state");
                }
                sb
            })
        })
        .collect();
    let sandboxes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sandboxes.len(), 8);
}

#[test]
fn a_sandbox_moves_between_threads() {
    require_kvm!();
    let mut sb = test_builder().build(&testguest()).unwrap().init().unwrap();
    let set = sb.typed_fn::<(u64,), ()>("set_state").unwrap();
    let get = sb.typed_fn::<(), u64>("get_state").unwrap();
    set.call(&mut sb, (5,)).unwrap();
    let (mut sb, get) = std::thread::spawn(move || {
        assert_eq!(get.call(&mut sb, ()).unwrap(), 5);
        set.call(&mut sb, (6,)).unwrap();
        (sb, get)
    })
    .join()
    .unwrap();
    assert_eq!(get.call(&mut sb, ()).unwrap(), 6);
}
