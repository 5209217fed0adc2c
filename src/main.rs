//! The `pushgate` command: `serve` (default), `check-config`, `mock`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use pushgate::config::{FileConfig, LogFormat};
use pushgate::gateway::Gateway;
use pushgate::mock::{self, Faults};

/// jemalloc, with its background thread purging freed pages (see [`main`]):
/// RSS goes back near idle within seconds of a burst, where glibc malloc kept
/// hundreds of MB (README "Memory").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background purge thread: without it, freed pages are
/// returned only when some thread allocates again, so an idle gateway would
/// keep a burst's memory. Tunable further with `_RJEM_MALLOC_CONF`.
fn purge_in_background() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start jemalloc's background purge thread");
    }
}

#[derive(Parser)]
#[command(
    name = "pushgate",
    version,
    about = "HTTP push gateway for APNs and FCM"
)]
struct Cli {
    /// Log format: readable lines (`text`, also called `human`) or one JSON
    /// object per line. Wins over `[log] format` and PUSHGATE_LOG_FORMAT.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    #[value(alias = "human")]
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

// Parsed once at start; boxing variants would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve(ServeArgs),
    /// Validate a config file (plus PUSHGATE_* overrides) and print it with secrets masked.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
        /// Also connect to every configured app's upstream and prove its credentials.
        #[arg(long)]
        connect: bool,
    },
    /// Send one message to many tokens from the terminal (in-process, or via --server).
    Send(pushgate::terminal::send::SendArgs),
    /// Run a mock upstream (APNs, FCM, Web Push or Huawei HMS) for tests and benchmarks.
    #[command(subcommand)]
    Mock(MockCommand),
    /// Start mock upstreams and a gateway wired to them, send a sample job,
    /// print the reports, and keep serving for curl. Needs no credentials.
    Demo(pushgate::demo::DemoArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// The TOML config file; without one, only PUSHGATE_* variables configure the gateway.
    #[arg(long, short, env = "PUSHGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum MockCommand {
    /// Mock APNs (HTTP/2 over TLS).
    Apns(MockApnsArgs),
    /// Mock FCM: OAuth token endpoint, v1 send and legacy batch API.
    Fcm(MockFcmArgs),
    /// Mock Web Push service (RFC 8030, TLS h2 + http/1.1): verifies VAPID,
    /// decrypts every message; the endpoint path picks the outcome.
    Webpush(MockWebPushArgs),
    /// Mock Huawei Push Kit (TLS h2 + http/1.1): OAuth client credentials and
    /// v1 messages:send; token content picks the outcome.
    Hms(MockHmsArgs),
}

#[derive(Args)]
struct FaultArgs {
    /// Fraction of requests answered with a retryable server error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Throttle (429) every Nth request.
    #[arg(long)]
    throttle_every: Option<u64>,
    /// Seconds in Retry-After on throttled answers.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Send Retry-After as an HTTP date (that many seconds ahead) instead of seconds.
    #[arg(long)]
    retry_after_date: bool,
    /// Send GOAWAY after N streams on a connection.
    #[arg(long)]
    goaway_after: Option<u64>,
    /// Drop the TCP connection abruptly after N streams.
    #[arg(long)]
    drop_after: Option<u64>,
    /// Mock APNs: stop reading and answering (TCP stays open) after N streams on a connection.
    #[arg(long)]
    stall_after: Option<u64>,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// File of tokens whose first attempt fails (one per line).
    #[arg(long)]
    flaky: Option<PathBuf>,
}

impl FaultArgs {
    fn faults(&self) -> anyhow::Result<Faults> {
        Ok(Faults {
            error_rate: self.error_rate,
            throttle_every: self.throttle_every,
            retry_after_s: self.retry_after,
            retry_after_date: self.retry_after_date,
            goaway_after: self.goaway_after,
            drop_after: self.drop_after,
            stall_after: self.stall_after,
            latency_ms: self.latency_ms,
            flaky: match &self.flaky {
                Some(path) => Faults::load_flaky(path)
                    .with_context(|| format!("reading --flaky {}", path.display()))?,
                None => Default::default(),
            },
        })
    }
}

