//! A desktop app on manta: the thumbnails job (`examples/thumbnails/job.rs`)
//! behind a window (eframe/egui, OpenGL through glow, X11).
//!
//! Start submits one task per file in a `manta::Group`; a progress bar, the
//! group's counts and a status line follow it, finished thumbnails appear
//! as small images with their names and hashes, failures in red with their
//! messages. Cancel cancels the group: queued tasks never start, running
//! ones see `manta::is_cancelled()` within a chunk of rows and stop; the
//! status line says when the group has stopped. Start again runs a new
//! group; closing the window cancels the running one (`cancel_on_drop`).
//!
//! Results reach the UI thread through `ObjectRef::on_ready_via`: the
//! completing thread (a worker, or manta's service thread for a cancelled
//! task) only hands the callback to `post`, which pushes it onto an
//! unbounded channel and asks egui for a repaint — it never blocks, however
//! far behind the UI is. The UI runs the callbacks at the start of each
//! frame (`App::logic`); each one turns its result into a row (and a
//! texture) and hands it to the app.
//!
//! For scripts (`run_xvfb.sh`) the app prints lines to stdout:
//!
//! ```text
//! status ready files=500 dir=/tmp/...
//! status layout start=X,Y cancel=X,Y        # button centres, window pixels
//! status started total=500
//! status progress done=D failed=F cancelled=C finished=N running=R
//! status cancel_clicked done=D failed=F finished=N running=R
//! status stopped total=500 done=D failed=F cancelled=C started=S started_after_cancel=0 stop_ms=T
//! status exiting
//! ```
//!
//! Run: `cd examples/gui && cargo run --release -- [--files N] [--passes N]
//! [--chunk-delay-ms N] [--exit-when-stopped]`; `--exit-when-stopped` closes
//! the window 1.5 s after the `stopped` line (time for a screenshot).

#[allow(dead_code)]
#[path = "../../thumbnails/job.rs"]
mod job;

use eframe::egui;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A callback `on_ready_via` hands to the UI thread.
type UiJob = Box<dyn FnOnce() + Send>;

struct Args {
    files: usize,
    passes: usize,
    chunk_delay: Duration,
    exit_when_stopped: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { files: 500, passes: 3, chunk_delay: Duration::from_millis(1), exit_when_stopped: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{flag} needs a number"))?;
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match a.as_str() {
            "--files" => args.files = number("--files")? as usize,
            "--passes" => args.passes = number("--passes")? as usize,
            "--chunk-delay-ms" => args.chunk_delay = Duration::from_millis(number("--chunk-delay-ms")?),
            "--exit-when-stopped" => args.exit_when_stopped = true,
            _ => {
                return Err(format!(
                    "unknown argument {a}\nusage: manta-gui-example [--files N] [--passes N] [--chunk-delay-ms N] [--exit-when-stopped]"
                ))
            }
        }
    }
    if std::env::var_os("MANTA_GUI_EXIT_WHEN_STOPPED").is_some() {
        args.exit_when_stopped = true;
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("manta-gui-{}", std::process::id()));
    let files = match job::generate(&dir, args.files, 64 << 10, 256 << 10) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot write test images into {}: {e}", dir.display());
            return std::process::ExitCode::from(2);
        }
    };
    println!("status ready files={} dir={}", files.len(), dir.display());

    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title("manta thumbnails").with_inner_size([960.0, 640.0]),
        ..Default::default()
    };
    let rt = manta::Runtime::builder().thread_name("thumbs").build().expect("runtime");
    let opts = job::Options { blur_passes: args.passes, chunk_delay: args.chunk_delay };
    let exit_when_stopped = args.exit_when_stopped;
    let result = eframe::run_native(
        "manta thumbnails",
        options,
        Box::new(move |_cc| Ok(Box::new(App::new(rt, files, opts, exit_when_stopped)))),
    );
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eframe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One finished file, as the UI shows it.
struct Row {
    run: u64,
    name: String,
    outcome: Shown,
}

