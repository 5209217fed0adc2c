//! `pushgate send apns|fcm|gcm|webpush|hms`: tokens from flags, a file or stdin;
//! one message; delivered through a gateway (in-process by default, or a
//! running one with `--server`); a progress bar; a summary per outcome.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::client::Client;
use super::progress::Progress;
use super::{Exit, UsageError, local, usage};

mod config;
mod every;

pub use config::CredentialArgs;

/// Where `pushgate send` delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendPlatform {
    /// Apple APNs (`[apns]`).
    Apns,
    /// Firebase Cloud Messaging HTTP v1 (`[fcm]`).
    Fcm,
    /// The legacy GCM-compatible API (`[gcm]`).
    Gcm,
    /// Web Push (`[webpush]`): subscriptions as JSON (`PushSubscription.toJSON()`).
    Webpush,
    /// Huawei Push Kit (`[hms]`).
    Hms,
}

impl SendPlatform {
    /// Its send route.
    fn path(self) -> &'static str {
        match self {
            SendPlatform::Apns => "/apns/send",
            SendPlatform::Fcm | SendPlatform::Gcm => "/gcm/send",
            SendPlatform::Webpush => "/webpush/send",
            SendPlatform::Hms => "/hms/send",
        }
    }

    /// Its report family (`/<family>/report*`).
    fn family(self) -> &'static str {
        match self {
            SendPlatform::Apns => "apns",
            SendPlatform::Fcm | SendPlatform::Gcm => "gcm",
            SendPlatform::Webpush => "webpush",
            SendPlatform::Hms => "hms",
        }
    }

    /// Its list of tokens to purge.
    fn unregistered_path(self) -> &'static str {
        match self {
            SendPlatform::Fcm | SendPlatform::Gcm => "/gcm/report/notregistered",
            SendPlatform::Apns => "/apns/report/unregistered",
            SendPlatform::Webpush => "/webpush/report/unregistered",
            SendPlatform::Hms => "/hms/report/unregistered",
        }
    }

    /// True for FCM and legacy GCM.
    fn google(self) -> bool {
        matches!(self, SendPlatform::Fcm | SendPlatform::Gcm)
    }
}

/// `pushgate send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to deliver (none with --targets-file: each target names its own).
    #[arg(value_enum, required_unless_present = "targets_file")]
    pub platform: Option<SendPlatform>,
    /// A file of `POST /send` targets, one JSON object per line
    /// (`{"apns": "<hex>"}`, `{"fcm": "<token>"}`, `{"hms": "<token>"}`,
    /// `{"webpush": {subscription}}`, each with its own `data` and `badge`
    /// if any): one message to every platform, as one job.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["platform", "tokens", "tokens_file", "subscriptions", "subscriptions_file", "stdin"])]
    pub targets_file: Option<PathBuf>,
    /// `-`: read tokens (webpush: subscription JSON) from stdin, one per line.
    #[arg(value_name = "-")]
    pub stdin: Option<String>,
    /// The gateway's TOML config (its credentials are used); flags below override it.
    #[arg(long, short, env = "PUSHGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// A device token (repeatable).
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,
    /// A file of device tokens, one per line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Web Push: one subscription as JSON `{"endpoint","keys":{"p256dh","auth"}}` (repeatable).
    #[arg(long = "subscription", value_name = "JSON")]
    pub subscriptions: Vec<String>,
    /// Web Push: a file of subscriptions, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub subscriptions_file: Option<PathBuf>,
    /// The alert text (APNs `aps.alert`; FCM, HMS notification body).
    #[arg(long)]
    pub alert: Option<String>,
    /// Notification title.
    #[arg(long)]
    pub title: Option<String>,
    /// Notification body.
    #[arg(long)]
    pub body: Option<String>,
    /// The whole payload as JSON (APNs payload; FCM data object; HMS data, an object or a string).
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// The payload from a file.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// APNs: the `apns-topic` (bundle id). FCM/GCM: send to this topic instead of tokens.
    #[arg(long)]
    pub topic: Option<String>,
    /// FCM/GCM: send to this topic condition instead of tokens.
    #[arg(long)]
    pub condition: Option<String>,
    /// APNs push type (alert, background, liveactivity, ...).
    #[arg(long)]
    pub push_type: Option<String>,
    /// Which configured app's credentials (default: the top-level section).
    #[arg(long)]
    pub app: Option<String>,
    /// Post to this running gateway instead of delivering in-process.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The running gateway's API key.
    #[arg(long, env = "PUSHGATE_API_KEY", requires = "server")]
    pub api_key: Option<String>,
    /// Sent as `Idempotency-Key`: running the same send again with the same
    /// key gets the first answer (the same job) and sends nothing twice.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Write the tokens the upstream reported unregistered here, one per line.
    #[arg(long, value_name = "FILE")]
    pub unregistered_out: Option<PathBuf>,
    /// More tokens than this go as one streamed request (NDJSON) rather
    /// than one JSON body.
    #[arg(long, default_value_t = 50_000)]
    pub chunk: usize,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

