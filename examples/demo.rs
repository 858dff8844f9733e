//! The seed's tour of Ray 0.7, in manta, followed by what manta adds.
//!
//! Walks through the seed text's programs in order and prints what each one
//! prints there:
//!
//! 1. `ray.put` / `ray.get` of `h()` (14) and of `"example"`;
//! 2. tasks `A`, `B` and `C(a, b)` built into a graph from refs (30);
//! 3. the `Counter` actor (1, 2, then `[3, 4, 5, 6]`);
//! 4. `ray.wait` with `num_returns=3` and a short then a long timeout, on a
//!    4-CPU runtime (`[]` / `[10, 10, 10, 10]`, then `[10, 10, 10]` / `[10]`);
//! 5. six tasks, `num_returns=5`, four CPUs (4 ready, 2 pending);
//! 6. `add(a, b)` with plain values (3).
//!
//! The seed's times are scaled down 10x, as in `tests/seed.rs`: `f` sleeps
//! 300 ms instead of 3 s, and the timeouts are 250 ms and 550 ms.
//!
//! Each step prints the seed's Ray code, the manta code, and what it gives.
//!
//! Then what manta adds: an error flowing through a task graph (a panicking
//! task, and a dependant that fails with `DependencyFailed` naming both), a
//! recursive `fib` whose tasks call `get` on their children on a 1-CPU
//! runtime (no deadlock), `cancel`, and a group of 1,000 tasks cancelled
//! with one call.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! It finishes in about two seconds.

use manta::{Error, ObjectRef, Runtime};
use std::time::{Duration, Instant};

type Res = Result<(), Box<dyn std::error::Error>>;