enum Shown {
    Done { hash: u64, size: (usize, usize), texture: egui::TextureHandle },
    Failed(String),
    Cancelled,
}

impl Row {
    /// Runs on the UI thread (an `on_ready_via` callback).
    fn new(run: u64, name: String, outcome: job::Outcome, ctx: &egui::Context) -> Row {
        let outcome = match outcome {
            job::Outcome::Done(t) => {
                let image = egui::ColorImage::new(
                    [t.thumb_width, t.thumb_height],
                    t.pixels.iter().map(|&v| palette(v)).collect(),
                );
                let texture = ctx.load_texture(&t.name, image, egui::TextureOptions::LINEAR);
                Shown::Done { hash: t.hash, size: (t.width, t.height), texture }
            }
            job::Outcome::Failed(message) => Shown::Failed(message),
            job::Outcome::Cancelled => Shown::Cancelled,
        };
        Row { run, name, outcome }
    }
}

/// Grey to a warm false-colour ramp (black, purple, orange, pale yellow).
fn palette(v: u8) -> egui::Color32 {
    const STOPS: [(f32, [f32; 3]); 4] = [
        (0.0, [10.0, 8.0, 30.0]),
        (0.35, [120.0, 30.0, 110.0]),
        (0.7, [240.0, 120.0, 40.0]),
        (1.0, [252.0, 250.0, 190.0]),
    ];
    let x = v as f32 / 255.0;
    let i = STOPS.iter().position(|s| s.0 >= x).unwrap_or(3).max(1);
    let ((x0, c0), (x1, c1)) = (STOPS[i - 1], STOPS[i]);
    let t = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0);
    let c = |k: usize| (c0[k] + (c1[k] - c0[k]) * t) as u8;
    egui::Color32::from_rgb(c(0), c(1), c(2))
}

/// A run of the job (one group).
struct Run {
    id: u64,
    job: job::Job,
    canceller: job::Canceller,
    started: Instant,
    rows: Vec<Row>,
    done: usize,
    failed: usize,
    cancelled: usize,
    cancel_clicked: Option<Instant>,
    stopped: Option<Instant>,
    printed_finished: usize,
}

impl Run {
    fn finished(&self) -> usize {
        self.done + self.failed + self.cancelled
    }
}

struct App {
    rt: manta::Runtime,
    files: Vec<PathBuf>,
    opts: job::Options,
    exit_when_stopped: bool,
    /// `on_ready_via` callbacks waiting for the UI thread.
    jobs: (mpsc::Sender<UiJob>, mpsc::Receiver<UiJob>),
    /// What those callbacks make.
    rows: (mpsc::Sender<Row>, mpsc::Receiver<Row>),
    run: Option<Run>,
    runs: u64,
    status: String,
    layout_printed: bool,
    exit_at: Option<Instant>,
}

impl App {
    fn new(rt: manta::Runtime, files: Vec<PathBuf>, opts: job::Options, exit_when_stopped: bool) -> App {
        let status = format!("{} files ready; {} worker threads. Press Start.", files.len(), rt.num_threads());
        App {
            rt,
            files,
            opts,
            exit_when_stopped,
            jobs: mpsc::channel(),
            rows: mpsc::channel(),
            run: None,
            runs: 0,
            status,
            layout_printed: false,
            exit_at: None,
        }
    }

