//! Docs that cannot rot: what the code accepts, serves and exports is named
//! in the manual, and each test fails naming what is missing.
//!
//! - every config key the loader accepts is in `docs/configuration.md` and in
//!   the annotated example `config/pushgate.toml`, and every key the example
//!   shows is one the loader accepts (the example goes through the loader);
//! - every route the HTTP routers serve is in `docs/api.md`, as "`METHOD /path`";
//! - every metric the gateway exports is in `docs/operations.md`;
//! - every relative link of the README and `docs/` leads to a file and a
//!   heading that exist (pages move; links must follow).
//!
//! What it leaves out: whether what the docs say about a name is right (a
//! person reads that), and the defaults in the example config
//! (`scripts/check-deploy` compares those with `check-config`'s output). The
//! routes come from the API's route table (see [`served_routes`]); the metric reader
//! sees names written whole as string literals under `src/`, checked against
//! what a fresh registry renders (see [`metric_names`]).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pushgate::config::{
    ApnsSection, FcmSection, FileConfig, GcmSection, HmsSection, WebPushSection, WebhookSection,
};

/// What an app table is called in the docs and the derived key list.
const APP: &str = "<name>";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// True when `text` names `word` whole: not as part of a longer identifier
/// (`pushgate_webhook_sent` is not named by `pushgate_webhook_sent_total`).
fn names(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn report(what: &str, missing: &[String]) {
    assert!(
        missing.is_empty(),
        "{what} ({}):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

// ===== config keys =====

/// One `[<platform>.apps.<name>]` table with its section's defaults.
fn one_app<T: Default>() -> BTreeMap<String, T> {
    BTreeMap::from([(APP.to_owned(), T::default())])
}

/// Every key the loader accepts, as `section.key`, derived from the code: a
/// `FileConfig` with every optional section present and one app per platform
/// that takes `[<platform>.apps.<name>]`, serialized through serde (so a field
/// added to a section is here without touching this test). An app table is
/// one entry, `<platform>.apps.<name>`: its keys are its section's.
fn config_keys() -> BTreeSet<String> {
    let full = FileConfig {
        apns: Some(ApnsSection {
            apps: one_app(),
            ..ApnsSection::default()
        }),
        fcm: Some(FcmSection {
            apps: one_app(),
            ..FcmSection::default()
        }),
        gcm: Some(GcmSection {
            apps: one_app(),
            ..GcmSection::default()
        }),
        webpush: Some(WebPushSection {
            apps: one_app(),
            ..WebPushSection::default()
        }),
        hms: Some(HmsSection {
            apps: one_app(),
            ..HmsSection::default()
        }),
        webhook: Some(WebhookSection::default()),
        ..FileConfig::default()
    };
    let table = toml::Table::try_from(&full).unwrap();
    let mut keys = BTreeSet::new();
    for (section, value) in &table {
        let toml::Value::Table(section_table) = value else {
            panic!("[{section}] is not a table");
        };
        for (key, value) in section_table {
            if key == "apps" && value.is_table() {
                for name in value.as_table().unwrap().keys() {
                    keys.insert(format!("{section}.apps.{name}"));
                }
            } else {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

/// `config/pushgate.toml` with every commented key and section enabled:
/// `# [apns]` and `# key = value` lose their `# ` (comments inside commented
/// sections are written `# # …` and stay comments). Prose lines are dropped;
/// what is left is the sections and their `key = value` lines, as TOML.
fn example_enabled() -> String {
    let text = read("config/pushgate.toml");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.strip_prefix("# ") {
            Some(rest) if !rest.starts_with('#') => rest,
            _ => line,
        };
        let header = line.starts_with('[') && line.trim_end().ends_with(']');
        let assignment = line
            .split_once('=')
            .map(|(k, _)| k.trim())
            .is_some_and(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if header || assignment {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The keys `config/pushgate.toml` shows (commented ones included), named as
/// in [`config_keys`]: `[apns.apps.watch]` shows `apns.apps.<name>`, and its
/// own keys are checked against `[apns]`'s.
fn example_keys() -> (BTreeSet<String>, Vec<String>) {
    let table: toml::Table = example_enabled()
        .parse()
        .unwrap_or_else(|e| panic!("config/pushgate.toml, keys uncommented, is not TOML: {e}"));
    let mut shown = BTreeSet::new();
    let mut app_keys = Vec::new();
    for (section, value) in &table {
        let Some(section_table) = value.as_table() else {
            continue;
        };
        for (key, value) in section_table {
            match value.as_table() {
                Some(apps) if key == "apps" => {
                    for (name, app) in apps {
                        shown.insert(format!("{section}.apps.{APP}"));
                        for app_key in app.as_table().into_iter().flat_map(|t| t.keys()) {
                            app_keys.push(format!("{section}.apps.{name}.{app_key}"));
                        }
                    }
                }
                _ => {
                    shown.insert(format!("{section}.{key}"));
                }
            }
        }
    }
    (shown, app_keys)
}

#[test]
fn every_config_key_is_in_the_docs_and_the_annotated_example() {
    let keys = config_keys();
    assert!(
        keys.len() >= 60,
        "too few keys derived ({}): {keys:?}",
        keys.len()
    );

    let doc = read("docs/configuration.md");
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .map(|k| format!("`{k}`"))
        .collect();
    report(
        "config keys the loader accepts but docs/configuration.md does not name (write them in backticks)",
        &missing,
    );

    let (shown, app_keys) = example_keys();
    let missing: Vec<String> = keys.difference(&shown).cloned().collect();
    report(
        "config keys the loader accepts but config/pushgate.toml does not show (commented is fine)",
        &missing,
    );
    let unknown: Vec<String> = shown.difference(&keys).cloned().collect();
    report(
        "keys in config/pushgate.toml that the loader does not accept",
        &unknown,
    );
    let unknown: Vec<String> = app_keys
        .into_iter()
        .filter(|k| {
            let mut parts = k.split('.');
            let (section, key) = (parts.next().unwrap(), parts.nth(2).unwrap());
            key == "apps" || !keys.contains(&format!("{section}.{key}"))
        })
        .collect();
    report(
        "keys of app tables in config/pushgate.toml that their section does not take",
        &unknown,
    );

    // The loader itself, on the example with everything enabled: catches a
    // value of the wrong type, and anything the list above could miss.
    if let Err(e) = FileConfig::parse(
        &example_enabled(),
        "config/pushgate.toml (every key uncommented)",
        Vec::new(),
    ) {
        panic!("the loader refuses the annotated example: {e}");
    }
}

// ===== routes =====

/// Every route the API serves, from its route table
/// (`pushgate::api::route_table`, which tests/openapi.rs checks against the
/// running router), gorush's at the default prefix.
fn served_routes() -> BTreeSet<(String, String)> {
    pushgate::api::route_table(
        pushgate::platforms::CATALOG,
        &pushgate::api::gorush::GorushSection::default(),
    )
    .into_iter()
    .map(|r| (r.method.to_uppercase(), r.path))
    .collect()
}

#[test]
fn every_route_is_in_the_api_docs() {
    let routes = served_routes();
    for must in [
        ("GET", "/healthz"),
        ("POST", "/api/push"),
        ("GET", "/jobs/{id}"),
    ] {
        assert!(
            routes.contains(&(must.0.to_owned(), must.1.to_owned())),
            "the route reader missed {must:?} (found {routes:?}): fix served_routes"
        );
    }
    let doc = read("docs/api.md");
    let missing: Vec<String> = routes
        .iter()
        .map(|(m, p)| format!("`{m} {p}`"))
        .filter(|named| !doc.contains(named.as_str()))
        .collect();
    report(
        "routes the routers serve but docs/api.md does not name (write each as `METHOD /path`)",
        &missing,
    );
}

// ===== metrics =====

/// Every metric name the gateway exports: each `"pushgate_…"` string literal
/// under `src/` (metrics are registered by name in `src/metrics.rs`; a
/// platform adding its own is found wherever it writes it), checked against
/// a fresh registry's rendering, so a name built at run time (which the
/// source scan cannot see) fails here rather than going unnoticed. The
/// rendering alone cannot be the list: a labelled metric appears in it only
/// once it has a series.
fn metric_names() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut names = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for (i, _) in source.match_indices("\"pushgate_") {
            let name: String = source[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if source[i + 1 + name.len()..].starts_with('"') {
                names.insert(name);
            }
        }
    }
    let rendered = pushgate::metrics::Metrics::new().unwrap().render().unwrap();
    let unseen: Vec<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !names.contains(*name))
        .map(str::to_owned)
        .collect();
    report(
        "metrics a fresh registry renders that are not written as string literals under src/ (teach metric_names to find them)",
        &unseen,
    );
    names
}

// ===== links =====

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces to `-` (repeats get `-1`, `-2`, … in order).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A Markdown text without its fenced code blocks (`# comment` lines in a
/// shell block are not headings, `[x](y)` in code is not a link).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The anchors a Markdown file offers: its headings, and `<a id="…">`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text).lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let s = slug(&line[hashes..]);
            let n = seen.entry(s.clone()).or_insert(0);
            out.insert(if *n == 0 {
                s.clone()
            } else {
                format!("{s}-{n}")
            });
            *n += 1;
        }
    }
    for (i, _) in text.match_indices("<a id=\"") {
        let rest = &text[i + "<a id=\"".len()..];
        if let Some((id, _)) = rest.split_once('"') {
            out.insert(id.to_owned());
        }
    }
    out
}

/// The README and every page under `docs/`: each relative link names a file
/// that exists, and each `#anchor` one its target has. External links are
/// not followed.
#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut pages = vec![root().join("README.md")];
    let mut stack = vec![root().join("docs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    assert!(pages.len() >= 12, "too few pages found: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = prose(&std::fs::read_to_string(page).unwrap());
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(link) = rest.split([')', ' ']).next() else {
                continue;
            };
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                broken.push(format!("{name}: {link} (no such file)"));
            } else if !anchor.is_empty()
                && target.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&target).unwrap()).contains(anchor)
            {
                broken.push(format!("{name}: {link} (no such heading)"));
            }
        }
    }
    report("links in the docs that lead nowhere", &broken);
}

#[test]
fn every_metric_is_in_the_operations_docs() {
    let metrics = metric_names();
    assert!(metrics.len() >= 20, "too few metrics found: {metrics:?}");
    let doc = read("docs/operations.md");
    let missing: Vec<String> = metrics
        .iter()
        .filter(|m| !names(&doc, m))
        .cloned()
        .collect();
    report(
        "metrics the gateway exports but docs/operations.md does not name",
        &missing,
    );
}
