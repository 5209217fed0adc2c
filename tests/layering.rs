//! The import rules of the crate, read from `src/` (no build trick, no
//! network): a module knows the floor below it, never above. See
//! `docs/architecture.md`, section "Layers".
//!
//! The layers, bottom up (each may import the ones below it):
//!
//! - the floor: `floor`, `job`, `books`, `message`, `settings` (the nouns,
//!   imports nothing above them);
//! - mechanism: `retry`, `pace`, `tls`, `http2`, `upstream`, `schedule`,
//!   `shared_credential`, `oauth` (the cached access token of FCM and HMS),
//!   `shared` (the Redis link, credentials, quota), `queue`, `outcome`,
//!   `listener`;
//! - sinks: `report`, `metrics`, `webhook`;
//! - `store` (the stores, under one seam) and `platform` (the platform
//!   seam: registry, lanes, request reading);
//! - `backend` (over a store and the registry);
//! - the platforms (every top-level module with an `impl Front for`): each
//!   knows the floor, the mechanism, `metrics` and `platform`, never another
//!   platform, a store, the backend, the reports, the API or the config;
//! - the fronts: `api`, over the backend and the registry; `grpc`, a
//!   front over the HTTP API (it imports the API, the listener and the
//!   metrics, never a store, the queue or a platform);
//! - the process: `config`, `platforms` (the registration list),
//!   `gateway`, `demo`, `abandon`, `terminal`, `logging`: nothing below
//!   imports them.
//!
//! Also: the mocks never import a client; only the stores and the gateway
//! name a store's module (`store::disk`, `store::redis`, `store::memory`);
//! and no import cycle crosses top-level modules.
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
        if text.contains("impl Front for") && module != "platform" {
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

const FLOOR: &[&str] = &["floor", "job", "books", "message", "settings"];
const MECHANISM: &[&str] = &[
    "retry",
    "pace",
    "tls",
    "http2",
    "upstream",
    "schedule",
    "shared_credential",
    "oauth",
    "shared",
    "queue",
    "outcome",
    "listener",
];
const SINKS: &[&str] = &["report", "metrics", "webhook"];
const PROCESS: &[&str] = &[
    "config",
    "platforms",
    "gateway",
    "demo",
    "abandon",
    "terminal",
    "logging",
];

fn union(parts: &[&[&str]]) -> BTreeSet<String> {
    parts.iter().flat_map(|p| set(p)).collect()
}

/// Every `(file, imported module)` of `module` that is not in `allowed` (nor itself).
fn outside(c: &Crate, module: &str, allowed: &BTreeSet<String>) -> Vec<String> {
    c.modules
        .get(module)
        .into_iter()
        .flatten()
        .flat_map(|(file, imports)| {
            imports
                .iter()
                .filter(|m| *m != module && !allowed.contains(*m))
                .map(move |m| format!("{} imports crate::{m}", file.display()))
        })
        .collect()
}

#[test]
fn platforms_are_found() {
    let c = read_crate();
    for expected in ["apns", "fcm", "webpush", "hms"] {
        assert!(c.platforms.contains(expected), "{:?}", c.platforms);
    }
}

#[test]
fn modules_import_only_downwards() {
    let c = read_crate();
    let mut bad = Vec::new();
    let floor = union(&[FLOOR]);
    for m in FLOOR {
        bad.extend(outside(&c, m, &floor));
    }
    // Tests of the mechanism may start a mock upstream.
    let mechanism = union(&[FLOOR, MECHANISM, &["mock"]]);
    for m in MECHANISM {
        bad.extend(outside(&c, m, &mechanism));
    }
    let sinks = union(&[FLOOR, MECHANISM, &["metrics"]]);
    for m in SINKS {
        bad.extend(outside(&c, m, &sinks));
    }
    bad.extend(outside(
        &c,
        "platform",
        &union(&[FLOOR, MECHANISM, &["metrics"]]),
    ));
    bad.extend(outside(
        &c,
        "store",
        &union(&[FLOOR, MECHANISM, &["platform"]]),
    ));
    bad.extend(outside(
        &c,
        "backend",
        &union(&[FLOOR, MECHANISM, SINKS, &["store", "platform"]]),
    ));
    let platform_deps = union(&[FLOOR, MECHANISM, &["metrics", "platform", "mock"]]);
    for p in &c.platforms {
        bad.extend(outside(&c, p, &platform_deps));
    }
    let mut front = union(&[
        FLOOR,
        MECHANISM,
        SINKS,
        &["store", "platform", "backend", "api"],
    ]);
    front.extend(c.platforms.iter().cloned());
    bad.extend(outside(&c, "api", &front));
    bad.extend(outside(&c, "grpc", &set(&["api", "listener", "metrics"])));
    bad.extend(outside(&c, "mock", &union(&[&["floor", "tls"]])));
    // Nothing below the process imports it.
    let process = set(PROCESS);
    for module in c.modules.keys() {
        if !process.contains(module) && module != "main" && module != "lib" {
            bad.extend(violations(&c, module, &process));
        }
    }
    assert!(
        bad.is_empty(),
        "imports across the layers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_the_stores_and_the_gateway_name_a_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut bad = Vec::new();
    for file in all {
        let module = module_of(&src, &file);
        if module == "store" || module == "gateway" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for inside in ["store::disk", "store::redis", "store::memory"] {
            if text.contains(inside) {
                bad.push(format!("{} names {inside}", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn no_import_cycle_crosses_modules() {
    let c = read_crate();
    let graph: BTreeMap<&str, BTreeSet<&str>> = c
        .modules
        .iter()
        .map(|(m, files)| {
            let deps = files
                .iter()
                .flat_map(|(_, imports)| imports.iter().map(String::as_str))
                .filter(|d| *d != m.as_str() && c.modules.contains_key(*d))
                .collect();
            (m.as_str(), deps)
        })
        .collect();
    // A module is on a cycle when it can reach itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = graph[start].iter().copied().collect();
        while let Some(m) = todo.pop() {
            if m == *start {
                cycles.push(*start);
                break;
            }
            if seen.insert(m) {
                todo.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
    }
    assert!(cycles.is_empty(), "modules on an import cycle: {cycles:?}");
}