    fn running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.stopped.is_none())
    }

    fn start(&mut self, ctx: &egui::Context) {
        self.runs += 1;
        let id = self.runs;
        let job = job::submit(&self.rt, &self.files, &self.opts);
        for (r, name) in job.refs.iter().zip(&job.names) {
            // The completing thread only calls `post`: a send on an
            // unbounded channel and a repaint request, never blocking.
            let post = {
                let (tx, ctx) = (self.jobs.0.clone(), ctx.clone());
                move |f: UiJob| {
                    let _ = tx.send(f);
                    ctx.request_repaint();
                }
            };
            let (rows, ctx, name) = (self.rows.0.clone(), ctx.clone(), name.clone());
            r.on_ready_via(post, move |result| {
                let _ = rows.send(Row::new(id, name, job::Outcome::of(result), &ctx));
            });
        }
        let total = job.refs.len();
        println!("status started total={total}");
        self.status = format!("Started {total} tasks in group `thumbnails`.");
        let canceller = job.canceller();
        self.run = Some(Run {
            id,
            job,
            canceller,
            started: Instant::now(),
            rows: Vec::new(),
            done: 0,
            failed: 0,
            cancelled: 0,
            cancel_clicked: None,
            stopped: None,
            printed_finished: 0,
        });
    }

    fn cancel(&mut self) {
        let Some(run) = &mut self.run else { return };
        if run.cancel_clicked.is_some() {
            return;
        }
        let t = Instant::now();
        run.canceller.cancel();
        let took = t.elapsed();
        run.cancel_clicked = Some(t);
        let p = run.job.group.progress();
        println!(
            "status cancel_clicked done={} failed={} finished={} running={} cancel_us={}",
            run.done,
            run.failed,
            run.finished(),
            p.running,
            took.as_micros()
        );
        self.status = format!(
            "Cancelled ({} µs on the UI thread); waiting for {} running task(s) to stop...",
            took.as_micros(),
            p.running
        );
    }

    /// Runs the posted callbacks, takes their rows, notices the end.
    fn drain(&mut self, ctx: &egui::Context) {
        while let Ok(f) = self.jobs.1.try_recv() {
            f();
        }
        let Some(run) = &mut self.run else { return };
        while let Ok(row) = self.rows.1.try_recv() {
            if row.run != run.id {
                continue; // a late result of an earlier run
            }
            match &row.outcome {
                Shown::Done { .. } => run.done += 1,
                Shown::Failed(_) => run.failed += 1,
                Shown::Cancelled => run.cancelled += 1,
            }
            run.rows.push(row);
        }
        if run.stopped.is_some() {
            return;
        }
        let p = run.job.group.progress();
        if run.finished() != run.printed_finished {
            run.printed_finished = run.finished();
            println!(
                "status progress done={} failed={} cancelled={} finished={} running={}",
                run.done,
                run.failed,
                run.cancelled,
                run.finished(),
                p.running
            );
        }
        let total = run.job.refs.len();
        if run.finished() == total && run.job.group.is_stopped() {
            let now = Instant::now();
            run.stopped = Some(now);
            let stop_ms = run.cancel_clicked.map_or(0, |t| (now - t).as_millis());
            println!(
                "status stopped total={total} done={} failed={} cancelled={} started={} started_after_cancel={} stop_ms={stop_ms}",
                run.done,
                run.failed,
                run.cancelled,
                run.job.starts.started(),
                run.job.starts.started_after_cancel()
            );
            self.status = match run.cancel_clicked {
                Some(_) => format!(
                    "Stopped {stop_ms} ms after Cancel: {} done, {} failed, {} cancelled; {} started after the cancel.",
                    run.done,
                    run.failed,
                    run.cancelled,
                    run.job.starts.started_after_cancel()
                ),
                None => format!(
                    "Finished in {:.1} s: {} done, {} failed.",
                    run.started.elapsed().as_secs_f64(),
                    run.done,
                    run.failed
                ),
            };
            if self.exit_when_stopped {
                self.exit_at = Some(now + Duration::from_millis(1500));
            }
        } else {
            // Results wake us; this also notices "stopped", which no
            // callback announces.
            ctx.request_repaint_after(Duration::from_millis(50));
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain(ctx);
        if let Some(at) = self.exit_at {
            if Instant::now() >= at {
                println!("status exiting");
                self.exit_at = None;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            } else {
                ctx.request_repaint_after(Duration::from_millis(50));
            }
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let running = self.running();
        let mut start_rect = None;
        let mut cancel_rect = None;
        egui::Panel::top("controls").show(ui, |ui| {
            ui.add_space(6.0);
            ui.heading("manta thumbnails");
            ui.horizontal(|ui| {
                let start = ui.add_enabled(!running, egui::Button::new("  Start  "));
                let can_cancel = running && self.run.as_ref().is_some_and(|r| r.cancel_clicked.is_none());
                let cancel = ui.add_enabled(can_cancel, egui::Button::new("  Cancel  "));
                start_rect = Some(start.rect);
                cancel_rect = Some(cancel.rect);
                if start.clicked() {
                    self.start(&ctx);
                }
                if cancel.clicked() {
                    self.cancel();
                }
                ui.label(format!("{} files, {} threads", self.files.len(), self.rt.num_threads()));
            });
            if let Some(run) = &self.run {
                let total = run.job.refs.len().max(1);
                let p = run.job.group.progress();
                ui.add(
                    egui::ProgressBar::new(run.finished() as f32 / total as f32)
                        .text(format!("{} / {} finished ({} cancelled)", run.finished(), total, run.cancelled))
                        .animate(run.stopped.is_none()),
                );
                ui.label(format!(
                    "done {}   failed {}   cancelled {}   running {}   queued {}",
                    run.done, run.failed, run.cancelled, p.running, p.queued
                ));
            } else {
                ui.add(egui::ProgressBar::new(0.0).text("not started"));
            }
            ui.add_space(4.0);
        });
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.add_space(2.0);
            ui.label(&self.status);
            ui.add_space(2.0);
        });
        egui::CentralPanel::default().show(ui, |ui| {
            let Some(run) = &self.run else { return };
            egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
                for row in &run.rows {
                    if let Shown::Failed(message) = &row.outcome {
                        ui.colored_label(egui::Color32::from_rgb(230, 80, 70), message);
                    }
                }
                ui.add_space(4.0);
                // A grid of fixed cells: the thumbnail centred in a
                // THUMB x THUMB square, its name and the hash's first digits.
                let cell = job::THUMB as f32 + 28.0;
                let columns = ((ui.available_width() / (cell + 8.0)).floor() as usize).max(1);
                egui::Grid::new("thumbnails").min_col_width(cell).spacing([8.0, 10.0]).show(ui, |ui| {
                    let done = run.rows.iter().filter_map(|row| match &row.outcome {
                        Shown::Done { hash, size, texture } => Some((&row.name, hash, size, texture)),
                        _ => None,
                    });
                    for (k, (name, hash, size, texture)) in done.enumerate() {
                        ui.vertical_centered(|ui| {
                            let side = job::THUMB as f32;
                            let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::hover());
                            let [w, h] = texture.size();
                            let inner = egui::Rect::from_center_size(rect.center(), egui::vec2(w as f32, h as f32));
                            egui::Image::new((texture.id(), inner.size())).paint_at(ui, inner);
                            response.on_hover_text(format!("{}x{}, hash {hash:016x}", size.0, size.1));
                            ui.small(name.trim_end_matches(".mimg"));
                            ui.small(egui::RichText::new(format!("{:08x}", hash >> 32)).monospace().weak());
                        });
                        if (k + 1) % columns == 0 {
                            ui.end_row();
                        }
                    }
                });
            });
        });
        if !self.layout_printed {
            if let (Some(s), Some(c)) = (start_rect, cancel_rect) {
                let ppp = ctx.pixels_per_point();
                let px = |r: egui::Rect| ((r.center().x * ppp).round() as i32, (r.center().y * ppp).round() as i32);
                let ((sx, sy), (cx, cy)) = (px(s), px(c));
                println!("status layout start={sx},{sy} cancel={cx},{cy}");
                self.layout_printed = true;
            }
        }
    }
}
