//! `pushgate demo`: everything on one machine with no credentials. Starts the
//! mock upstreams on free ports with a fresh PKI and keys, a gateway wired to
//! them exactly as production would be (same code paths, only endpoints and
//! credentials differ), sends a sample job, prints the reports, and keeps
//! serving for curl.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::{ApnsSection, FileConfig};
use crate::gateway::Gateway;
use crate::logging::SetLogFilter;
use crate::mock;

mod hms;
mod webpush;

/// `pushgate demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Tokens in the sample APNs job.
    #[arg(long, default_value_t = 2000)]
    pub tokens: usize,
    /// Exit after the sample job instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Which Google API the demo gateway uses: FCM HTTP v1 or the legacy multicast API.
    #[arg(long, value_enum, default_value_t = GoogleApi::Fcm)]
    pub google: GoogleApi,
    /// Also serve gRPC here (`[grpc] listen`, e.g. 127.0.0.1:9090); off when not given.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
}

/// The Google API of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GoogleApi {
    /// FCM HTTP v1 with a generated service account.
    Fcm,
    /// Legacy GCM-compatible multicast with a server key.
    Gcm,
}

/// Sample Android tokens: opaque strings, with the mock's outcome prefixes mixed in.
pub fn sample_google_tokens(n: usize) -> Vec<String> {
    let mut tokens: Vec<String> = (0..n)
        .map(|i| match i {
            i if i % 50 == 7 => format!("unregistered-{i}"),
            i if i % 97 == 5 => format!("invalid-{i}"),
            i if i % 40 == 3 => format!("canonical-{i}"),
            i if i % 31 == 2 => format!("flaky-{i}"),
            _ => format!("device-{i}:APA91b"),
        })
        .collect();
    tokens.push("has a space".into());
    tokens
}

/// The sample tokens: mostly deliverable, with every interesting outcome mixed in
/// (see the mock's outcome table).
pub fn sample_apns_tokens(n: usize) -> Vec<String> {
    let mut tokens: Vec<String> = (0..n)
        .map(|i| {
            let prefix = match i {
                i if i % 50 == 7 => "dead", // 410 Unregistered
                i if i % 97 == 5 => "bad0", // 400 BadDeviceToken
                i if i % 31 == 3 => "f1a0", // 503 once, then delivered
                _ => "abcd",
            };
            format!("{prefix}{i:060x}")
        })
        .collect();
    // Refused at the API, never queued.
    tokens.push("not-a-hex-token".into());
    tokens.push("abc".into());
    tokens
}

/// Creates `dir` readable by its owner only (0700), or makes it so.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file only its owner can read (0600): the demo's keys are keys.
pub(crate) fn private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An older file of that name keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