#[derive(Args)]
struct MockApnsArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2197")]
    listen: SocketAddr,
    /// How clients authenticate: `none` accepts any request (for h2load), `token`
    /// checks ES256 JWTs against --public-key, `cert` requires a client certificate.
    #[arg(long, value_enum, default_value_t = MockAuth::None)]
    auth: MockAuth,
    /// SPKI PEM public key for `--auth token`; with --write-key, generated.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Generate a provider key and write its .p8 here (for `--auth token`).
    #[arg(long)]
    write_key: Option<PathBuf>,
    /// Expected JWT `kid`.
    #[arg(long, default_value = "MOCKKEY001")]
    key_id: String,
    /// Expected JWT `iss`.
    #[arg(long, default_value = "MOCKTEAM01")]
    team_id: String,
    /// Write the CA that signed the server certificate here (the gateway's apns.ca_file).
    #[arg(long)]
    write_ca: Option<PathBuf>,
    /// For `--auth cert`: write the client certificate and key here (PEM pair: FILE.crt, FILE.key).
    #[arg(long)]
    write_client_cert: Option<PathBuf>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS (Apple: 1000).
    #[arg(long, default_value_t = 1000)]
    max_streams: u32,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum MockAuth {
    None,
    Token,
    Cert,
}

#[derive(Args)]
struct MockFcmArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2198")]
    listen: SocketAddr,
    /// Firebase project id.
    #[arg(long, default_value = "pushgate-demo")]
    project: String,
    /// Legacy server key expected in `Authorization: key=…`.
    #[arg(long, default_value = "mock-server-key")]
    server_key: String,
    /// Write a generated service account JSON (token_uri = this mock) here.
    #[arg(long)]
    write_service_account: Option<PathBuf>,
    /// Write the CA that signed the server certificate here.
    #[arg(long)]
    write_ca: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS.
    #[arg(long)]
    plain: bool,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Args)]
struct MockWebPushArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2199")]
    listen: SocketAddr,
    /// Seed the subscription keys derive from (same seed, same subscriptions).
    #[arg(long)]
    seed: Option<String>,
    /// Accept only this VAPID public key (base64url), as a real service does
    /// for subscriptions made with that applicationServerKey.
    #[arg(long)]
    vapid_public_key: Option<String>,
    /// Write the CA that signed the server certificate here (webpush.ca_file).
    #[arg(long)]
    write_ca: Option<PathBuf>,
    /// Print this many ready-made subscriptions (a JSON array) before serving.
    #[arg(long, default_value_t = 0)]
    subscriptions: usize,
    /// The endpoint kind of the printed subscriptions: ok, gone, notfound,
    /// flaky, throttle, toolarge, bad, internal.
    #[arg(long, default_value = "ok")]
    kind: String,
    /// Write the subscriptions here instead of stdout.
    #[arg(long)]
    subscriptions_out: Option<PathBuf>,
    /// The application server's VAPID key (PEM): only its public key is
    /// accepted (like --vapid-public-key), and --write-sample signs with it.
    #[arg(long)]
    vapid_key_file: Option<PathBuf>,
    /// For h2load: write one ready request to subscription `ok/h2load` as
    /// PREFIX.url, PREFIX.headers (one `name: value` a line) and PREFIX.body
    /// (needs --vapid-key-file).
    #[arg(long)]
    write_sample: Option<PathBuf>,
    /// Decrypt one message in N (1: every one); the rest get the header
    /// checks a real push service makes (it never decrypts). For benchmarks
    /// that share their cores with the gateway.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    decrypt_every: u64,
    #[command(flatten)]
    faults: FaultArgs,
}