fn main() -> Res {
    let start = Instant::now();
    put_and_get()?;
    task_graph()?;
    counter_actor()?;
    wait_with_timeouts()?;
    wait_limited_by_cpus()?;
    add()?;
    errors_flow_through_the_graph()?;
    nested_get_fib()?;
    cancel()?;
    println!("\ndone in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn header(title: &str) {
    println!("\n== {title} ==");
}

/// One labelled step: the seed's Ray code, the manta code, what it gives.
fn show(ray: &str, manta: &str, result: impl std::fmt::Display) {
    println!("  Ray:    {ray}");
    println!("  manta:  {manta}");
    println!("    ->    {result}");
}

fn runtime(cpus: usize) -> Result<Runtime, manta::BuildError> {
    Runtime::builder().num_cpus(cpus).build()
}

/// Copies the values out of a list of refs (the seed's `print(ray.get(ids))`).
fn values(rt: &Runtime, refs: &[ObjectRef<i32>]) -> Result<Vec<i32>, Error> {
    Ok(rt.get_all(refs)?.iter().map(|v| **v).collect())
}

/// `h_id = ray.put(h()); print(ray.get(h_id))` and the same with "example".
fn put_and_get() -> Res {
    header("1. put / get: objects in the store (seed: ray.put, ray.get)");
    let rt = runtime(2)?;
    let h = || 4 + 10;
    let h_id = rt.put(h())?;
    show("h_id = ray.put(h()); print(ray.get(h_id))", "let h_id = rt.put(h())?; rt.get(&h_id)?", rt.get(&h_id)?);

    let x_id = rt.put("example".to_string())?;
    let x1 = rt.get(&x_id)?;
    show("x_id = ray.put(\"example\"); print(ray.get(x_id))", "rt.get(&rt.put(\"example\".to_string())?)?", x1);
    Ok(())
}

/// `c_id = C.remote(A.remote(), B.remote())`: refs as task arguments.
fn task_graph() -> Res {
    header("2. a task graph: refs as task arguments (seed: A.remote(), C.remote(a_id, b_id))");
    let rt = runtime(2)?;
    let a_id = rt.spawn(|| 10);
    let b_id = rt.spawn(|| 20);
    let c_id = rt.spawn_with((a_id, b_id), |(a, b)| *a + *b);
    show(
        "c_id = C.remote(A.remote(), B.remote()); ray.get(c_id)",
        "let c_id = rt.spawn_with((rt.spawn(|| 10), rt.spawn(|| 20)), |(a, b)| *a + *b)",
        rt.get(&c_id)?,
    );
    Ok(())
}

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

/// The `Counter` actor: calls on one actor run one at a time, in order.
fn counter_actor() -> Res {
    header("3. the Counter actor: calls run one at a time, in order (seed: @ray.remote class Counter)");
    let rt = runtime(2)?;
    let a1 = rt.actor(Counter::default());
    show(
        "a1 = Counter.remote(); ray.get(a1.increment.remote())",
        "let a1 = rt.actor(Counter::default()); a1.call(Counter::increment).get()?",
        a1.call(Counter::increment).get()?,
    );
    show("ray.get(a1.increment.remote())", "a1.call(Counter::increment).get()?", a1.call(Counter::increment).get()?);

    let a: Vec<_> = (0..4).map(|_| a1.call(Counter::increment)).collect();
    show(
        "ray.get([a1.increment.remote() for _ in range(4)])",
        "rt.get_all(&(0..4).map(|_| a1.call(Counter::increment)).collect::<Vec<_>>())?",
        format!("{:?}", values(&rt, &a)?),
    );
    Ok(())
}

/// The seed's `f`: sleeps (3 s there, 300 ms here) and returns 10.
fn f() -> i32 {
    std::thread::sleep(Duration::from_millis(300));
    10
}

/// `ray.wait(results, num_returns=3, timeout=...)`, first too short, then
/// long enough.
fn wait_with_timeouts() -> Res {
    header("4. wait with num_returns and a timeout: 4 tasks of 300 ms (the seed's 3 s / 10), 4 CPUs");
    let rt = runtime(4)?;
    let results: Vec<_> = (0..4).map(|_| rt.spawn(f)).collect();
    let (ready_ids, remaining_ids) = rt.wait(&results, 3, Some(Duration::from_millis(250)))?;
    show(
        "ready_ids, remaining_ids = ray.wait(results, num_returns=3, timeout=2.5)",
        "let (ready, pending) = rt.wait(&results, 3, Some(Duration::from_millis(250)))?",
        format!("ready {:?}, pending {} (the timeout came first)", values(&rt, &ready_ids)?, remaining_ids.len()),
    );
    let results2: Vec<_> = (0..4).map(|_| rt.spawn(f)).collect();
    let (ready2_ids, remaining2_ids) = rt.wait(&results2, 3, Some(Duration::from_millis(550)))?;
    show(
        "ray.wait(results, num_returns=3, timeout=5.5)",
        "rt.wait(&results, 3, Some(Duration::from_millis(550)))?",
        format!(
            "ready {:?}, pending {:?} (at most num_returns are ready)",
            values(&rt, &ready2_ids)?,
            values(&rt, &remaining2_ids)?
        ),
    );
    Ok(())
}

/// Six tasks, four CPUs: only four run at a time, so after 550 ms only four
/// are ready although five were asked for.
fn wait_limited_by_cpus() -> Res {
    header("5. resources limit wait: 6 one-CPU tasks on 4 CPUs, num_returns=5, timeout 550 ms");
    let rt = runtime(4)?;
    let results2: Vec<_> = (0..6).map(|_| rt.spawn(f)).collect();
    let (ready2_ids, remaining2_ids) = rt.wait(&results2, 5, Some(Duration::from_millis(550)))?;
    show(
        "ray.wait([f.remote() for _ in range(6)], num_returns=5, timeout=5.5)",
        "rt.wait(&(0..6).map(|_| rt.spawn(f)).collect::<Vec<_>>(), 5, Some(Duration::from_millis(550)))?",
        format!(
            "ready {:?}, pending {:?} (4 CPUs: only 4 could run in time)",
            values(&rt, &ready2_ids)?,
            values(&rt, &remaining2_ids)?
        ),
    );
    Ok(())
}

/// `idc = add.remote(a, b); c = ray.get(idc)` with plain values.
fn add() -> Res {
    header("6. a task with plain values as arguments (seed: add.remote(a, b))");
    let rt = runtime(2)?;
    let (a, b) = (1, 2);
    let idc = rt.spawn_with((a, b), |(a, b)| a + b);
    let c = rt.get(&idc)?;
    show("idc = add.remote(1, 2); c = ray.get(idc)", "rt.get(&rt.spawn_with((1, 2), |(a, b)| a + b))?", c);
    Ok(())
}

/// A panic is stored as its task's result; dependants do not run and fail
/// with `DependencyFailed`, keeping the chain of names and the root cause.
fn errors_flow_through_the_graph() -> Res {
    header("manta adds: errors are values that flow through the graph");
    let rt = runtime(2)?;
    // The panic is caught and becomes the task's result (it is not printed
    // through the panic hook: it is a value).
    let load = rt.task().name("load").spawn(|| -> i32 { panic!("disk on fire") });
    let parse = rt.task().name("parse").spawn_with((load.clone(),), |(x,)| *x * 2);
    let e = parse.get().err().ok_or("parse should have failed")?;
    println!("  manta:  parse.get()   (parse reads load, which panicked)");
    println!("    ->    {e}");
    println!("  manta:  e.task_chain() -> {:?}; e.root_cause() -> {}", e.task_chain(), e.root_cause());

    // A task that asks for a resource the runtime does not have fails at
    // once (Ray would leave it pending forever).
    let gpu = rt.task().name("train").resource("GPU", 1.0).spawn(|| 0);
    let e = gpu.get().err().ok_or("train should have failed")?;
    println!("  manta:  rt.task().name(\"train\").resource(\"GPU\", 1.0).spawn(..).get()");
    println!("    ->    {e}");
    Ok(())
}

/// `fib(n)` as a task that spawns `fib(n-1)` and `fib(n-2)` and blocks in
/// `get` on both. On a single worker thread the blocked task gives its CPU
/// back and runs the queued children itself.
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let rt = Runtime::current().expect("fib runs inside a task");
    let a = rt.spawn(move || fib(n - 1));
    let b = rt.spawn(move || fib(n - 2));
    let (a, b) = (a.get().expect("fib(n-1)"), b.get().expect("fib(n-2)"));
    *a + *b
}