/// Runs the demo. `set_filter`, when given, raises the log filter to `info`
/// once the narrative is told (its lines are not interleaved with log
/// lines; the curl calls that follow are logged as a gateway logs them).
pub async fn run(args: DemoArgs, set_filter: Option<SetLogFilter>) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("pushgate-demo-{}", std::process::id()));
    private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = mock::tls::TestPki::generate()?;
    let (p8, public_key_pem) = mock::apns::generate_provider_key()?;
    let (key_id, team_id) = ("DEMOKEY001", "DEMOTEAM01");
    let apns_auth = mock::apns::ApnsAuthCheck::Token {
        team_id: team_id.into(),
        key_id: key_id.into(),
        public_key_pem,
    };
    let apns_mock = mock::apns::start(mock::apns::MockApnsOptions::new(apns_auth, &pki)).await?;
    let write = |name: &str, contents: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        private_file(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let ca_file = write("mock-ca.pem", &pki.ca_pem)?;
    let key_file = write(&format!("AuthKey_{key_id}.p8"), &p8)?;

    let account = mock::fcm::ServiceAccountFixture::generate("pushgate-demo")?;
    let server_key = "demo-server-key";
    let fcm_mock =
        mock::fcm::start(mock::fcm::MockFcmOptions::new(&account, server_key, &pki)).await?;
    let account_file = write(
        "service-account.json",
        &account.to_json(&format!("{}/token", fcm_mock.url())),
    )?;

    let mut file = FileConfig::default();
    file.server.listen = args.listen.to_string();
    if let Some(grpc) = args.grpc_listen {
        file.grpc.listen = grpc.to_string();
    }
    // The default disk backend, in the demo's own temporary directory
    // (removed at exit), so the demo never touches ./pushgate-data.
    file.queue.data_dir = dir.join("data").display().to_string();
    file.apns = Some(ApnsSection {
        endpoint: apns_mock.url(),
        ca_file: ca_file.display().to_string(),
        topic: "com.example.demo".into(),
        key_file: key_file.display().to_string(),
        key_id: key_id.into(),
        team_id: team_id.into(),
        ..ApnsSection::default()
    });
    match args.google {
        GoogleApi::Fcm => {
            file.fcm = Some(crate::config::FcmSection {
                service_account_file: account_file.display().to_string(),
                endpoint: fcm_mock.url(),
                ca_file: ca_file.display().to_string(),
                ..Default::default()
            })
        }
        GoogleApi::Gcm => {
            file.gcm = Some(crate::config::GcmSection {
                server_key: crate::config::Secret::new(server_key),
                endpoint: format!("{}/fcm/send", fcm_mock.url()),
                ca_file: ca_file.display().to_string(),
                ..Default::default()
            })
        }
    }
    let push_mock = webpush::setup(&dir, &pki, &ca_file, &mut file).await?;
    let hms_mock = hms::setup(&dir, &pki, &ca_file, &mut file).await?;
    let config = file.validate()?;
    let gateway = Gateway::start(&config).await?;
    let base = gateway.url();
    println!(
        "pushgate demo: gateway on {base}, mock APNs on {}",
        apns_mock.url()
    );

    let client = reqwest::Client::new();
    let tokens = sample_apns_tokens(args.tokens);
    let started = Instant::now();
    let answer: Value = client
        .post(format!("{base}/apns/send"))
        .json(
            &json!({ "tokens": tokens, "payload": { "aps": { "alert": "Hello from pushgate" } } }),
        )
        .send()
        .await
        .context("posting the sample job")?
        .json()
        .await?;
    let accepted = answer["accepted"].as_u64().unwrap_or(0);
    println!(
        "\nPOST /apns/send ({} tokens) -> 202 {}",
        tokens.len(),
        compact(&answer, 300)
    );

    let reports = gateway.state.backend.reports();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reports.family(crate::apns::FAMILY).counters().pending > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let report: Value = client
        .get(format!("{base}/apns/report"))
        .send()
        .await?
        .json()
        .await?;
    println!("GET /apns/report -> {report}");
    let unregistered: Value = client
        .get(format!("{base}/apns/report/unregistered"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /apns/report/unregistered -> {} tokens, e.g. {}",
        unregistered["tokens"].as_array().map_or(0, Vec::len),
        compact(&unregistered["tokens"][0], 200)
    );
    let failures: Value = client
        .get(format!("{base}/apns/report/failures"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /apns/report/failures -> {} tokens, e.g. {}",
        failures["failures"].as_array().map_or(0, Vec::len),
        compact(&failures["failures"][0], 200)
    );
    println!(
        "\n{accepted} tokens reached an outcome in {:.0} ms ({:.0} tokens/s, including the deliberate 503-then-retry tokens' backoff)",
        took.as_secs_f64() * 1000.0,
        accepted as f64 / took.as_secs_f64().max(1e-9)
    );
    println!(
        "mock APNs ledger: {} requests, {} distinct provider tokens (reused, as Apple requires)",
        apns_mock
            .ledger
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        apns_mock.ledger.distinct_credentials()
    );

    // The Android half, sent exactly as a GoCM user's curl does: a form with
    // repeated `tokens` and `payload` as a JSON string.
    let google_tokens = sample_google_tokens(args.tokens);
    let mut form = String::new();
    for t in &google_tokens {
        form.push_str("tokens=");
        form.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        form.push('&');
    }
    form.push_str("payload=");
    form.extend(form_urlencoded::byte_serialize(
        br#"{"title":"Hello from pushgate","count":3}"#,
    ));
    let started = Instant::now();
    let answer: Value = client
        .post(format!("{base}/gcm/send"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .context("posting the sample Android job")?
        .json()
        .await?;
    let accepted = answer["accepted"].as_u64().unwrap_or(0);
    println!(
        "\nPOST /gcm/send (GoCM form, {} tokens) -> 202 {}",
        google_tokens.len(),
        compact(&answer, 300)
    );
    while reports.family(crate::fcm::FAMILY).counters().pending > 0
        && Instant::now() < deadline + Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let report: Value = client
        .get(format!("{base}/gcm/report"))
        .send()
        .await?
        .json()
        .await?;
    println!("GET /gcm/report -> {report}");
    let canonical: Value = client
        .get(format!("{base}/gcm/report/canonical"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /gcm/report/canonical -> {} replacements, e.g. {}",
        canonical["canonical_replacements"]
            .as_array()
            .map_or(0, Vec::len),
        compact(&canonical["canonical_replacements"][0], 200)
    );
    let notregistered: Value = client
        .get(format!("{base}/gcm/report/notregistered"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /gcm/report/notregistered -> {} tokens",
        notregistered["tokens"].as_array().map_or(0, Vec::len)
    );
    println!(
        "{accepted} Android tokens reached an outcome in {:.0} ms ({:.0} tokens/s)",
        took.as_secs_f64() * 1000.0,
        accepted as f64 / took.as_secs_f64().max(1e-9)
    );

    webpush::send_sample(&client, &base, &push_mock, args.tokens.min(1000)).await?;
    hms::send_sample(&client, &base, &hms_mock, args.tokens).await?;

    if args.exit {
        gateway.shutdown(Duration::from_secs(5)).await;
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nTry it (Ctrl-C to stop):");
    println!("  curl -s -X POST {base}/apns/send -H 'content-type: application/json' \\");
    println!(
        "       -d '{{\"tokens\":[\"{}\",\"dead{}\"],\"payload\":{{\"aps\":{{\"alert\":\"hi\"}}}}}}'",
        "ab".repeat(32),
        "0".repeat(60)
    );
    println!("  curl -s {base}/apns/report");
    println!("  curl -s {base}/webpush/report");
    println!(
        "  curl -s -X POST {base}/hms/send -H 'content-type: application/json' -d '{{\"tokens\":[\"IQAAAACy0kYb\",\"illegal-1\"],\"data\":{{\"k\":\"v\"}}}}'"
    );
    println!("  curl -s {base}/hms/report/unregistered");
    println!("  curl -s -X DELETE {base}/apns/report/unregistered");
    println!(
        "  curl -s {base}/jobs/{}",
        answer["job"].as_str().unwrap_or("<job>")
    );
    println!("  curl -s {base}/metrics | grep pushgate_");
    println!("  open {base}/ for the status page");
    if let Some(set) = set_filter {
        println!("\nThe gateway logs at info from here on.");
        set("info");
    }
    crate::gateway::wait_for_signal().await;
    gateway.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn compact(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.len() > max {
        format!("{}…", &s[..max])
    } else {
        s
    }
}
