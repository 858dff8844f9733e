//! The thumbnails job, shared by the command-line example (`main.rs`), its
//! test (`tests/thumbnails.rs`) and the GUI (`examples/gui`): input files,
//! the per-file work (decode, blur, hash, downscale), one task per file in
//! a [`manta::Group`], and the bookkeeping that shows a cancel is real.
//!
//! Files are tiny grey images: `MIMG`, width and height (u32 little
//! endian), then `width * height` bytes. Any other file is read as raw grey
//! bytes, 512 pixels a row. [`generate`] writes deterministic test images;
//! two kinds of them fail on purpose, to show failure reporting:
//! every 100th (`i % 100 == 37`) has a header promising more bytes than the
//! file holds (the task returns a typed [`ThumbError::Truncated`] through
//! `spawn_try`), and every 300th (`i % 300 == 191`) claims to be 0x0
//! pixels, which the scaler divides by (the task panics).
//!
//! Tasks poll [`manta::is_cancelled`] between chunks of 16 rows, so a
//! cancel stops the running ones within milliseconds.
//!
//! Only `std` and `manta`: the binaries add the progress bar, the Ctrl-C
//! handler or the window.

use manta::{as_completed, Group, ObjectId, ObjectRef, Progress, Runtime};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longer side of a thumbnail, in pixels.
pub const THUMB: usize = 64;

/// Rows processed between two looks at `manta::is_cancelled()`.
const CHUNK_ROWS: usize = 16;

/// Width of a file that is not a `MIMG` image (raw grey bytes).
const RAW_WIDTH: usize = 512;

const MAGIC: &[u8; 4] = b"MIMG";

/// How much work each file is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Box-blur passes (each a horizontal and a vertical 3-tap pass).
    pub blur_passes: usize,
    /// A pause after each chunk of rows, standing in for a slow disk or a
    /// heavier filter (zero in the command-line example).
    pub chunk_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { blur_passes: 3, chunk_delay: Duration::ZERO }
    }
}

/// A task's result: the thumbnail of one file.
#[derive(Debug, Clone)]
pub struct Thumb {
    /// The file's name.
    pub name: String,
    /// The image's size.
    pub width: usize,
    /// The image's size.
    pub height: usize,
    /// FNV-1a hash of the blurred image.
    pub hash: u64,
    /// The thumbnail's size (its longer side is [`THUMB`]).
    pub thumb_width: usize,
    /// The thumbnail's size.
    pub thumb_height: usize,
    /// The thumbnail, grey, row by row.
    pub pixels: Vec<u8>,
}

/// Why a file has no thumbnail (a task's typed error, `spawn_try`).
#[derive(Debug)]
pub enum ThumbError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The header promises more pixels than the file holds.
    Truncated {
        /// Width in the header.
        width: usize,
        /// Height in the header.
        height: usize,
        /// Pixel bytes present.
        found: usize,
    },
    /// An empty file.
    Empty,
    /// The task saw `manta::is_cancelled()` and stopped early.
    Cancelled,
}

impl fmt::Display for ThumbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThumbError::Io(e) => write!(f, "cannot read the file: {e}"),
            ThumbError::Truncated { width, height, found } => {
                write!(
                    f,
                    "truncated image: the header says {width}x{height} ({} bytes), the file has {found}",
                    width * height
                )
            }
            ThumbError::Empty => write!(f, "empty file"),
            ThumbError::Cancelled => write!(f, "stopped early: cancelled"),
        }
    }
}

impl std::error::Error for ThumbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ThumbError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// xorshift64*: deterministic pseudo-random numbers for [`generate`].
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// True for the generated files that fail with a typed error.
pub fn is_truncated_on_purpose(i: usize) -> bool {
    i % 100 == 37
}

/// True for the generated files whose task panics.
pub fn panics_on_purpose(i: usize) -> bool {
    i % 300 == 191
}

/// The name of generated file `i`.
pub fn file_name(i: usize) -> String {
    format!("img-{i:04}.mimg")
}