/// The mock HMS's default client secret: fixed so a config can name it, and
/// holding `+`, `/` and `=` so a client must form-encode it.
const MOCK_HMS_SECRET: &str = "MockHmsSecret+0123/456789abcdef=";

#[derive(Args)]
struct MockHmsArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2200")]
    listen: SocketAddr,
    /// The app id (OAuth client id, digits only).
    #[arg(long, default_value = "104000000")]
    app_id: String,
    /// The client secret the OAuth endpoint expects (`[0-9a-zA-Z=/+]`).
    #[arg(long, default_value = MOCK_HMS_SECRET)]
    client_secret: String,
    /// Write the client secret here (the gateway's hms.client_secret_file).
    #[arg(long)]
    write_secret: Option<PathBuf>,
    /// Write the CA that signed the server certificate here (hms.ca_file).
    #[arg(long)]
    write_ca: Option<PathBuf>,
    /// `expires_in` announced with each access token, in seconds.
    #[arg(long, default_value_t = 3600)]
    expires_in: u64,
    /// Access tokens really expire after this many seconds (default: --expires-in).
    #[arg(long)]
    token_ttl: Option<u64>,
    /// Access tokens expire after this many send requests (80200003 after).
    #[arg(long)]
    token_max_sends: Option<u64>,
    /// Fraction of send requests answered 503 flow control.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Answer every Nth send request 503 flow control.
    #[arg(long)]
    throttle_every: Option<u64>,
    /// Seconds in Retry-After on injected 503s (0 sends no header).
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Fraction of send requests answered 500 (81000001).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// File of tokens whose first attempt fails with 500 (one per line).
    #[arg(long)]
    flaky: Option<PathBuf>,
}