/// Runs `pushgate send`, printing the summary; returns the exit status.
pub async fn run(args: SendArgs) -> Exit {
    match send(args).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("pushgate send: {e}");
            Exit::Usage
        }
    }
}

impl SendArgs {
    /// The platform of a one-platform send (every path but
    /// `--targets-file`'s, which clap only lets through without one).
    fn platform(&self) -> SendPlatform {
        self.platform
            .expect("clap requires a platform unless --targets-file is given")
    }
}

async fn send(args: SendArgs) -> Result<Exit, UsageError> {
    if let Some(file) = &args.targets_file {
        return every::send(&args, file).await;
    }
    let targets = if args.platform() == SendPlatform::Webpush {
        read_subscriptions(&args)?
    } else {
        read_targets(&args)?
    };
    let payload = read_payload(&args)?;
    let path = args.platform().path();

    let local = match &args.server {
        Some(_) => None,
        None => Some(local::start(config::in_process_config(&args)?).await?),
    };
    let client = match (&args.server, &local) {
        (Some(url), _) => Client::new(url, args.api_key.clone())?
            .with_idempotency_key(args.idempotency_key.clone()),
        (None, Some(l)) => Client::new(&l.url, Some(l.api_key.clone()))?
            .with_idempotency_key(args.idempotency_key.clone()),
        (None, None) => return Err(usage("no gateway")),
    };
    let outcome = deliver(&args, &client, path, &targets, &payload).await;
    if let Some(l) = local {
        l.stop().await;
    }
    outcome
}

/// Device tokens, Web Push subscriptions, or one FCM topic/condition.
enum Targets {
    Tokens(Vec<String>),
    Subscriptions(Vec<Value>),
    Topic(String),
    Condition(String),
}

impl Targets {
    fn count(&self) -> usize {
        match self {
            Targets::Tokens(t) => t.len(),
            Targets::Subscriptions(s) => s.len(),
            _ => 1,
        }
    }
}

fn read_targets(args: &SendArgs) -> Result<Targets, UsageError> {
    if args.platform() == SendPlatform::Hms && args.topic.is_some() {
        return Err(usage(
            "--topic is for apns, fcm and gcm: HMS jobs go to tokens",
        ));
    }
    if args.platform().google() {
        match (&args.topic, &args.condition) {
            (Some(_), Some(_)) => return Err(usage("give --topic or --condition, not both")),
            (Some(t), None) => return Ok(Targets::Topic(t.clone())),
            (None, Some(c)) => return Ok(Targets::Condition(c.clone())),
            (None, None) => {}
        }
    } else if args.condition.is_some() {
        return Err(usage("--condition is for fcm and gcm"));
    }
    let mut tokens = args.tokens.clone();
    let mut push_lines = |reader: &mut dyn BufRead, what: &str| -> Result<(), UsageError> {
        for line in reader.lines() {
            let line = line.map_err(|e| usage(format!("reading {what}: {e}")))?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                tokens.push(line.to_owned());
            }
        }
        Ok(())
    };
    if let Some(file) = &args.tokens_file {
        let f = std::fs::File::open(file)
            .map_err(|e| usage(format!("--tokens-file {}: {e}", file.display())))?;
        push_lines(&mut std::io::BufReader::new(f), &file.display().to_string())?;
    }
    match args.stdin.as_deref() {
        Some("-") => push_lines(&mut std::io::stdin().lock(), "stdin")?,
        Some(other) => {
            return Err(usage(format!(
                "unexpected argument {other:?}: give tokens with --token, --tokens-file, or `-` for stdin"
            )));
        }
        None => {}
    }
    if tokens.is_empty() {
        return Err(usage(
            "no tokens: give --token T (repeatable), --tokens-file FILE, or `-` to read stdin",
        ));
    }
    Ok(Targets::Tokens(tokens))
}

