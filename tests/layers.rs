//! The layer check: every `crate::` path in the sources of both crates
//! (`use crate::...`, `use crate::{a, b}` groups, and inline
//! `crate::x::...` paths) must point at a module of the importing
//! module's layer or a lower one. `super::` stays inside a folder, so it
//! is not checked; a path to an item of the crate root (a re-export in
//! `lib.rs`) counts as a path to `lib`, the top layer.
//!
//! Each crate has a table of layers, lowest first. A top-level module (a
//! file `src/x.rs` or a folder `src/x/`) missing from its table fails the
//! test, so a new module must be placed. The core has a list of upward
//! imports allowed while they are being removed: the test fails on any
//! other, and on an allowed one that no longer exists (so the list only
//! shrinks). manta-p2p has none.
//!
//! The scan is line-based: comments (`//` to the end of a line) are
//! dropped first, so docs that mention a path do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The core's layers, lowest first.
const CORE_LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "sync",
            "error",
            "id",
            "notify",
            "countdown",
            "mailbox",
            "export",
            "decide",
            "claim",
            "lazy",
            "inbox",
            "eventlog",
            "watchers",
            "group_counts",
            "panics",
            "timeline",
            "chrome",
        ],
    ),
    ("store", &["slot", "heap_size", "spill", "store", "lineage"]),
    // A task's control block (`cancel`) lives in its job (`scheduler`).
    ("sched", &["resources", "dispatch", "dispatch_tests", "job", "scheduler", "cancel", "parked"]),
    ("object", &["cell"]),
    (
        "api",
        &[
            "refs",
            "args",
            "task",
            "exec",
            "group",
            "completed",
            "metrics",
            "actor",
            "objects",
            "wait",
            "runtime",
            "backend",
            "lib",
        ],
    ),
];

/// manta-p2p's layers, lowest first (see the `mod.rs` header of each).
const P2P_LAYERS: &[(&str, &[&str])] = &[
    ("wire", &["wire"]),
    ("base", &["config", "probe", "secret", "stats", "sync"]),
    ("transport", &["transport"]),
    ("cluster", &["cluster"]),
    ("work", &["work"]),
    ("node", &["node"]),
    ("api", &["lib"]),
];

/// Upward imports in the core, being removed: `(file under src/, the
/// module it reaches)`. Remove an entry when its import is gone.
const CORE_ALLOWED: &[(&str, &str)] = &[];

/// One path from a module to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    /// The file, relative to the crate's `src/`.
    file: String,
    /// Its top-level module.
    from: String,
    /// The top-level module the path reaches.
    to: String,
}

/// The crate's source files (not `src/bin/`, which are crates of their own).
fn sources(src: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(src, &mut out);
    out.retain(|p| !p.strip_prefix(src).expect("under src").starts_with("bin"));
    out
}

/// The top-level module a file belongs to (`lib` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().to_string();
    first.strip_suffix(".rs").map(str::to_string).unwrap_or(first)
}

/// Every top-level module of the crate.
fn modules(src: &Path) -> BTreeSet<String> {
    sources(src).iter().map(|f| module_of(src, f)).collect()
}

/// The code of a file without its `//` comments.
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The first segment of every `crate::` path in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue; // `$crate::`, or part of another word
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            out.extend(ident(rest));
        }
    }
    out
}

/// The first identifier of each top-level item of a `{...}` group (`group`
/// starts after the opening brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.extend(ident(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.extend(ident(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The identifier at the start of `s` (after whitespace), if any.
fn ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    let id = &s[..end];
    (!id.is_empty() && id != "self").then(|| id.to_string())
}

/// Every path of the crate that points to a higher layer than its own.
fn upward(src: &Path, layers: &[(&str, &[&str])]) -> Vec<Edge> {
    let layer: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i))).collect();
    let known = modules(src);
    let missing: Vec<&String> = known.iter().filter(|m| !layer.contains_key(m.as_str())).collect();
    assert!(missing.is_empty(), "{}: modules missing from the layer table: {missing:?}", src.display());
    let mut out = BTreeSet::new();
    for file in sources(src) {
        let from = module_of(src, &file);
        let code = code_of(&std::fs::read_to_string(&file).expect("read source"));
        for head in crate_paths(&code) {
            // A path to something that is not a module is a crate-root item.
            let to = if known.contains(&head) { head } else { "lib".to_string() };
            if layer[to.as_str()] > layer[from.as_str()] {
                let file = file.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
                out.insert(Edge { file, from: from.clone(), to });
            }
        }
    }
    out.into_iter().collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn p2p_imports_point_only_downward() {
    let found = upward(&root().join("p2p").join("src"), P2P_LAYERS);
    assert!(found.is_empty(), "upward imports in manta-p2p (see the layer table in tests/layers.rs):\n{found:#?}");
}

#[test]
fn core_imports_point_only_downward_except_those_being_removed() {
    let found: BTreeSet<(String, String)> =
        upward(&root().join("src"), CORE_LAYERS).into_iter().map(|e| (e.file, e.to)).collect();
    let allowed: BTreeSet<(String, String)> =
        CORE_ALLOWED.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect();
    let new: Vec<_> = found.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&found).collect();
    assert!(new.is_empty(), "new upward imports in the core (file, module reached):\n{new:#?}");
    assert!(gone.is_empty(), "allowed upward imports that no longer exist: remove them from CORE_ALLOWED:\n{gone:#?}");
}

#[test]
fn the_scanner_sees_groups_inline_paths_and_skips_comments() {
    let code = code_of(
        "use crate::{a::X, b, c::{d, e}};\n\
         use crate::f;\n\
         let x = crate::g::h();\n\
         // use crate::comment;\n\
         $crate::macro_path; mycrate::not_this;\n\
         pub(crate) use crate::{self as me, i};",
    );
    assert_eq!(crate_paths(&code), ["a", "b", "c", "f", "g", "i"]);
}
