//! The thumbnails example's job (`examples/thumbnails/job.rs`, included
//! here as a module) on small generated folders: every file accounted for,
//! failures named after their files, and `--cancel-after`'s path: after a
//! cancel no task starts, running ones stop within milliseconds, and the
//! group stops.

#[allow(dead_code)]
#[path = "../examples/thumbnails/job.rs"]
mod job;

use std::path::PathBuf;
use std::time::Duration;

/// A fresh folder of `count` generated images, removed on drop.
struct Folder(PathBuf, Vec<PathBuf>);

impl Folder {
    fn new(tag: &str, count: usize, min_bytes: usize, max_bytes: usize) -> Folder {
        let dir = std::env::temp_dir().join(format!("manta-thumbnails-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = job::generate(&dir, count, min_bytes, max_bytes).expect("generate");
        Folder(dir, files)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rt() -> manta::Runtime {
    manta::Runtime::builder().num_cpus(2).build().expect("runtime")
}

/// The files `generate` makes fail on purpose, with what their error says.
fn expected_failures(count: usize) -> Vec<(String, &'static str)> {
    (0..count)
        .filter_map(|i| {
            if job::is_truncated_on_purpose(i) {
                Some((job::file_name(i), "failed: truncated image"))
            } else if job::panics_on_purpose(i) {
                Some((job::file_name(i), "panicked: attempt to divide by zero"))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn thumbnails_every_file_is_accounted_for_and_failures_name_their_file() {
    let folder = Folder::new("all", 200, 4 << 10, 16 << 10);
    let rt = rt();
    let job = job::submit(&rt, &folder.1, &job::Options { blur_passes: 1, ..Default::default() });
    let mut seen = vec![false; folder.1.len()];
    let s = job.drive(None, |i, _, _| {
        assert!(!std::mem::replace(&mut seen[i], true), "result {i} reported twice");
    });
    assert!(seen.iter().all(|&s| s), "every result reported once");
    assert_eq!(s.total, 200);
    assert_eq!(s.accounted(), s.total, "{s:?}");
    assert_eq!(s.cancelled, 0);
    assert!(s.stopped);
    assert_eq!(s.started, 200, "every task ran once");
    assert_eq!(s.finished_at_cancel, None);

    // Failures: exactly the files made to fail, each message naming the
    // task (its file) and saying what went wrong.
    let expected = expected_failures(200);
    assert_eq!(expected.len(), 3, "37, 137 (truncated), 191 (panics)");
    assert_eq!(s.failed.len(), expected.len(), "{:?}", s.failed);
    for ((name, message), (want_name, want)) in s.failed.iter().zip(&expected) {
        assert_eq!(name, want_name);
        assert!(message.contains(&format!("task `{want_name}`")), "{message}");
        assert!(message.contains(want), "{message}");
    }
    // The group's own counts agree when nothing was cancelled.
    assert_eq!((s.progress.done, s.progress.failed, s.progress.cancelled), (s.done, 3, 0));

    // Thumbnails are deterministic and keep the aspect ratio.
    let t = job.refs[0].get().expect("img-0000");
    assert_eq!(t.name, "img-0000.mimg");
    assert_eq!(t.thumb_width.max(t.thumb_height), job::THUMB);
    assert_eq!(t.pixels.len(), t.thumb_width * t.thumb_height);
    let again = job::process(&folder.1[0], &job::Options { blur_passes: 1, ..Default::default() }).expect("again");
    assert_eq!((again.hash, &again.pixels), (t.hash, &t.pixels));
}

#[test]
fn thumbnails_cancel_after_n_starts_nothing_later_and_stops_the_group() {
    // Slow tasks (1 ms a chunk of rows) so most of them are still queued
    // when the cancel comes, and the running ones are mid-file.
    let folder = Folder::new("cancel", 300, 32 << 10, 64 << 10);
    let rt = rt();
    let opts = job::Options { blur_passes: 2, chunk_delay: Duration::from_millis(1) };
    let job = job::submit(&rt, &folder.1, &opts);
    let s = job.drive(Some(10), |_, _, _| {});

    assert_eq!(s.total, 300);
    assert_eq!(s.accounted(), s.total, "done + failed + cancelled == total: {s:?}");
    assert!(s.finished_at_cancel.is_some_and(|n| n >= 10), "{s:?}");
    assert_eq!(s.started_after_cancel, 0, "no task may start after the cancel returned");
    assert!(s.stopped, "the group stops");
    assert!(job.group.is_stopped() && job.group.is_cancelled());
    assert_eq!(job.group.running(), 0);
    assert!(s.cancelled >= 250, "most tasks never ran: {s:?}");
    assert!(s.started < 50, "{s:?}");
    // Every task that did not start was cancelled; the ones that started
    // either finished or stopped early, also counted as cancelled.
    assert!(s.done + s.failed.len() <= s.started, "{s:?}");
    // Running tasks poll `is_cancelled()` every chunk (~1 ms here): the
    // group stops long before a file's ~100 chunks would have taken.
    let stop = s.cancel_to_stopped.expect("stop time");
    assert!(stop < Duration::from_secs(2), "stopped {stop:?} after the cancel");
    // A failure reported before the cancel still names its file.
    for (name, message) in &s.failed {
        assert!(message.contains(&format!("task `{name}`")), "{message}");
    }
}

#[test]
fn thumbnails_a_running_task_stops_within_milliseconds_of_the_cancel() {
    // Two big files, very slow chunks: both are running when we cancel.
    let folder = Folder::new("running", 2, 512 << 10, 512 << 10);
    let rt = rt();
    let opts = job::Options { blur_passes: 3, chunk_delay: Duration::from_millis(5) };
    let job = job::submit(&rt, &folder.1, &opts);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while job.group.running() < 2 {
        assert!(std::time::Instant::now() < deadline, "tasks did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let canceller = job.canceller();
    let t = std::time::Instant::now();
    assert!(canceller.cancel());
    assert!(job.group.wait_stopped(Some(Duration::from_secs(5))), "group did not stop");
    let took = t.elapsed();
    // One chunk is 5 ms of sleep plus 16 rows of work (each file has
    // hundreds: seconds to go); allow for a loaded machine.
    assert!(took < Duration::from_millis(500), "stopped {took:?} after the cancel");
    for r in &job.refs {
        assert!(matches!(job::Outcome::of(r.get()), job::Outcome::Cancelled));
    }
    assert_eq!(job.starts.started_after_cancel(), 0);
}