/// Web Push subscriptions from `--subscription`, `--subscriptions-file` or
/// stdin: one JSON object per line, each with an `endpoint`.
fn read_subscriptions(args: &SendArgs) -> Result<Targets, UsageError> {
    if !args.tokens.is_empty() || args.tokens_file.is_some() {
        return Err(usage(
            "webpush takes --subscription JSON or --subscriptions-file FILE, not --token/--tokens-file",
        ));
    }
    if args.condition.is_some() {
        return Err(usage("--condition is for fcm and gcm"));
    }
    let mut lines: Vec<(String, String)> = args
        .subscriptions
        .iter()
        .map(|s| ("--subscription".to_owned(), s.clone()))
        .collect();
    let mut push_lines = |reader: &mut dyn BufRead, what: &str| -> Result<(), UsageError> {
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| usage(format!("reading {what}: {e}")))?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                lines.push((format!("{what} line {}", n + 1), line.to_owned()));
            }
        }
        Ok(())
    };
    if let Some(file) = &args.subscriptions_file {
        let f = std::fs::File::open(file)
            .map_err(|e| usage(format!("--subscriptions-file {}: {e}", file.display())))?;
        push_lines(&mut std::io::BufReader::new(f), &file.display().to_string())?;
    }
    match args.stdin.as_deref() {
        Some("-") => push_lines(&mut std::io::stdin().lock(), "stdin")?,
        Some(other) => {
            return Err(usage(format!(
                "unexpected argument {other:?}: give subscriptions with --subscription, --subscriptions-file, or `-` for stdin"
            )));
        }
        None => {}
    }
    let mut subs = Vec::with_capacity(lines.len());
    for (what, line) in lines {
        let sub: Value = serde_json::from_str(&line)
            .map_err(|e| usage(format!("{what}: not a JSON subscription: {e}")))?;
        if !sub["endpoint"].is_string() {
            return Err(usage(format!(
                "{what}: a subscription is {{\"endpoint\":…,\"keys\":{{\"p256dh\":…,\"auth\":…}}}}"
            )));
        }
        subs.push(sub);
    }
    if subs.is_empty() {
        return Err(usage(
            "no subscriptions: give --subscription JSON (repeatable), --subscriptions-file FILE, or `-` to read stdin",
        ));
    }
    Ok(Targets::Subscriptions(subs))
}

/// The message: `--payload`/`--payload-file`, or built from alert/title/body.
pub(super) struct Message {
    payload: Option<Value>,
    alert: Option<String>,
    title: Option<String>,
    body: Option<String>,
}

pub(super) fn read_payload(args: &SendArgs) -> Result<Message, UsageError> {
    let text = match (&args.payload, &args.payload_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| usage(format!("--payload-file {}: {e}", f.display())))?,
        ),
        (None, None) => None,
    };
    let payload = match text {
        Some(t) => Some(
            serde_json::from_str::<Value>(&t)
                .map_err(|e| usage(format!("the payload is not JSON: {e}")))?,
        ),
        None => None,
    };
    let m = Message {
        payload,
        alert: args.alert.clone(),
        title: args.title.clone(),
        body: args.body.clone(),
    };
    if m.payload.is_none() && m.alert.is_none() && m.title.is_none() && m.body.is_none() {
        return Err(usage(
            "no message: give --alert TEXT, --title/--body, --payload JSON or --payload-file FILE",
        ));
    }
    Ok(m)
}

