//! The README's tour, run exactly as written: every ```rust block of
//! README.md's "Tour" section, in order, inside one function (the second
//! test checks that this file still holds each block verbatim, so the
//! README cannot drift from code that compiles and passes).

#![allow(clippy::unit_arg, clippy::let_unit_value)]

use manta::{Error, Priority, Runtime};
use std::time::Duration;

#[test]
#[rustfmt::skip] // the README's blocks verbatim, aligned comments and all
fn the_tour_runs() -> Result<(), Box<dyn std::error::Error>> {

    let rt = Runtime::builder().num_cpus(4).build()?;   // or manta::init() for a process-wide default
    let x = rt.put(vec![0u8; 1 << 20])?;                // ray.put
    let v = x.get()?;                                   // ray.get: an Arc<Vec<u8>>, no copy
    assert_eq!(v.len(), 1 << 20);

    let a = rt.spawn(|| 10);                                    // A.remote()
    let b = rt.spawn(|| 20);                                    // B.remote()
    let c = rt.spawn_with((a, b), |(a, b)| *a + *b);            // C.remote(a_id, b_id)
    let d = rt.spawn_with((c, 12), |(c, k)| *c + k);            // a ref and a plain value
    let e = rt.task().name("double").cpus(0.5).priority(Priority::High).spawn_with((d,), |(d,)| *d * 2);
    let (q, r) = rt.task().spawn_multi((17, 5), |(n, m)| (n / m, n % m));  // two refs
    assert_eq!((*e.get()?, *q.get()?, *r.get()?), (84, 3, 2));
    let all = rt.get_all(&[rt.spawn(|| 1), rt.spawn(|| 2)])?;  // values in input order
    assert_eq!(*all[1], 2);

    let flaky = rt.task().rerunnable().retries(3).spawn(|| 7);
    assert_eq!(*flaky.get()?, 7);
    let parsed = rt.task().name("parse").spawn_try(|| "42".parse::<u32>());
    assert_eq!(*parsed.get()?, 42);
    let bad = rt.task().spawn_try(|| "x".parse::<u32>());
    assert!(bad.get().unwrap_err().downcast_ref::<std::num::ParseIntError>().is_some());

    let job = rt.group_builder().name("thumbnails").cancel_on_drop().build();
    let parts: Vec<_> = (0..100u64).map(|i| job.spawn(move || {
        for _ in 0..1_000 {
            if manta::is_cancelled() { return 0; }             // long work polls the flag
            std::hint::black_box(i);
        }
        i
    })).collect();
    for done in manta::as_completed(parts.clone()).take(10) {  // the first ten to finish
        let _ = done.get();
    }
    job.cancel();                                              // no queued task starts after this
    assert!(job.wait_stopped(Some(Duration::from_secs(10))));  // the running ones returned
    let p = job.progress();
    assert_eq!(p.total, 100);
    let squares: Vec<u64> = rt.map(1..=4u64, 2, |x| x * x).map(|r| *r.unwrap()).collect();
    assert_eq!(squares, [1, 4, 9, 16]);

    let gpu_rt = Runtime::builder().num_cpus(2).resource("GPU", 1.0).build()?;
    let half = gpu_rt.task().resource("GPU", 0.5).spawn(|| "on half a GPU");
    assert_eq!(*half.get()?, "on half a GPU");
    let greedy = gpu_rt.task().resource("GPU", 2.0).spawn(|| ());
    assert!(matches!(greedy.get(), Err(Error::Infeasible { .. })));

    fn fib(n: u64) -> u64 {
        if n < 2 {
            return n;
        }
        let rt = Runtime::current().expect("inside a task");
        let (a, b) = (rt.spawn(move || fib(n - 1)), rt.spawn(move || fib(n - 2)));
        *a.get().unwrap() + *b.get().unwrap()
    }
    let one = Runtime::builder().num_cpus(1).build()?;
    assert_eq!(*one.spawn(|| fib(15)).get()?, 610);

    let load = rt.task().name("load").spawn(|| -> i32 { panic!("disk on fire") });
    let parse = rt.task().name("parse").spawn_with((load,), |(x,)| *x * 2);
    let err = parse.get().unwrap_err();
    println!("{err}");  // task `parse` did not run because an input failed: task `load` panicked: disk on fire
    assert!(err.is_panic());
    assert!(matches!(err.root_cause(), Error::TaskPanicked { .. }));

    #[derive(Default)]
    struct Counter {
        value: i32,
    }
    impl Counter {
        fn increment(&mut self) -> i32 {
            self.value += 1;
            self.value
        }
    }
    let counter = rt.actor_builder().name("counter").max_restarts(1).spawn_factory(Counter::default);
    assert_eq!(*counter.call(Counter::increment).get()?, 1);
    let boom = counter.call(|_: &mut Counter| -> i32 { panic!("oops") });
    assert!(boom.get().is_err());                                 // this call fails...
    assert_eq!(*counter.call(Counter::increment).get()?, 1);      // ...later ones see a fresh Counter
    let step = rt.put(10)?;
    assert_eq!(*counter.call_with((step,), |c, (s,)| c.value + *s).get()?, 11);

    let worker = rt.actor_builder().max_restarts(3).max_task_retries(1).spawn_factory(|| 0u32);
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = tries.clone();
    let flaky = worker.call_rerunnable(move |n| {
        if t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("transient"); // the actor restarts and the call runs again
        }
        *n + 1
    });
    assert_eq!(*flaky.get()?, 1); // second run, on a fresh state
    worker.kill(true);
    let dead = worker.call(|n| *n).get().unwrap_err();
    assert_eq!(dead.dead_actor().map(|a| a.cause()), Some(&manta::ActorDeathCause::Killed));

    let refs: Vec<_> = (0..4u64).map(|i| rt.spawn(move || { std::thread::sleep(Duration::from_millis(20 * i)); i })).collect();
    let (ready, pending) = rt.wait(&refs, 2, Some(Duration::from_secs(5)))?;
    assert_eq!((ready.len(), pending.len()), (2, 2));

    let long = rt.spawn(|| {
        while !manta::is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert!(long.cancel());
    assert!(long.get().unwrap_err().is_cancelled());

    let dir = std::env::temp_dir().join("manta-readme");
    let small = Runtime::builder().store_capacity(3 << 20).spill_dir(&dir).build()?;
    let refs: Vec<_> = (0..8u8).map(|i| small.put(vec![i; 1 << 20])).collect::<Result<_, _>>()?;
    assert_eq!(refs[0].get()?[0], 0);                 // read back from its spill file
    let stats = small.store_stats();
    assert!(stats.spills > 0 && stats.bytes_in_memory <= 3 << 20);

    let counts = refs[1].ref_counts();
    assert_eq!((counts.handles, counts.task_uses), (1, 0));
    small.free(&refs[..2]);
    assert!(!small.contains(&refs[0]));
    assert!(matches!(refs[0].get(), Err(Error::ObjectFreed { .. })));

    let answer = rt.spawn(|| 6 * 7);
    let v = futures_executor::block_on(async { (&answer).await })?;  // any executor
    assert_eq!(*v, 42);
    answer.on_ready(|result| println!("ready: {}", result.map_or(0, |v| *v)));

    rt.record_timeline(true);
    let traced = rt.task().name("traced").spawn(|| 1);
    traced.get()?;
    rt.record_timeline(false);
    let trace = rt.timeline().to_chrome_json("my app");
    assert!(trace.contains("\"traced\""));
    assert!(rt.metrics().to_prometheus().contains("manta_tasks_done_total"));

    Ok(())
}

#[test]
fn this_file_holds_every_tour_block_of_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let this = std::fs::read_to_string(file!()).expect("this file");
    let start = readme.find("## Tour").expect("a Tour section");
    let end = readme[start..].find("\n## ").map_or(readme.len(), |i| start + 1 + i);
    let mut blocks = 0;
    for block in readme[start..end].split("```rust\n").skip(1) {
        let code = block.split("```").next().unwrap_or("");
        for line in code.lines().filter(|l| !l.trim().is_empty()) {
            assert!(this.contains(line.trim()), "README line not in tests/readme.rs: {line}");
        }
        blocks += 1;
    }
    assert!(blocks >= 10, "found {blocks} blocks");
}
