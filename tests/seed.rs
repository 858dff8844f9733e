//! The seed text's programs (an introduction to Ray 0.7), in manta, with the
//! seed's outputs.

use manta::Runtime;
use std::time::Duration;

fn rt(cpus: usize) -> Runtime {
    Runtime::builder().num_cpus(cpus).build().expect("runtime")
}

/// `h_id = ray.put(h()); ray.get(h_id)` → 14
#[test]
fn put_get_value_of_a_function() {
    let rt = rt(2);
    let h = || 4 + 10;
    let h_id = rt.put(h()).unwrap();
    assert_eq!(*rt.get(&h_id).unwrap(), 14);
}

/// `x_id = ray.put("example"); ray.get(x_id)` → example
#[test]
fn put_get_string() {
    let rt = rt(2);
    let x_id = rt.put("example".to_string()).unwrap();
    assert_eq!(rt.get(&x_id).unwrap().as_str(), "example");
}

/// `A.remote()`, `B.remote()`, `C.remote(a_id, b_id)` → 30
#[test]
fn tasks_taking_refs() {
    let rt = rt(2);
    let a_id = rt.spawn(|| 10);
    let b_id = rt.spawn(|| 20);
    let c_id = rt.spawn_with((a_id, b_id), |(a, b)| *a + *b);
    assert_eq!(*c_id.get().unwrap(), 30);
}

/// The `Counter` actor → 1, 2, [3, 4, 5, 6]
#[test]
fn actor_counter() {
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
    let rt = rt(2);
    let a1 = rt.actor(Counter::default());
    assert_eq!(*a1.call(Counter::increment).get().unwrap(), 1);
    assert_eq!(*a1.call(Counter::increment).get().unwrap(), 2);
    let a: Vec<_> = (0..4).map(|_| a1.call(Counter::increment)).collect();
    let values: Vec<i32> = rt.get_all(&a).unwrap().iter().map(|v| **v).collect();
    assert_eq!(values, [3, 4, 5, 6]);
}

/// `f` sleeps and returns 10. The seed uses 3 s / 2.5 s / 5 s on a 4-CPU
/// machine; the same programme is scaled down 10x (300 ms / 250 ms / 500 ms).
fn f() -> i32 {
    std::thread::sleep(Duration::from_millis(300));
    10
}

fn values(rt: &Runtime, refs: &[manta::ObjectRef<i32>]) -> Vec<i32> {
    rt.get_all(refs).unwrap().iter().map(|v| **v).collect()
}

/// Four tasks, `wait(num_returns=3, timeout=2.5 s)` → [] then [10, 10, 10, 10];
/// four more, `wait(num_returns=3, timeout=5 s)` → [10, 10, 10] then [10].
#[test]
fn wait_with_timeouts() {
    let rt = rt(4);
    let results: Vec<_> = (0..4).map(|_| rt.spawn(f)).collect();
    let (ready, remaining) = rt.wait(&results, 3, Some(Duration::from_millis(250))).unwrap();
    assert_eq!(values(&rt, &ready), Vec::<i32>::new());
    assert_eq!(values(&rt, &remaining), [10, 10, 10, 10]);

    let results2: Vec<_> = (0..4).map(|_| rt.spawn(f)).collect();
    let (ready2, remaining2) = rt.wait(&results2, 3, Some(Duration::from_millis(550))).unwrap();
    assert_eq!(values(&rt, &ready2), [10, 10, 10]);
    assert_eq!(values(&rt, &remaining2), [10]);
}

/// Six tasks on four CPUs, `wait(num_returns=5, timeout=5 s)` → four ready,
/// two pending: only four run at a time.
#[test]
fn wait_limited_by_cpus() {
    let rt = rt(4);
    let results2: Vec<_> = (0..6).map(|_| rt.spawn(f)).collect();
    let (ready2, remaining2) = rt.wait(&results2, 5, Some(Duration::from_millis(550))).unwrap();
    assert_eq!(values(&rt, &ready2), [10, 10, 10, 10]);
    assert_eq!(values(&rt, &remaining2), [10, 10]);
}

/// The seed's `add(a, b)` with plain values.
#[test]
fn add_with_plain_values() {
    let rt = rt(2);
    let idc = rt.spawn_with((1, 2), |(a, b)| a + b);
    assert_eq!(*rt.get(&idc).unwrap(), 3);
}