/// One request body for `tokens` (or the topic/condition).
fn request_body(args: &SendArgs, m: &Message, targets: Value) -> Value {
    let mut body = targets;
    let notification = || {
        let mut n = serde_json::Map::new();
        if let Some(t) = &m.title {
            n.insert("title".into(), t.clone().into());
        }
        if let Some(b) = m.body.as_ref().or(m.alert.as_ref()) {
            n.insert("body".into(), b.clone().into());
        }
        n
    };
    if args.platform() == SendPlatform::Hms {
        if let Some(p) = &m.payload {
            body["data"] = p.clone();
        }
        let n = notification();
        if !n.is_empty() {
            body["notification"] = Value::Object(n);
        }
    } else if args.platform() == SendPlatform::Webpush {
        body["payload"] = match &m.payload {
            Some(p) => p.clone(),
            None => Value::Object(notification()),
        };
        if let Some(t) = &args.topic {
            body["topic"] = t.clone().into();
        }
    } else if args.platform().google() {
        if let Some(p) = &m.payload {
            body["payload"] = p.clone();
        }
        let n = notification();
        if !n.is_empty() {
            body["notification"] = Value::Object(n);
        }
    } else {
        body["payload"] = match &m.payload {
            Some(p) => p.clone(),
            None => match (&m.title, &m.body, &m.alert) {
                (None, None, Some(a)) => json!({"aps": {"alert": a}}),
                (t, b, a) => {
                    let mut alert = serde_json::Map::new();
                    if let Some(t) = t {
                        alert.insert("title".into(), t.clone().into());
                    }
                    if let Some(b) = b.as_ref().or(a.as_ref()) {
                        alert.insert("body".into(), b.clone().into());
                    }
                    json!({"aps": {"alert": alert}})
                }
            },
        };
        if let Some(t) = &args.topic {
            body["topic"] = t.clone().into();
        }
        if let Some(p) = &args.push_type {
            body["push_type"] = p.clone().into();
        }
    }
    if let Some(app) = &args.app {
        body["app"] = app.clone().into();
    }
    body
}

/// Sends the targets as one job: one JSON request, or (more than
/// `--chunk` of them) one streamed NDJSON request. The gateway's answer.
async fn post(
    args: &SendArgs,
    client: &Client,
    path: &str,
    targets: &Targets,
    message: &Message,
) -> Result<(u16, Value), UsageError> {
    let lines = |items: &mut dyn Iterator<Item = String>| -> Vec<bytes::Bytes> {
        let mut batches = Vec::new();
        let mut batch = String::new();
        for item in items {
            batch.push_str(&item);
            batch.push('\n');
            if batch.len() >= 64 * 1024 {
                batches.push(bytes::Bytes::from(std::mem::take(&mut batch)));
            }
        }
        batches.push(bytes::Bytes::from(batch));
        batches
    };
    let header = request_body(args, message, json!({}));
    Ok(match targets {
        Targets::Tokens(tokens) if tokens.len() > args.chunk => {
            let mut items = tokens.iter().map(|t| Value::from(t.as_str()).to_string());
            client.post_lines(path, &header, lines(&mut items)).await?
        }
        Targets::Subscriptions(subs) if subs.len() > args.chunk => {
            let mut items = subs.iter().map(Value::to_string);
            client.post_lines(path, &header, lines(&mut items)).await?
        }
        Targets::Tokens(tokens) => {
            let body = request_body(args, message, json!({ "tokens": tokens }));
            client.post(path, &body).await?
        }
        Targets::Subscriptions(subs) => {
            let body = request_body(args, message, json!({ "subscriptions": subs }));
            client.post(path, &body).await?
        }
        Targets::Topic(t) => {
            client
                .post(path, &request_body(args, message, json!({ "topic": t })))
                .await?
        }
        Targets::Condition(c) => {
            client
                .post(
                    path,
                    &request_body(args, message, json!({ "condition": c })),
                )
                .await?
        }
    })
}

/// Totals over every job of the send.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    total: u64,
    pending: u64,
    successes: u64,
    canonicals: u64,
    unregistered: u64,
    failures: u64,
    expired: u64,
    cancelled: u64,
}

