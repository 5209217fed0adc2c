//! `pushgate send --targets-file FILE.jsonl`: one message to targets of
//! every platform through `POST /send`, as one job. Each line is a target
//! as `/send` takes it; the message comes from the same flags as a
//! one-platform send (`--title`, `--body`/`--alert` → `notification`,
//! `--payload` → the shared `data`, `--topic`/`--push-type` → the `apns`
//! block).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Exit, Message, SendArgs, Totals, UsageError, print_summary, read_payload, usage};
use crate::config::FileConfig;
use crate::terminal::client::Client;
use crate::terminal::local;
use crate::terminal::progress::Progress;

/// Sends every target of `file` as one `POST /send`.
pub(super) async fn send(args: &SendArgs, file: &Path) -> Result<Exit, UsageError> {
    if args.unregistered_out.is_some() {
        return Err(usage(
            "--unregistered-out is for one-platform sends; after a --targets-file send read GET /<platform>/report/unregistered",
        ));
    }
    let targets = read_targets(file)?;
    let message = read_payload(args)?;
    let body = request_body(args, &message, targets.clone())?;

    let local = match &args.server {
        Some(_) => None,
        None => {
            let config = match &args.config {
                Some(path) => FileConfig::load(Some(path), std::env::vars())
                    .map_err(|e| usage(format!("{}: {e}", path.display())))?,
                None => {
                    FileConfig::load(None, std::env::vars()).map_err(|e| usage(e.to_string()))?
                }
            };
            Some(local::start(config).await?)
        }
    };
    let client = match (&args.server, &local) {
        (Some(url), _) => Client::new(url, args.api_key.clone())?,
        (None, Some(l)) => Client::new(&l.url, Some(l.api_key.clone()))?,
        (None, None) => return Err(usage("no gateway")),
    }
    .with_idempotency_key(args.idempotency_key.clone());
    let outcome = deliver(&client, &body, targets.len() as u64).await;
    if let Some(l) = local {
        l.stop().await;
    }
    outcome
}

/// The targets of `file`: one JSON object per line (blank lines and `#`
/// comments skipped).
fn read_targets(file: &Path) -> Result<Vec<Value>, UsageError> {
    let f = std::fs::File::open(file)
        .map_err(|e| usage(format!("--targets-file {}: {e}", file.display())))?;
    let mut targets = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let target: Value = serde_json::from_str(line).map_err(|e| {
            usage(format!(
                "{} line {}: not a JSON target: {e}",
                file.display(),
                n + 1
            ))
        })?;
        if !target.is_object() {
            return Err(usage(format!(
                "{} line {}: a target is an object such as {{\"apns\": \"<hex token>\"}}",
                file.display(),
                n + 1
            )));
        }
        targets.push(target);
    }
    if targets.is_empty() {
        return Err(usage(format!("{}: no targets", file.display())));
    }
    Ok(targets)
}

/// The `/send` body: the targets and the message from the flags.
fn request_body(args: &SendArgs, m: &Message, targets: Vec<Value>) -> Result<Value, UsageError> {
    let mut body = json!({ "targets": targets });
    let mut notification = Map::new();
    if let Some(t) = &m.title {
        notification.insert("title".into(), t.clone().into());
    }
    if let Some(b) = m.body.as_ref().or(m.alert.as_ref()) {
        notification.insert("body".into(), b.clone().into());
    }
    if !notification.is_empty() {
        body["notification"] = Value::Object(notification);
    }
    match &m.payload {
        None => {}
        Some(Value::Object(data)) => body["data"] = Value::Object(data.clone()),
        Some(_) => {
            return Err(usage(
                "with --targets-file, --payload is the shared data: a JSON object",
            ));
        }
    }
    let mut apns = Map::new();
    if let Some(t) = &args.topic {
        apns.insert("topic".into(), t.clone().into());
    }
    if let Some(p) = &args.push_type {
        apns.insert("push_type".into(), p.clone().into());
    }
    if !apns.is_empty() {
        body["apns"] = Value::Object(apns);
    }
    if let Some(app) = &args.app {
        body["app"] = app.clone().into();
    }
    Ok(body)
}

async fn deliver(client: &Client, body: &Value, count: u64) -> Result<Exit, UsageError> {
    let (status, answer) = client.post("/send", body).await?;
    if status != 202 {
        return Err(usage(format!(
            "the gateway refused the send ({status} {}): {}",
            answer["error"].as_str().unwrap_or(""),
            answer["message"].as_str().unwrap_or("no message"),
        )));
    }
    let job = answer["job"].as_str().unwrap_or_default().to_owned();
    let rejected: BTreeMap<String, u64> = answer["rejected_by_reason"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    let rejected_count: u64 = rejected.values().sum();
    let mut progress = Progress::new(count, std::io::stderr().is_terminal());
    let (totals, status) = loop {
        let s = client.get(&format!("/jobs/{job}")).await?;
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let t = Totals {
            total: n("total"),
            pending: n("pending"),
            successes: n("successes"),
            canonicals: n("canonicals"),
            unregistered: n("unregistered"),
            failures: n("failures"),
            expired: n("expired"),
            cancelled: n("cancelled"),
        };
        let done = t.total - t.pending.min(t.total) + rejected_count;
        if t.pending == 0 {
            progress.finish(done);
            break (t, s);
        }
        progress.update(done);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print_summary(&totals, &BTreeMap::new(), &rejected, rejected_count, &[job]);
    for (platform, part) in status["by_platform"].as_object().into_iter().flatten() {
        let n = |k: &str| part[k].as_u64().unwrap_or(0);
        println!(
            "{platform:<14} {:>10} sent, {} delivered, {} unregistered, {} failed",
            n("total"),
            n("successes") + n("canonicals"),
            n("unregistered"),
            n("failures")
        );
    }
    let delivered = totals.successes + totals.canonicals;
    Ok(if delivered == totals.total && rejected_count == 0 {
        Exit::Ok
    } else {
        Exit::SomeFailed
    })
}
