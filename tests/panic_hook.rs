//! Caught task panics are error values: by default they do not go through
//! the process's panic hook (which would print them, with a backtrace
//! under `RUST_BACKTRACE=1`); panics elsewhere still do, and a runtime can
//! ask to keep the hook. (Its own test binary: the hook is process-wide.)

use manta::Runtime;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn task_panics_skip_the_panic_hook_unless_asked() {
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = hooked.clone();
    std::panic::set_hook(Box::new(move |_| {
        h.fetch_add(1, Ordering::SeqCst);
    }));
    let quiet = Runtime::builder().num_cpus(1).build().unwrap();
    assert!(quiet.spawn(|| -> u32 { panic!("quiet") }).get().unwrap_err().is_panic());
    let actor = quiet.actor(0u32);
    assert!(actor.call(|_| -> u32 { panic!("quiet too") }).get().is_err());
    assert_eq!(hooked.load(Ordering::SeqCst), 0, "a caught task panic went through the hook");

    // A panic outside tasks still reaches the hook.
    let _ = std::thread::spawn(|| panic!("outside")).join();
    assert_eq!(hooked.load(Ordering::SeqCst), 1);

    // A runtime that keeps the hook.
    let loud = Runtime::builder().num_cpus(1).print_task_panics(true).build().unwrap();
    assert!(loud.spawn(|| -> u32 { panic!("loud") }).get().is_err());
    assert_eq!(hooked.load(Ordering::SeqCst), 2);
}