async fn deliver(
    args: &SendArgs,
    client: &Client,
    path: &str,
    targets: &Targets,
    message: &Message,
) -> Result<Exit, UsageError> {
    let (status, answer) = post(args, client, path, targets, message).await?;
    if status != 202 {
        return Err(usage(format!(
            "the gateway refused the send ({status} {}): {}",
            answer["error"].as_str().unwrap_or(""),
            answer["message"].as_str().unwrap_or("no message"),
        )));
    }
    let tty = std::io::stderr().is_terminal();
    let mut progress = Progress::new(targets.count() as u64, tty);
    let jobs: Vec<String> = answer["job"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect();
    let rejected: BTreeMap<String, u64> = answer["rejected_by_reason"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    let rejected_count: u64 = rejected.values().sum();
    let totals = loop {
        let mut t = Totals::default();
        for job in &jobs {
            let s = client.get(&format!("/jobs/{job}")).await?;
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            t.total += n("total");
            t.pending += n("pending");
            t.successes += n("successes");
            t.canonicals += n("canonicals");
            t.unregistered += n("unregistered");
            t.failures += n("failures");
            t.expired += n("expired");
            t.cancelled += n("cancelled");
        }
        let done = t.total - t.pending.min(t.total) + rejected_count;
        if t.pending == 0 {
            progress.finish(done);
            break t;
        }
        progress.update(done);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let ours: Option<HashSet<String>> = match targets {
        Targets::Tokens(tokens) => Some(
            tokens
                .iter()
                .map(|t| {
                    // APNs tokens are hex, kept lower-case; the others as written.
                    if args.platform() == SendPlatform::Apns {
                        t.to_ascii_lowercase()
                    } else {
                        t.clone()
                    }
                })
                .collect(),
        ),
        Targets::Subscriptions(subs) => Some(
            subs.iter()
                .filter_map(|s| s["endpoint"].as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    };
    let family = args.platform().family();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut credential_failures = 0u64;
    if totals.failures > 0 {
        let list = client.get(&format!("/{family}/report/failures")).await?;
        for f in list["failures"].as_array().into_iter().flatten() {
            let token = f["token"].as_str().or(f["endpoint"].as_str()).unwrap_or("");
            if ours.as_ref().is_some_and(|o| !o.contains(token)) {
                continue;
            }
            *reasons
                .entry(f["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            let status = f["status"].as_u64().unwrap_or(0);
            if status == 401 || status == 403 || f["reason"] == "AccessTokenRefused" {
                credential_failures += 1;
            }
        }
    }
    let mut unregistered_tokens = Vec::new();
    if totals.unregistered > 0 {
        let list = client.get(args.platform().unregistered_path()).await?;
        let entries = list["tokens"]
            .as_array()
            .or(list["subscriptions"].as_array());
        for t in entries.into_iter().flatten() {
            let token = t
                .as_str()
                .or_else(|| t["token"].as_str())
                .or_else(|| t["endpoint"].as_str())
                .unwrap_or("");
            if ours.as_ref().is_none_or(|o| o.contains(token)) {
                unregistered_tokens.push(token.to_owned());
            }
        }
    }
    if let Some(out) = &args.unregistered_out {
        let mut text = unregistered_tokens.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(out, text)
            .map_err(|e| usage(format!("--unregistered-out {}: {e}", out.display())))?;
    }
    print_summary(&totals, &reasons, &rejected, rejected_count, &jobs);
    if let Some(out) = &args.unregistered_out {
        println!(
            "{} unregistered tokens written to {}",
            unregistered_tokens.len(),
            out.display()
        );
    }
    let delivered = totals.successes + totals.canonicals;
    if totals.failures > 0 && credential_failures == totals.failures && delivered == 0 {
        eprintln!(
            "pushgate send: the upstream refused the credentials ({}); nothing was delivered",
            reasons.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(Exit::Usage);
    }
    Ok(if delivered == totals.total && rejected_count == 0 {
        Exit::Ok
    } else {
        Exit::SomeFailed
    })
}

pub(super) fn print_summary(
    t: &Totals,
    reasons: &BTreeMap<String, u64>,
    rejected: &BTreeMap<String, u64>,
    rejected_count: u64,
    jobs: &[String],
) {
    let detail = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("  ({})", parts.join(", "))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{:<14} {:>10}", "outcome", "tokens");
    let rows: [(&str, u64, String); 7] = [
        ("success", t.successes, String::new()),
        ("canonical", t.canonicals, String::new()),
        ("unregistered", t.unregistered, String::new()),
        ("failed", t.failures, detail(reasons)),
        ("expired", t.expired, String::new()),
        ("cancelled", t.cancelled, String::new()),
        ("rejected", rejected_count, detail(rejected)),
    ];
    for (name, n, extra) in rows {
        let _ = writeln!(out, "{name:<14} {n:>10}{extra}");
    }
    let _ = writeln!(out, "{:<14} {:>10}", "total", t.total + rejected_count);
    let _ = writeln!(out, "jobs: {}", jobs.join(" "));
}