/// Writes `count` deterministic test images of `min_bytes..=max_bytes`
/// pixels each into `dir` (created if needed) and returns their paths.
/// Each is a pattern (rings, stripes, a checker, ...) plus noise, so the
/// thumbnails look different; see the module docs for the ones that fail.
pub fn generate(dir: &Path, count: usize, min_bytes: usize, max_bytes: usize) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let mut rng = Rng::new(i as u64 + 1);
        let bytes = min_bytes + rng.below((max_bytes - min_bytes + 1) as u64) as usize;
        // Between twice as wide as high and twice as high as wide.
        let aspect = 0.5 + rng.below(1501) as f64 / 1000.0;
        let width = ((bytes as f64 * aspect).sqrt() as usize).clamp(1, bytes.max(1));
        let height = (bytes / width).max(1);
        let mut pixels = vec![0u8; width * height];
        let kind = i % 5;
        let (cx, cy) = (rng.below(width as u64) as i64, rng.below(height as u64) as i64);
        let (a, b) = (1 + rng.below(7) as i64, 1 + rng.below(7) as i64);
        let shift = 3 + rng.below(4) as u32;
        for y in 0..height {
            for x in 0..width {
                let (xi, yi) = (x as i64, y as i64);
                let v = match kind {
                    0 => ((xi - cx).pow(2) + (yi - cy).pow(2)) >> (shift + 4),
                    1 => ((xi >> shift) ^ (yi >> shift)) * 37,
                    2 => (xi * a + yi * b) >> 2,
                    3 => (((xi >> (shift + 2)) + (yi >> (shift + 2))) & 1) * 160 + yi * 90 / height as i64,
                    _ => (xi * 255 / width as i64) ^ ((yi - cy).abs() >> shift),
                };
                let noise = (rng.next() >> 59) as i64; // 0..32
                pixels[y * width + x] = ((v & 0xff) as u8).saturating_add(noise as u8);
            }
        }
        let (header_w, header_h) = if panics_on_purpose(i) {
            (0, 0)
        } else if is_truncated_on_purpose(i) {
            (width, height + 17)
        } else {
            (width, height)
        };
        let mut file = Vec::with_capacity(12 + pixels.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&(header_w as u32).to_le_bytes());
        file.extend_from_slice(&(header_h as u32).to_le_bytes());
        file.extend_from_slice(&pixels);
        let path = dir.join(file_name(i));
        std::fs::write(&path, file)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The regular files in `dir`, sorted by name.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes a file's bytes into (width, height, pixels).
fn decode(bytes: Vec<u8>) -> Result<(usize, usize, Vec<u8>), ThumbError> {
    if bytes.len() >= 12 && &bytes[..4] == MAGIC {
        let width = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let height = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let found = bytes.len() - 12;
        if found < width * height {
            return Err(ThumbError::Truncated { width, height, found });
        }
        let mut pixels = bytes;
        pixels.drain(..12);
        pixels.truncate(width * height);
        return Ok((width, height, pixels));
    }
    if bytes.is_empty() {
        return Err(ThumbError::Empty);
    }
    let width = RAW_WIDTH.min(bytes.len());
    let height = bytes.len() / width;
    let mut pixels = bytes;
    pixels.truncate(width * height);
    Ok((width, height, pixels))
}

/// Between two chunks: stop if the task was cancelled, else pause if asked.
fn checkpoint(opts: &Options) -> Result<(), ThumbError> {
    if manta::is_cancelled() {
        return Err(ThumbError::Cancelled);
    }
    if !opts.chunk_delay.is_zero() {
        std::thread::sleep(opts.chunk_delay);
    }
    Ok(())
}

/// One 3-tap box-blur pass, horizontal then vertical, in chunks of rows.
fn blur(w: usize, h: usize, img: &mut [u8], tmp: &mut [u8], opts: &Options) -> Result<(), ThumbError> {
    for y0 in (0..h).step_by(CHUNK_ROWS) {
        checkpoint(opts)?;
        for y in y0..(y0 + CHUNK_ROWS).min(h) {
            let row = &img[y * w..(y + 1) * w];
            for x in 0..w {
                let (l, r) = (row[x.saturating_sub(1)] as u16, row[(x + 1).min(w - 1)] as u16);
                tmp[y * w + x] = ((l + row[x] as u16 + r) / 3) as u8;
            }
        }
    }
    for y0 in (0..h).step_by(CHUNK_ROWS) {
        checkpoint(opts)?;
        for y in y0..(y0 + CHUNK_ROWS).min(h) {
            let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in 0..w {
                let sum = tmp[up * w + x] as u16 + tmp[y * w + x] as u16 + tmp[down * w + x] as u16;
                img[y * w + x] = (sum / 3) as u8;
            }
        }
    }
    Ok(())
}