fn nested_get_fib() -> Res {
    header("manta adds: nested get inside tasks never deadlocks (recursive fib on 1 CPU)");
    let rt = runtime(1)?;
    let n = 15;
    let t = Instant::now();
    let r = rt.spawn(move || fib(n));
    let v = r.get()?;
    let count = fib_calls(n);
    println!("  manta:  rt.spawn(|| fib(15))  (each fib task spawns two and gets them)");
    println!("    ->    {v}  ({count} tasks in {:.1} ms on 1 thread)", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

/// Number of calls (tasks) a naive `fib(n)` makes.
fn fib_calls(n: u64) -> u64 {
    let (mut a, mut b) = (1u64, 1u64); // calls(0), calls(1)
    for _ in 1..n {
        (a, b) = (b, a + b + 1);
    }
    if n == 0 {
        a
    } else {
        b
    }
}

/// Cancelling a queued task drops it; a running one sees `is_cancelled()`.
fn cancel() -> Res {
    header("manta adds: cancel (a queued task never runs; a running one sees is_cancelled())");
    let rt = runtime(1)?;
    // A long task that polls the flag, holding the only CPU...
    let long = rt.task().name("long").spawn(|| {
        let t = Instant::now();
        while !manta::is_cancelled() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        t.elapsed()
    });
    // ...so this one waits in the queue.
    let queued = rt.task().name("queued").spawn(|| "ran");
    std::thread::sleep(Duration::from_millis(20));
    println!("  manta:  rt.queued_tasks()  -> {}", rt.queued_tasks());
    println!("  manta:  queued.cancel()    -> {}", queued.cancel());
    println!("  manta:  queued.get()       -> {}", queued.get().err().map_or("a value".into(), |e| e.to_string()));
    println!("  manta:  long.cancel()      -> {}", long.cancel());
    println!("  manta:  long.get()         -> {}", long.get().err().map_or("a value".into(), |e| e.to_string()));
    println!("  manta:  long.cancel() again -> {} (already done)", long.cancel());

    // A whole job: 1,000 tasks in a group, cancelled with one call.
    let g = rt.group();
    let refs: Vec<_> = (0..1_000).map(|i| g.spawn(move || i)).collect();
    let t = Instant::now();
    g.cancel();
    let took = t.elapsed();
    g.join(None); // every result known (the queued ones are taken out off this thread)
    let p = g.progress();
    println!("  manta:  let g = rt.group(); 1,000 x g.spawn(..); g.cancel()");
    println!(
        "    ->    cancel took {:.1} us; done {}, cancelled {} of {} (none started after cancel returned)",
        took.as_secs_f64() * 1e6,
        p.done,
        p.cancelled,
        refs.len()
    );
    Ok(())
}
