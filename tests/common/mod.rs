//! Shared harness: mock upstreams and a gateway on ephemeral ports, talking
//! over real sockets (TLS + HTTP/2 to the mock, HTTP/1.1 to the gateway).
#![allow(dead_code, clippy::unwrap_used)]

pub mod upload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pushgate::config::{ApnsSection, FileConfig};
use pushgate::gateway::Gateway;
use pushgate::job::Family;
use pushgate::mock::{self, Faults, MockHandle};
use pushgate::report::Counters;
use serde_json::Value;

/// Every test body runs under this bound so a hang fails instead of stalling CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PUSHGATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A per-test scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pushgate-test-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub enum ApnsAuthMode {
    Token,
    CertPem,
    Pkcs12,
}

pub struct ApnsEnv {
    pub mock: MockHandle,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    pub dir: PathBuf,
}

pub struct ApnsSetup {
    pub auth: ApnsAuthMode,
    pub faults: Faults,
    pub max_streams: u32,
    pub tweak: Box<dyn FnOnce(&mut FileConfig) + Send>,
    /// The mock answers like Apple's sandbox (`apns-unique-id` on 200s).
    pub sandbox: bool,
}

impl Default for ApnsSetup {
    fn default() -> Self {
        Self {
            auth: ApnsAuthMode::Token,
            faults: Faults::default(),
            max_streams: 1000,
            tweak: Box::new(|_| {}),
            sandbox: false,
        }
    }
}

pub const KEY_ID: &str = "TESTKEY001";
pub const TEAM_ID: &str = "TESTTEAM01";

pub async fn apns_env(setup: ApnsSetup) -> ApnsEnv {
    init();
    let dir = scratch("apns");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut section = ApnsSection {
        ca_file: ca_file.display().to_string(),
        topic: "com.example.test".into(),
        max_retries: 3,
        ..ApnsSection::default()
    };
    let check = match setup.auth {
        ApnsAuthMode::Token => {
            let (p8, public_key_pem) = mock::apns::generate_provider_key().unwrap();
            let key_file = dir.join("AuthKey.p8");
            std::fs::write(&key_file, p8).unwrap();
            section.key_file = key_file.display().to_string();
            section.key_id = KEY_ID.into();
            section.team_id = TEAM_ID.into();
            mock::apns::ApnsAuthCheck::Token {
                team_id: TEAM_ID.into(),
                key_id: KEY_ID.into(),
                public_key_pem,
            }
        }
        ApnsAuthMode::CertPem => {
            let cert = dir.join("client.crt");
            let key = dir.join("client.key");
            std::fs::write(&cert, &pki.client.cert_pem).unwrap();
            std::fs::write(&key, &pki.client.key_pem).unwrap();
            section.cert_file = cert.display().to_string();
            section.cert_key_file = key.display().to_string();
            mock::apns::ApnsAuthCheck::ClientCert {
                ca_pem: pki.ca_pem.clone(),
            }
        }
        ApnsAuthMode::Pkcs12 => {
            let p12 = dir.join("client.p12");
            std::fs::write(&p12, pkcs12_of(&pki.client, "s3cret-p12")).unwrap();
            section.pkcs12_file = p12.display().to_string();
            section.pkcs12_password = pushgate::config::Secret::new("s3cret-p12");
            mock::apns::ApnsAuthCheck::ClientCert {
                ca_pem: pki.ca_pem.clone(),
            }
        }
    };
    let mut options = mock::apns::MockApnsOptions::new(check, &pki);
    options.faults = setup.faults;
    options.max_concurrent_streams = setup.max_streams;
    options.sandbox = setup.sandbox;
    let mock = mock::apns::start(options).await.unwrap();
    section.endpoint = mock.url();
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    // Durability is not the point here (tests/durable.rs is): keep nothing.
    file.queue.backend = "memory".into();
    file.retry.base_ms = 5;
    file.retry.cap_ms = 50;
    file.apns = Some(section);
    (setup.tweak)(&mut file);
    let config = file.validate().unwrap();
    let gateway = Gateway::start(&config).await.unwrap();
    ApnsEnv {
        mock,
        gateway,
        client: reqwest::Client::new(),
        dir,
    }
}