/// The task body: read, decode, blur, hash and downscale one file.
pub fn process(path: &Path, opts: &Options) -> Result<Thumb, ThumbError> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let (w, h, mut img) = decode(std::fs::read(path).map_err(ThumbError::Io)?)?;
    let mut tmp = vec![0u8; img.len()];
    for _ in 0..opts.blur_passes {
        blur(w, h, &mut img, &mut tmp, opts)?;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in img.chunks(CHUNK_ROWS * w.max(1)) {
        checkpoint(opts)?;
        for &b in chunk {
            hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Keeps the aspect ratio. A 0x0 header gets here (the decoder accepts
    // it) and divides by zero: the deliberate panic.
    let (tw, th) = if w >= h { (THUMB, (THUMB * h / w).max(1)) } else { ((THUMB * w / h).max(1), THUMB) };
    let mut pixels = vec![0u8; tw * th];
    for ty in 0..th {
        if ty % 8 == 0 {
            checkpoint(opts)?;
        }
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut sum = 0u64;
            for y in y0..y1 {
                sum += img[y * w + x0..y * w + x1].iter().map(|&b| b as u64).sum::<u64>();
            }
            pixels[ty * tw + tx] = (sum / ((y1 - y0) * (x1 - x0)) as u64) as u8;
        }
    }
    Ok(Thumb { name, width: w, height: h, hash, thumb_width: tw, thumb_height: th, pixels })
}

/// Counters the tasks keep, to check a cancel from outside manta: how
/// many tasks started, and how many started after `Group::cancel`
/// returned (must stay 0).
#[derive(Debug, Default)]
pub struct Starts {
    cancel_returned: AtomicBool,
    started: AtomicUsize,
    started_after_cancel: AtomicUsize,
}

impl Starts {
    fn note_start(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.cancel_returned.load(Ordering::SeqCst) {
            self.started_after_cancel.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Tasks whose body started.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Tasks whose body started after the cancel returned.
    pub fn started_after_cancel(&self) -> usize {
        self.started_after_cancel.load(Ordering::SeqCst)
    }
}

/// A submitted job: one task per file in one group.
pub struct Job {
    /// The group of the job's tasks (cancelled when the last clone of it
    /// is dropped).
    pub group: Group,
    /// Each file's result, in input order.
    pub refs: Vec<ObjectRef<Thumb>>,
    /// The files' names, in input order.
    pub names: Vec<String>,
    /// Start counters.
    pub starts: Arc<Starts>,
    cancelled: Arc<Mutex<Option<(Instant, Progress)>>>,
    started_at: Instant,
}

/// What cancels a job; cheap to clone and `Send`, for a Ctrl-C handler or
/// a Cancel button.
#[derive(Clone)]
pub struct Canceller {
    group: Group,
    starts: Arc<Starts>,
    cancelled: Arc<Mutex<Option<(Instant, Progress)>>>,
}

impl Canceller {
    /// Cancels the group; false if it was already cancelled.
    pub fn cancel(&self) -> bool {
        // The counts just before (after, a running task may already have
        // stopped early, which manta counts as failed).
        let before = self.group.progress();
        let first = self.group.cancel();
        // After `cancel` returns no queued task may start: any task that
        // sees this flag when it starts is a bug.
        self.starts.cancel_returned.store(true, Ordering::SeqCst);
        if first {
            *self.cancelled.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), before));
        }
        first
    }
}

/// Submits one task per file, named after the file, in a new group.
pub fn submit(rt: &Runtime, files: &[PathBuf], opts: &Options) -> Job {
    let group = rt.group_builder().name("thumbnails").cancel_on_drop().build();
    let starts = Arc::new(Starts::default());
    let mut refs = Vec::with_capacity(files.len());
    let mut names = Vec::with_capacity(files.len());
    for path in files {
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let (path, opts, starts) = (path.clone(), opts.clone(), starts.clone());
        refs.push(group.task().name(name.clone()).spawn_try(move || {
            starts.note_start();
            process(&path, &opts)
        }));
        names.push(name);
    }
    Job { group, refs, names, starts, cancelled: Arc::default(), started_at: Instant::now() }
}

/// How one task ended, as the app counts it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A thumbnail.
    Done(Arc<Thumb>),
    /// An error (its message names the task).
    Failed(String),
    /// Cancelled: before it started, or it saw `is_cancelled()` and
    /// stopped early.
    Cancelled,
}