/// The log format: `--log-format`, else what [`pushgate::logging::format_from`]
/// finds for this command (`serve` reads its config file's `[log] format`).
fn log_format(cli: &Cli) -> LogFormat {
    if let Some(format) = cli.log_format {
        return format.into();
    }
    let file = match &cli.command {
        Some(Command::Serve(args)) => args.config.clone(),
        _ => None,
    };
    pushgate::logging::format_from(file.as_deref())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The terminal commands keep stderr for their progress: warnings only,
    // unless PUSHGATE_LOG asks for more.
    let terminal = matches!(
        cli.command,
        Some(Command::Send(_)) | Some(Command::CheckConfig { connect: true, .. })
    );
    // The demo talks on stdout: its gateway logs warnings only until the
    // narrative is over (unless PUSHGATE_LOG asks for more).
    let demo = matches!(cli.command, Some(Command::Demo(_)));
    let set_filter = pushgate::logging::init(
        log_format(&cli),
        if terminal || demo { "warn" } else { "info" },
    );
    purge_in_background();
    // One process-wide crypto provider; reqwest and rustls builders use it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
            Command::Serve(args) => serve(args).await,
            Command::CheckConfig {
                file,
                connect: false,
            } => check_config(&file),
            Command::CheckConfig {
                file,
                connect: true,
            } => Ok(pushgate::terminal::connect::run(&file).await.into()),
            Command::Send(args) => Ok(pushgate::terminal::send::run(args).await.into()),
            Command::Mock(MockCommand::Apns(args)) => mock_apns(args).await,
            Command::Mock(MockCommand::Fcm(args)) => mock_fcm(args).await,
            Command::Mock(MockCommand::Webpush(args)) => mock_webpush(args).await,
            Command::Mock(MockCommand::Hms(args)) => mock_hms(args).await,
            Command::Demo(args) => pushgate::demo::run(args, set_filter).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(file: Option<&std::path::Path>) -> anyhow::Result<(FileConfig, pushgate::config::Config)> {
    let raw = FileConfig::load(file, std::env::vars())?;
    let config = raw.validate()?;
    Ok((raw, config))
}

fn check_config(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match load(Some(file)) {
        Ok((raw, config)) => {
            print!("{}", raw.to_masked_toml());
            let backend = match (&config.redis, &config.disk) {
                (Some(r), _) => format!("redis ({})", r.stream),
                (None, Some(d)) => format!("disk (data_dir {})", d.data_dir.display()),
                (None, None) => "memory (nothing survives a restart)".to_owned(),
            };
            let platforms: Vec<String> = config
                .platforms()
                .into_iter()
                .map(|(platform, apps)| format!("{platform} ({})", apps.join(", ")))
                .collect();
            println!(
                "# valid: listen {}, queue backend {backend}, platforms {}, gRPC {}",
                config.server.listen,
                if platforms.is_empty() {
                    "none".to_owned()
                } else {
                    platforms.join("; ")
                },
                config
                    .grpc
                    .as_ref()
                    .map_or_else(|| "off".to_owned(), |g| g.listen.to_string()),
            );
            // The site's JavaScript needs this as `applicationServerKey`.
            for (app, w) in config.webpush.iter().flat_map(|apps| apps.iter()) {
                println!(
                    "# webpush app {app}: VAPID public key (applicationServerKey) {}",
                    w.vapid.key().public_key_b64()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let (_, config) = load(args.config.as_deref())?;
    if config.platforms().is_empty() {
        tracing::warn!(
            "no platform section ([apns], [fcm], [gcm], [webpush], …): every send will answer 404 (try `pushgate demo`)"
        );
    }
    // Listening before the gateway starts: a signal during start-up is not lost,
    // and one listener for both signals keeps a fast second signal too.
    let mut signals = pushgate::gateway::Signals::new();
    let gateway = Gateway::start(&config).await?;
    signals.recv().await;
    tracing::info!("signal received: draining (a second signal exits at once)");
    // A second signal during the drain exits at once, after saying what it
    // leaves behind.
    let state = gateway.state.clone();
    tokio::spawn(async move {
        signals.recv().await;
        pushgate::abandon::log_abandoned(&state);
        std::process::exit(130);
    });
    let report = gateway.shutdown(config.server.shutdown_grace).await;
    tracing::info!(
        abandoned = report.abandoned,
        kept = report.kept,
        still_pending = report.still_pending,
        finished = report.finished_during_drain,
        "pushgate stopped"
    );
    Ok(ExitCode::SUCCESS)
}

async fn mock_apns(args: MockApnsArgs) -> anyhow::Result<ExitCode> {
    let pki = mock::tls::TestPki::generate()?;
    let auth = match args.auth {
        MockAuth::None => mock::apns::ApnsAuthCheck::None,
        MockAuth::Cert => {
            if let Some(base) = &args.write_client_cert {
                std::fs::write(base.with_extension("crt"), &pki.client.cert_pem)?;
                std::fs::write(base.with_extension("key"), &pki.client.key_pem)?;
            }
            mock::apns::ApnsAuthCheck::ClientCert {
                ca_pem: pki.ca_pem.clone(),
            }
        }
        MockAuth::Token => {
            let public_key_pem = match (&args.public_key, &args.write_key) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading --public-key {}", path.display()))?,
                (None, Some(path)) => {
                    let (p8, public) = mock::apns::generate_provider_key()?;
                    std::fs::write(path, p8)
                        .with_context(|| format!("writing --write-key {}", path.display()))?;
                    public
                }
                (None, None) => {
                    anyhow::bail!("--auth token needs --public-key FILE or --write-key FILE")
                }
            };
            mock::apns::ApnsAuthCheck::Token {
                team_id: args.team_id.clone(),
                key_id: args.key_id.clone(),
                public_key_pem,
            }
        }
    };
    let mut options = mock::apns::MockApnsOptions::new(auth, &pki);
    options.listen = args.listen;
    options.max_concurrent_streams = args.max_streams;
    options.faults = args.faults.faults()?;
    if let Some(path) = &args.write_ca {
        std::fs::write(path, &pki.ca_pem)
            .with_context(|| format!("writing --write-ca {}", path.display()))?;
    }
    let handle = mock::apns::start(options).await?;
    tracing::info!(url = %handle.url(), "mock APNs listening");
    println!("mock APNs listening on {}", handle.url());
    report_ledger_until_signal(&handle).await;
    Ok(ExitCode::SUCCESS)
}

async fn mock_fcm(args: MockFcmArgs) -> anyhow::Result<ExitCode> {
    let pki = mock::tls::TestPki::generate()?;
    let account = mock::fcm::ServiceAccountFixture::generate(&args.project)?;
    let mut options = mock::fcm::MockFcmOptions::new(&account, &args.server_key, &pki);
    options.listen = args.listen;
    options.tls = !args.plain;
    options.faults = args.faults.faults()?;
    if let Some(path) = &args.write_ca {
        std::fs::write(path, &pki.ca_pem)
            .with_context(|| format!("writing --write-ca {}", path.display()))?;
    }
    let handle = mock::fcm::start(options).await?;
    let scheme = if args.plain { "http" } else { "https" };
    let base = format!("{scheme}://{}", handle.addr);
    if let Some(path) = &args.write_service_account {
        std::fs::write(path, account.to_json(&format!("{base}/token")))
            .with_context(|| format!("writing --write-service-account {}", path.display()))?;
    }
    println!(
        "mock FCM listening on {base} (v1: {base}/v1/projects/{}/messages:send, legacy: {base}/fcm/send)",
        args.project
    );
    report_ledger_until_signal(&handle).await;
    Ok(ExitCode::SUCCESS)
}

async fn mock_webpush(args: MockWebPushArgs) -> anyhow::Result<ExitCode> {
    let pki = mock::tls::TestPki::generate()?;
    let mut options = mock::webpush::MockWebPushOptions::new(&pki);
    options.listen = args.listen;
    if let Some(seed) = &args.seed {
        options.seed = seed.as_bytes().to_vec();
    }
    options.expected_key = args.vapid_public_key.clone();
    let vapid_key = match &args.vapid_key_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --vapid-key-file {}", path.display()))?;
            let key = pushgate::webpush::vapid::VapidKey::from_pem(&pem)
                .with_context(|| format!("--vapid-key-file {}", path.display()))?;
            options.expected_key = Some(key.public_key_b64().to_owned());
            Some(key)
        }
        None => None,
    };
    options.faults = args.faults.faults()?;
    options.decrypt_every = args.decrypt_every;
    if let Some(path) = &args.write_ca {
        std::fs::write(path, &pki.ca_pem)
            .with_context(|| format!("writing --write-ca {}", path.display()))?;
    }
    let push = mock::webpush::start(options).await?;
    if args.subscriptions > 0 {
        let subs: Vec<serde_json::Value> = (0..args.subscriptions)
            .map(|i| push.subscription(&args.kind, &format!("s{i}")))
            .collect();
        let text = serde_json::to_string_pretty(&subs)?;
        match &args.subscriptions_out {
            Some(path) => std::fs::write(path, text + "\n")
                .with_context(|| format!("writing --subscriptions-out {}", path.display()))?,
            None => println!("{text}"),
        }
    }
    if let Some(prefix) = &args.write_sample {
        let key = vapid_key.context("--write-sample needs --vapid-key-file")?;
        write_webpush_sample(&push, key, prefix)?;
    }
    println!(
        "mock Web Push listening on {} (endpoints {}/push/<kind>/<id>; allow this origin in webpush.allowed_origins)",
        push.origin(),
        push.origin()
    );
    report_ledger_until_signal(&push.handle).await;
    Ok(ExitCode::SUCCESS)
}

async fn mock_hms(args: MockHmsArgs) -> anyhow::Result<ExitCode> {
    let pki = mock::tls::TestPki::generate()?;
    let mut options = mock::hms::MockHmsOptions::new(&pki);
    options.listen = args.listen;
    options.apps = vec![mock::hms::HmsApp {
        app_id: args.app_id.clone(),
        client_secret: args.client_secret.clone(),
    }];
    options.expires_in_s = args.expires_in;
    options.token_ttl_s = args.token_ttl;
    options.token_max_sends = args.token_max_sends;
    options.throttle_rate = args.throttle_rate;
    options.faults = Faults {
        error_rate: args.error_rate,
        throttle_every: args.throttle_every,
        retry_after_s: args.retry_after,
        latency_ms: args.latency_ms,
        flaky: match &args.flaky {
            Some(path) => Faults::load_flaky(path)
                .with_context(|| format!("reading --flaky {}", path.display()))?,
            None => Default::default(),
        },
        ..Faults::default()
    };
    if let Some(path) = &args.write_ca {
        std::fs::write(path, &pki.ca_pem)
            .with_context(|| format!("writing --write-ca {}", path.display()))?;
    }
    if let Some(path) = &args.write_secret {
        // No trailing newline: the file holds the secret and nothing else.
        std::fs::write(path, &args.client_secret)
            .with_context(|| format!("writing --write-secret {}", path.display()))?;
    }
    let hms = mock::hms::start(options).await?;
    println!(
        "mock HMS listening on {} (token_uri: {}, send: {}, app id {})",
        hms.endpoint(),
        hms.token_uri(),
        hms.send_url(hms.app_id()),
        hms.app_id()
    );
    report_ledger_until_signal(&hms.handle).await;
    Ok(ExitCode::SUCCESS)
}

/// One request as the gateway would send it, for h2load to replay: the same
/// encryption and VAPID code as the gateway, so the mock does the same work.
fn write_webpush_sample(
    push: &mock::webpush::MockWebPush,
    key: pushgate::webpush::vapid::VapidKey,
    prefix: &std::path::Path,
) -> anyhow::Result<()> {
    use pushgate::webpush::{ece, vapid};
    let sub = push.subscription("ok", "h2load");
    let keys = ece::UaKeys::parse(
        sub["keys"]["p256dh"].as_str().unwrap_or_default(),
        sub["keys"]["auth"].as_str().unwrap_or_default(),
    )
    .map_err(|e| anyhow::anyhow!("sample subscription keys: {e}"))?;
    let body = ece::encrypt(
        br#"{"title":"pushgate bench","body":"Hello from the benchmark"}"#,
        &keys,
    )
    .map_err(|e| anyhow::anyhow!("encrypting the sample: {e}"))?;
    let signer = vapid::Vapid::new(key, "mailto:bench@example.com")?;
    let auth = signer
        .authorization(&push.origin())
        .map_err(|_| anyhow::anyhow!("signing the sample VAPID JWT"))?;
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    std::fs::write(with(".body"), body)?;
    std::fs::write(
        with(".headers"),
        format!(
            "authorization: {}\nttl: 3600\ncontent-encoding: aes128gcm\ncontent-type: application/octet-stream\n",
            auth.to_str().unwrap_or_default()
        ),
    )?;
    std::fs::write(
        with(".url"),
        format!("{}\n", sub["endpoint"].as_str().unwrap_or_default()),
    )?;
    Ok(())
}

/// Logs the mock's counters every 10 s while busy, until a signal.
async fn report_ledger_until_signal(handle: &mock::MockHandle) {
    use std::sync::atomic::Ordering::Relaxed;
    let ledger = handle.ledger.clone();
    let ticker = async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let requests = ledger.requests.load(Relaxed);
            if requests != last {
                tracing::info!(
                    requests,
                    connections = ledger.connections.load(Relaxed),
                    peak_streams = ledger.peak_streams.load(Relaxed),
                    "mock ledger"
                );
                last = requests;
            }
        }
    };
    tokio::select! {
        _ = pushgate::gateway::wait_for_signal() => {}
        _ = ticker => {}
    }
}
