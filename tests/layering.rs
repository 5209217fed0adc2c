//! The import rules of the crate, read from `src/` (no build trick, no
//! network): a module knows the floor below it, never above. See
//! `docs/architecture.md`, section "Layers".
//!
//! - delivery (every platform: a top-level module with an `impl Deliver for`)
//!   never imports `api`;
//! - the queue backends (`queue`) never import a platform, `report` or `api`;
//! - `report` never imports `queue` or a platform;
//! - platforms never import each other;
//! - the mocks never import the clients (any platform);
//! - `job.rs` imports nothing of ours but the shared floor (`floor`);
//! - the gRPC front (`grpc`) is a front over the HTTP API: it imports the
//!   API, the listener and the metrics, never a store, the queue or a
//!   platform.
//!
//! What it leaves out: paths written as `super::super::…` across top-level
//! modules, and macros that expand to imports (neither is used here).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/apns/pool.rs` → `apns`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a source text names through `crate::`, including
/// grouped imports (`use crate::{a::X, b};`). Line comments are skipped.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // `pushgate_crate::` or `my_crate::` are not ours.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                if depth == 0 && c != ',' && c != '}' {
                    item.push(c);
                }
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

struct Crate {
    /// Per top-level module: every file and what it imports.
    modules: BTreeMap<String, Vec<(PathBuf, BTreeSet<String>)>>,
    platforms: BTreeSet<String>,
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    assert!(all.len() > 20, "src/ looks empty: {all:?}");
    let mut modules: BTreeMap<String, Vec<(PathBuf, BTreeSet<String>)>> = BTreeMap::new();
    let mut platforms = BTreeSet::new();
    for file in all {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let module = module_of(&src, &file);
        if text.contains("impl Deliver for") && module != "delivery" {
            platforms.insert(module.clone());
        }
        modules
            .entry(module)
            .or_default()
            .push((file, crate_imports(&text)));
    }
    Crate { modules, platforms }
}

/// Every `(file, imported module)` of `module` that is in `forbidden`.
fn violations(c: &Crate, module: &str, forbidden: &BTreeSet<String>) -> Vec<String> {
    c.modules
        .get(module)
        .into_iter()
        .flatten()
        .flat_map(|(file, imports)| {
            imports
                .intersection(forbidden)
                .map(move |m| format!("{} imports crate::{m}", file.display()))
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_scanner_reads_grouped_and_plain_imports() {
    let found = crate_imports(
        "use crate::a::X;\nuse crate::{b::{C, D}, e};\n// use crate::commented;\nlet x = my_crate::f;",
    );
    assert_eq!(found, set(&["a", "b", "e"]));
}

#[test]
fn platforms_are_found() {
    let c = read_crate();
    for expected in ["apns", "fcm"] {
        assert!(c.platforms.contains(expected), "{:?}", c.platforms);
    }
}

#[test]
fn modules_import_only_downwards() {
    let c = read_crate();
    let mut bad = Vec::new();
    for platform in &c.platforms {
        bad.extend(violations(&c, platform, &set(&["api"])));
        let others: BTreeSet<String> = c
            .platforms
            .iter()
            .filter(|p| *p != platform)
            .cloned()
            .collect();
        bad.extend(violations(&c, platform, &others));
    }
    let mut above_queue = c.platforms.clone();
    above_queue.extend(set(&["report", "api"]));
    bad.extend(violations(&c, "queue", &above_queue));
    let mut above_report = c.platforms.clone();
    above_report.insert("queue".to_owned());
    bad.extend(violations(&c, "report", &above_report));
    bad.extend(violations(&c, "mock", &c.platforms));
    let job_imports: BTreeSet<String> = c.modules["job"]
        .iter()
        .flat_map(|(_, i)| i.iter().cloned())
        .collect();
    for m in job_imports.difference(&set(&["floor"])) {
        bad.push(format!(
            "src/job.rs imports crate::{m}: only the floor is allowed"
        ));
    }
    let grpc_imports: BTreeSet<String> = c.modules["grpc"]
        .iter()
        .flat_map(|(_, i)| i.iter().cloned())
        .collect();
    for m in grpc_imports.difference(&set(&["grpc", "api", "listener", "metrics"])) {
        bad.push(format!(
            "src/grpc imports crate::{m}: the gRPC front may use only the API, the listener and the metrics"
        ));
    }
    assert!(
        bad.is_empty(),
        "imports across the layers:\n{}",
        bad.join("\n")
    );
}