impl Outcome {
    /// Classifies a task's result. A task that stopped early on a cancel
    /// returns `ThumbError::Cancelled`, which manta records as a failure
    /// (`Error::TaskFailed`): the app counts it as cancelled.
    pub fn of(result: Result<Arc<Thumb>, manta::Error>) -> Outcome {
        match result {
            Ok(t) => Outcome::Done(t),
            Err(e) if e.is_cancelled() || matches!(e.downcast_ref::<ThumbError>(), Some(ThumbError::Cancelled)) => {
                Outcome::Cancelled
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// What a job did, once it stopped.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Files.
    pub total: usize,
    /// Thumbnails made.
    pub done: usize,
    /// Failed tasks: (file name, error message).
    pub failed: Vec<(String, String)>,
    /// Cancelled tasks (queued ones, and running ones that stopped early).
    pub cancelled: usize,
    /// Tasks whose body started.
    pub started: usize,
    /// Tasks whose body started after the cancel returned (must be 0).
    pub started_after_cancel: usize,
    /// Results known (done + failed) when the job was cancelled, if it was.
    pub finished_at_cancel: Option<usize>,
    /// From the cancel to the group being stopped, if it was cancelled.
    pub cancel_to_stopped: Option<Duration>,
    /// Whether the group stopped (no task runs, none can start).
    pub stopped: bool,
    /// The group's own counts at the end.
    pub progress: Progress,
    /// From submission to the end.
    pub elapsed: Duration,
}

impl Summary {
    /// done + failed + cancelled.
    pub fn accounted(&self) -> usize {
        self.done + self.failed.len() + self.cancelled
    }
}

impl Job {
    /// A handle that cancels the job.
    pub fn canceller(&self) -> Canceller {
        Canceller { group: self.group.clone(), starts: self.starts.clone(), cancelled: self.cancelled.clone() }
    }

    /// When the job was cancelled, if it was, and the group's counts then.
    pub fn cancelled(&self) -> Option<(Instant, Progress)> {
        *self.cancelled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the results as they complete (`as_completed`), calling
    /// `on_result(index, outcome, progress)` for each; cancels the group
    /// once `cancel_after` results are known (done or failed), if given;
    /// then waits for the group to stop and sums up.
    pub fn drive(&self, cancel_after: Option<usize>, mut on_result: impl FnMut(usize, &Outcome, Progress)) -> Summary {
        let index: HashMap<ObjectId, usize> = self.refs.iter().enumerate().map(|(i, r)| (r.id(), i)).collect();
        let mut s = Summary { total: self.refs.len(), ..Summary::default() };
        let canceller = self.canceller();
        let mut cancelled_here = None;
        for r in as_completed(self.refs.iter().cloned()) {
            let i = index[&r.id()];
            let outcome = Outcome::of(r.get());
            match &outcome {
                Outcome::Done(_) => s.done += 1,
                Outcome::Failed(message) => s.failed.push((self.names[i].clone(), message.clone())),
                Outcome::Cancelled => s.cancelled += 1,
            }
            on_result(i, &outcome, self.group.progress());
            let finished = s.done + s.failed.len();
            if cancel_after.is_some_and(|n| finished >= n) && canceller.cancel() {
                cancelled_here = Some(finished);
            }
        }
        s.stopped = self.group.wait_stopped(Some(Duration::from_secs(30)));
        if let Some((at, p)) = self.cancelled() {
            s.cancel_to_stopped = Some(at.elapsed()).filter(|_| s.stopped);
            // Cancelled from elsewhere (Ctrl-C): the group's counts then,
            // which may lag the results read by a moment.
            s.finished_at_cancel = cancelled_here.or(Some(p.done + p.failed));
        }
        s.failed.sort();
        s.started = self.starts.started();
        s.started_after_cancel = self.starts.started_after_cancel();
        s.progress = self.group.progress();
        s.elapsed = self.started_at.elapsed();
        s
    }
}