/// Builds a PKCS#12 bundle of `identity` (what Keychain Access exports).
pub fn pkcs12_of(identity: &mock::tls::Identity, password: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    let cert = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).unwrap();
    let key = PrivatePkcs8KeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
    let chain = p12_keystore::PrivateKeyChain::new(
        vec![1, 2, 3, 4],
        p12_keystore::PrivateKey::from_der(key.secret_pkcs8_der()).unwrap(),
        vec![p12_keystore::Certificate::from_der(cert.as_ref()).unwrap()],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "client",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    store.writer(password).write().unwrap()
}

/// The APNs payload the tests send.
pub fn apns_payload() -> Value {
    serde_json::json!({ "aps": { "alert": "hi" } })
}

impl ApnsEnv {
    /// POSTs `tokens` with [`apns_payload`] to `/apns/send`, asserts the 202
    /// and returns its answer.
    pub async fn send_apns(&self, tokens: &[String]) -> Value {
        let (status, answer, _) = self
            .post_json(
                "/apns/send",
                &serde_json::json!({ "tokens": tokens, "payload": apns_payload() }),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        answer
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, r.json().await.unwrap_or(Value::Null), headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub fn counters(&self) -> Counters {
        self.gateway
            .state
            .backend
            .reports()
            .family(pushgate::apns::FAMILY)
            .counters()
    }
}

/// Waits until `family` has nothing pending (and at least `accepted` accepted).
pub async fn wait_done(gateway: &Gateway, family: Family, accepted: u64) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = gateway.state.backend.reports().family(family).counters();
        assert!(c.balanced(), "books out of balance: {c:?}");
        if c.accepted >= accepted && c.pending == 0 {
            return c;
        }
        assert!(Instant::now() < deadline, "still pending after 90 s: {c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An APNs token (64 hex digits) with the given 4-hex-digit prefix.
pub fn apns_token(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:060x}")
}

/// Which Google API a test gateway uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoogleApi {
    /// FCM HTTP v1 (OAuth2 service account).
    V1,
    /// Legacy multicast (server key).
    Legacy,
}

pub struct GoogleEnv {
    pub mock: MockHandle,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    /// The config the gateway runs (to start a second one like it).
    pub file: FileConfig,
}

pub const SERVER_KEY: &str = "test-server-key";

/// A gateway delivering `/gcm/send` through `api` against a fresh mock FCM
/// with `faults`; `tweak` adjusts the config before it is validated.
pub async fn google_env(
    api: GoogleApi,
    faults: Faults,
    tweak: impl FnOnce(&mut FileConfig),
) -> GoogleEnv {
    init();
    let dir = scratch("google");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let account = mock::fcm::ServiceAccountFixture::generate("pushgate-test").unwrap();
    let mut options = mock::fcm::MockFcmOptions::new(&account, SERVER_KEY, &pki);
    options.faults = faults;
    let mock = mock::fcm::start(options).await.unwrap();
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    // Durability is not the point here (tests/durable.rs is): keep nothing.
    file.queue.backend = "memory".into();
    file.retry.base_ms = 5;
    file.retry.cap_ms = 50;
    match api {
        GoogleApi::V1 => {
            let account_file = dir.join("service-account.json");
            std::fs::write(
                &account_file,
                account.to_json(&format!("{}/token", mock.url())),
            )
            .unwrap();
            file.fcm = Some(pushgate::config::FcmSection {
                service_account_file: account_file.display().to_string(),
                endpoint: mock.url(),
                ca_file: ca_file.display().to_string(),
                ..Default::default()
            });
        }
        GoogleApi::Legacy => {
            file.gcm = Some(pushgate::config::GcmSection {
                server_key: pushgate::config::Secret::new(SERVER_KEY),
                endpoint: format!("{}/fcm/send", mock.url()),
                ca_file: ca_file.display().to_string(),
                ..Default::default()
            });
        }
    }
    tweak(&mut file);
    let gateway = Gateway::start(&file.validate().unwrap()).await.unwrap();
    GoogleEnv {
        mock,
        gateway,
        client: reqwest::Client::new(),
        dir,
        file,
    }
}

impl GoogleEnv {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a GoCM form: repeated `tokens`, `payload` as a JSON string.
    pub async fn post_gocm_form(
        &self,
        path: &str,
        tokens: &[String],
        payload: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for t in tokens {
            form.append_pair("tokens", t);
        }
        form.append_pair("payload", payload);
        for (k, v) in extra {
            form.append_pair(k, v);
        }
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

// === Whole-process helpers (tests/resilience.rs) ===

/// POSTs `body` as JSON to `base` + `path`; status and JSON answer.
pub async fn post_json_to(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let r = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A mock APNs with token auth and `faults`, plus the files a `pushgate serve`
/// process needs to reach it: returns the mock and an `[apns]` section (key,
/// CA, endpoint filled in) written under `dir`.
pub async fn apns_mock_for_process(
    dir: &std::path::Path,
    faults: Faults,
    max_streams: u32,
) -> (MockHandle, ApnsSection) {
    init();
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let (p8, public_key_pem) = mock::apns::generate_provider_key().unwrap();
    let key_file = dir.join("AuthKey.p8");
    std::fs::write(&key_file, p8).unwrap();
    let mut options = mock::apns::MockApnsOptions::new(
        mock::apns::ApnsAuthCheck::Token {
            team_id: TEAM_ID.into(),
            key_id: KEY_ID.into(),
            public_key_pem,
        },
        &pki,
    );
    options.faults = faults;
    options.max_concurrent_streams = max_streams;
    let mock = mock::apns::start(options).await.unwrap();
    let section = ApnsSection {
        endpoint: mock.url(),
        ca_file: ca_file.display().to_string(),
        topic: "com.example.test".into(),
        key_file: key_file.display().to_string(),
        key_id: KEY_ID.into(),
        team_id: TEAM_ID.into(),
        ..ApnsSection::default()
    };
    (mock, section)
}

/// `pushgate serve` as a child process (JSON logs), its stderr collected line
/// by line so tests can wait for and read log events. Killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub url: String,
}

impl Served {
    /// Writes `config` to `<dir>/<name>.toml`, starts the binary on it and
    /// waits for its "pushgate listening" line.
    pub async fn start(dir: &std::path::Path, name: &str, config: &FileConfig) -> Self {
        Self::start_with_env(dir, name, config, &[]).await
    }

    /// [`Served::start`] with extra environment variables.
    pub async fn start_with_env(
        dir: &std::path::Path,
        name: &str,
        config: &FileConfig,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        use std::io::{BufRead, BufReader};
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&file)
            .env("PUSHGATE_LOG", "info")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut served = Self {
            child,
            lines,
            url: String::new(),
        };
        let listening = served.wait_for_log("pushgate listening").await;
        served.url = format!("http://{}", listening["fields"]["addr"].as_str().unwrap());
        served
    }

    /// Log events (JSON) whose message starts with `message`.
    pub fn logs(&self, message: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .collect()
    }

    /// Waits (60 s at most) for a log event; panics with the log if the process exits first.
    pub async fn wait_for_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.logs(message).pop() {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pushgate exited ({status}) before logging {message:?}: {:#?}",
                    self.lines.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with `kill`.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits (90 s at most) for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "pushgate did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit().await
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Only does anything when a test failed with the child still running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the webhook's events (signatures are tests/webhook.rs's job).
pub async fn hook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let sink = events.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Some(events) = batch["events"].as_array() {
                    sink.lock().unwrap().extend(events.iter().cloned());
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, events)
}

/// The first `n` (or more) events `hook_receiver` collected, waiting up to 60 s.
pub async fn events_for(events: &std::sync::Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = events.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} events: {got:?}",
            got.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A mock HMS (adjusted by `options`) plus the files a `pushgate serve`
/// process needs to reach it: returns the mock and an `[hms]` section (the
/// mock's app, its secret in a file, CA, endpoints) written under `dir`.
pub async fn hms_mock_for_process(
    dir: &std::path::Path,
    options: impl FnOnce(&mut mock::hms::MockHmsOptions),
) -> (mock::hms::MockHms, pushgate::config::HmsSection) {
    init();
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("hms-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut opts = mock::hms::MockHmsOptions::new(&pki);
    options(&mut opts);
    let mock = mock::hms::start(opts).await.unwrap();
    let secret_file = dir.join("hms.secret");
    std::fs::write(&secret_file, mock.client_secret()).unwrap();
    let section = pushgate::config::HmsSection {
        app_id: mock.app_id().to_owned(),
        client_secret_file: secret_file.display().to_string(),
        endpoint: mock.endpoint(),
        token_uri: mock.token_uri(),
        ca_file: ca_file.display().to_string(),
        ..Default::default()
    };
    (mock, section)
}

/// Sends process `pid` a signal by name (`TERM`, `STOP`, `CONT`) with `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
