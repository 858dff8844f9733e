//! Thumbnails: a desktop app's batch job on manta instead of a thread pool.
//!
//! Every file of a folder becomes one task (read, 3-pass box blur as a 2-D
//! grey image, FNV-1a hash, downscale to a 64-pixel thumbnail) in one
//! `manta::Group`, named after its file. An `indicatif` progress bar
//! follows the results as they complete (`as_completed`) and the group's
//! counts (`group.progress()`). Ctrl-C cancels the group: no queued task
//! starts any more, running ones see `manta::is_cancelled()` between
//! chunks of 16 rows and stop; the program waits for the group to stop
//! (`wait_stopped`) and prints how many files were done, failed and
//! cancelled, and each failure with its message (which names the task).
//!
//! ```text
//! cargo run --release --example thumbnails -- [DIR] [--files N] [--cancel-after N] [--passes N]
//! ```
//!
//! Without DIR (or with an empty one) it first writes `--files` (300)
//! deterministic test images of 64 KiB - 1 MiB into a temporary folder,
//! removed at the end; about 1 in 100 of them fails on purpose (a typed
//! error through `spawn_try`, or a panic). `--cancel-after N` cancels the
//! group itself once N results are known, as Ctrl-C would (what
//! `tests/thumbnails.rs` checks without a terminal). The exit status is 1
//! if a task started after the cancel or the group did not stop.
//!
//! The job itself is in `job.rs`, shared with the test and the GUI
//! (`examples/gui`).

mod job;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    dir: Option<PathBuf>,
    files: usize,
    cancel_after: Option<usize>,
    passes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { dir: None, files: 300, cancel_after: None, passes: job::Options::default().blur_passes };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a number"))?;
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match a.as_str() {
            "--files" => args.files = number("--files")?,
            "--cancel-after" => args.cancel_after = Some(number("--cancel-after")?),
            "--passes" => args.passes = number("--passes")?,
            "-h" | "--help" => {
                return Err("usage: thumbnails [DIR] [--files N] [--cancel-after N] [--passes N]".into());
            }
            _ if a.starts_with('-') => return Err(format!("unknown flag {a}")),
            _ => args.dir = Some(a.into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = manta::Runtime::builder().thread_name("thumbs").build().expect("runtime");

    // The input: the folder's files, or generated ones.
    let mut generated = None;
    let mut files = match &args.dir {
        Some(dir) => match job::list(dir) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("cannot list {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    if files.is_empty() {
        let dir = std::env::temp_dir().join(format!("manta-thumbnails-{}", std::process::id()));
        let t = Instant::now();
        eprint!("writing {} test images into {} ... ", args.files, dir.display());
        files = match job::generate(&dir, args.files, 64 << 10, 1 << 20) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("failed: {e}");
                return ExitCode::from(2);
            }
        };
        eprintln!("{:.1} s", t.elapsed().as_secs_f64());
        generated = Some(dir);
    }

    let opts = job::Options { blur_passes: args.passes, ..job::Options::default() };
    let job = job::submit(&rt, &files, &opts);
    println!("{} files, {} tasks in group `thumbnails` on {} threads", files.len(), job.refs.len(), rt.num_threads());

    // Ctrl-C cancels the group (the handler runs on its own thread; the
    // cancel returns at once). A second Ctrl-C quits without waiting.
    let canceller = job.canceller();
    let bar = ProgressBar::new(files.len() as u64);
    let on_ctrl_c = {
        let bar = bar.clone();
        let mut pressed = false;
        move || {
            if pressed {
                std::process::exit(130);
            }
            pressed = true;
            if canceller.cancel() {
                bar.println("Ctrl-C: cancelled; waiting for the running tasks to stop (Ctrl-C again to quit)");
            }
        }
    };
    if let Err(e) = ctrlc::set_handler(on_ctrl_c) {
        eprintln!("no Ctrl-C handler ({e}); cancel with --cancel-after N");
    }

    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut first: Option<std::sync::Arc<job::Thumb>> = None;
    let mut checksum = 0u64;
    let summary = job.drive(args.cancel_after, |i, outcome, p| {
        match outcome {
            job::Outcome::Failed(message) => bar.println(format!("failed: {message}")),
            job::Outcome::Done(t) => {
                // Order-independent, so the same files give the same sum.
                checksum ^= t.hash.rotate_left(i as u32 % 64);
                if first.as_ref().is_none_or(|f| f.name > t.name) {
                    first = Some(t.clone());
                }
            }
            job::Outcome::Cancelled => {}
        }
        bar.set_position(p.finished() as u64);
        bar.set_message(format!("running {}, queued {}, failed {}", p.running, p.queued, p.failed));
    });
    bar.finish_and_clear();

    if let Some(t) = &first {
        print_thumb(t);
    }
    print_summary(&summary);
    if summary.done > 0 {
        println!("checksum of the {} hashes: {checksum:016x}", summary.done);
    }
    if let Some(dir) = generated {
        let _ = std::fs::remove_dir_all(dir);
    }
    if summary.started_after_cancel > 0 || !summary.stopped || summary.accounted() != summary.total {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// A thumbnail as text, two rows of pixels per line.
fn print_thumb(t: &job::Thumb) {
    const SHADES: &[u8] = b" .:-=+*#%@";
    println!(
        "{}: {}x{} -> {}x{} thumbnail, hash {:016x}",
        t.name, t.width, t.height, t.thumb_width, t.thumb_height, t.hash
    );
    for y in (0..t.thumb_height).step_by(2) {
        let line: String = (0..t.thumb_width)
            .map(|x| SHADES[t.pixels[y * t.thumb_width + x] as usize * SHADES.len() / 256] as char)
            .collect();
        println!("  {line}");
    }
}

fn print_summary(s: &job::Summary) {
    println!();
    println!(
        "{} files in {:.2} s: {} done, {} failed, {} cancelled",
        s.total,
        s.elapsed.as_secs_f64(),
        s.done,
        s.failed.len(),
        s.cancelled
    );
    if let Some(n) = s.finished_at_cancel {
        println!(
            "cancelled after {n} results; {} tasks had started, {} started after the cancel; group stopped {}",
            s.started,
            s.started_after_cancel,
            match s.cancel_to_stopped {
                Some(d) => format!("{:.1} ms after the cancel", d.as_secs_f64() * 1e3),
                None => "NOT within 30 s".into(),
            }
        );
    }
    if !s.failed.is_empty() {
        println!("failures:");
        for (name, message) in &s.failed {
            println!("  {name}: {message}");
        }
    }
    let p = s.progress;
    println!(
        "group counts: total {}, done {}, failed {}, cancelled {}, running {}, queued {}",
        p.total, p.done, p.failed, p.cancelled, p.running, p.queued
    );
    if p.failed != s.failed.len() {
        println!(
            "  (manta counts the {} task(s) that stopped early on the cancel as failed: their bodies returned an error)",
            p.failed.saturating_sub(s.failed.len())
        );
    }
}
