//! Redis as a managed service runs it, against a `redis-server` of the
//! test's own (Debian's redis-server 7, TLS built in):
//!
//! - `rediss://` with a private CA (certificates made with rcgen here), an
//!   ACL user from the URL and its password from `queue.redis_password_file`:
//!   jobs go through, `GET /cluster` shows the gateway, and the password is
//!   in no log line and not in `check-config`'s output;
//! - a gateway started while Redis is down listens, answers `/readyz` 503,
//!   and serves once Redis is up;
//! - one provider token per key for three gateways over an hour of simulated
//!   time (APNs JWT `iat`s counted; FCM grants counted by the mock);
//! - one FCM quota bucket for three gateways (the Lua scripts on a test
//!   clock): within 5% of `max_per_minute` over 20 s, pauses shared.
//!
//! Left out: Redis Cluster and Sentinel (not supported), client
//! certificates (mTLS; the redis crate supports them, we do not configure
//! them), and Valkey (Debian 12 has no valkey-server package).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pushgate::config::FileConfig;
use pushgate::mock::Faults;
use pushgate::shared::credentials::RedisCredentials;
use pushgate::shared_credential::{ManualClock, SharedCredentials};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "s3cret-redis-pw-9f1c";

/// `redis-server`, or what `PUSHGATE_TEST_REDIS_SERVER` names
/// (`valkey-server`: scripts/test runs these tests against both when it can).
fn redis_server_bin() -> String {
    std::env::var("PUSHGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` on `port`: plain, or TLS-only with `tls_dir` holding
/// `server.pem`, `server.key`, `redis-ca.pem`. With `password`, an ACL user
/// `pushgate` with it (and the default user disabled).
struct RedisServer {
    child: Child,
}

impl RedisServer {
    fn spawn(port: u16, dir: &Path, tls: bool, password: Option<&str>) -> Self {
        let mut cmd = Command::new(redis_server_bin());
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir);
        if tls {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("redis-ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(port.to_string());
        }
        if let Some(pw) = password {
            cmd.args(["--user", "default", "off"])
                .args(["--user", "pushgate", "on"])
                .arg(format!(">{pw}"))
                .args(["~*", "&*", "+@all"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        Self { child }
    }

    async fn wait_listening(port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain `redis-server` of the test's own (no TLS, no password) and the
/// validated `redis` backend config that reaches it.
async fn plain_redis(name: &str) -> (RedisServer, pushgate::config::RedisQueueConfig) {
    init();
    let dir = scratch(name);
    let port = free_port();
    let redis = RedisServer::spawn(port, &dir, false, None);
    RedisServer::wait_listening(port).await;
    let mut file = FileConfig::default();
    file.queue.backend = "redis".into();
    file.queue.redis_url = format!("redis://127.0.0.1:{port}");
    (redis, file.validate().unwrap().redis.unwrap())
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_report_done(client: &reqwest::Client, base: &str, accepted: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, report) = get(client, base, "/apns/report").await;
        if status == 200 && report["accepted"] == accepted && report["pending"] == 0 {
            return report;
        }
        assert!(Instant::now() < deadline, "not done: {status} {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_private_ca_and_acl_auth_delivers_and_never_shows_the_password() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = scratch("redis-tls");
        let pki = pushgate::mock::tls::TestPki::generate().unwrap();
        std::fs::write(dir.join("server.pem"), &pki.server.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &pki.server.key_pem).unwrap();
        std::fs::write(dir.join("redis-ca.pem"), &pki.ca_pem).unwrap();
        let pw_file = dir.join("redis-password");
        std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
        let port = free_port();
        let _redis = RedisServer::spawn(port, &dir, true, Some(PASSWORD));
        RedisServer::wait_listening(port).await;

        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.apns = Some(apns);
        file.queue.backend = "redis".into();
        file.queue.redis_url = format!("rediss://pushgate@127.0.0.1:{port}");
        file.queue.redis_password_file = pw_file.display().to_string();
        file.queue.redis_ca_file = dir.join("redis-ca.pem").display().to_string();
        file.queue.consumer = "tls-1".into();
        let served = Served::start(&dir, "tls-1", &file).await;
        let client = reqwest::Client::new();

        let tokens: Vec<String> = (0..3000).map(|i| apns_token("7e57", i)).collect();
        let (status, answer) = post_json_to(
            &client,
            &served.url,
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 202, "{answer} {:#?}", served.lines.lock().unwrap());
        let report = wait_report_done(&client, &served.url, 3000).await;
        assert_eq!(report["successes"], 3000, "{report}");
        let seen = mock.ledger.tokens();
        assert!(
            tokens.iter().all(|t| seen.contains_key(t)),
            "not all delivered"
        );

        let (status, view) = get(&client, &served.url, "/cluster").await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["stream"], "{pushgate}", "{view}");
        assert_eq!(view["stream_length"], 0, "{view}");
        let gateways = view["gateways"].as_array().unwrap();
        assert_eq!(gateways.len(), 1, "{view}");
        assert_eq!(gateways[0]["consumer"], "tls-1");
        assert_eq!(gateways[0]["chunks_held"], 0);
        assert_eq!(gateways[0]["live"], true);
        assert!(view["this_gateway_window"].as_u64().unwrap() >= 4, "{view}");

        // The password is in no log line, nor in check-config's output for a
        // URL that carries one itself.
        let logs = served.lines.lock().unwrap().join("\n");
        assert!(!logs.contains(PASSWORD));
        file.queue.redis_url = format!("rediss://pushgate:{PASSWORD}@127.0.0.1:{port}");
        let config = dir.join("check.toml");
        std::fs::write(&config, toml::to_string(&file).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("rediss://pushgate:********@127.0.0.1"),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "{text}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_while_redis_is_down_waits_with_readyz_503_then_serves() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = scratch("redis-late");
        let port = free_port();
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.apns = Some(apns);
        file.queue.backend = "redis".into();
        file.queue.redis_url = format!("redis://127.0.0.1:{port}");
        file.queue.consumer = "late-1".into();
        // Nothing listens on `port` yet: the gateway must start anyway.
        let mut served = Served::start(&dir, "late-1", &file).await;
        let client = reqwest::Client::new();
        let (status, body) = get(&client, &served.url, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        let (status, body) = post_json_to(
            &client,
            &served.url,
            "/apns/send",
            &json!({ "tokens": [apns_token("1a7e", 0)], "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "queue_unavailable", "{body}");
        served.wait_for_log("waiting for Redis").await;
        assert!(
            served.child.try_wait().unwrap().is_none(),
            "the gateway exited"
        );

        let _redis = RedisServer::spawn(port, &dir, false, None);
        RedisServer::wait_listening(port).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = get(&client, &served.url, "/readyz").await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "never ready after Redis came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tokens: Vec<String> = (0..500).map(|i| apns_token("1a7e", i)).collect();
        let (status, answer) = post_json_to(
            &client,
            &served.url,
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let report = wait_report_done(&client, &served.url, 500).await;
        assert_eq!(report["successes"], 500, "{report}");
        assert!(mock.ledger.tokens().len() >= 500);
    })
    .await
    .unwrap();
}

/// Three gateways (three signers, three Redis connections) over one hour of
/// simulated time, each asking for its header every 10 simulated seconds
/// and syncing with the cluster as the gateway does: at most one APNs
/// token per 20 minutes for the key, all three sending the same one.
/// FCM: the same for access tokens, the grants counted by the mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_provider_token_per_key_over_an_hour() {
    tokio::time::timeout(TIMEOUT, async {
        let (_redis, config) = plain_redis("redis-shared-token").await;
        let start_ms = 1_800_000_000_000;
        let clock = Arc::new(ManualClock::new(start_ms));

        // APNs.
        let (p8, public) = pushgate::mock::apns::generate_provider_key().unwrap();
        let signers: Vec<_> = (0..3)
            .map(|_| {
                let signer = pushgate::apns::auth::ProviderToken::new(
                    p8.as_bytes(),
                    "KEYID12345",
                    "TEAM123456",
                )
                .unwrap()
                .with_clock(clock.clone());
                signer.share(SharedCredentials::new(
                    Arc::new(RedisCredentials::new(&config).unwrap()),
                    clock.clone(),
                ));
                signer
            })
            .collect();
        let key = jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let mut iats = BTreeSet::new();
        for s in &signers {
            s.sync().await;
        }
        for _step in 0..=360 {
            let mut headers = BTreeSet::new();
            for s in &signers {
                let h = s.header().unwrap();
                let jwt = h.to_str().unwrap().trim_start_matches("bearer ").to_owned();
                let claims =
                    jsonwebtoken::decode::<Value>(&jwt, &key, &validation).expect("verifies");
                iats.insert(claims.claims["iat"].as_u64().unwrap());
                headers.insert(jwt);
            }
            // Between syncs two gateways may briefly hold the old and the new.
            assert!(
                headers.len() <= 2,
                "{} different tokens at once",
                headers.len()
            );
            clock.advance(Duration::from_secs(10));
            for s in &signers {
                s.sync().await;
            }
        }
        let iats: Vec<u64> = iats.into_iter().collect();
        eprintln!(
            "APNs: 3 gateways, 1 h simulated: {} provider tokens minted, iat offsets (s): {:?}",
            iats.len(),
            iats.iter().map(|i| i - start_ms / 1000).collect::<Vec<_>>()
        );
        assert!(iats.len() <= 4, "{} tokens in an hour", iats.len());
        for pair in iats.windows(2) {
            assert!(
                pair[1] - pair[0] >= 20 * 60,
                "renewed within 20 minutes: {iats:?}"
            );
        }

        // FCM v1.
        let pki = pushgate::mock::tls::TestPki::generate().unwrap();
        let account = pushgate::mock::fcm::ServiceAccountFixture::generate("shared").unwrap();
        let mock = pushgate::mock::fcm::start(pushgate::mock::fcm::MockFcmOptions::new(
            &account,
            "server-key",
            &pki,
        ))
        .await
        .unwrap();
        let service_account: pushgate::config::ServiceAccount =
            serde_json::from_str(&account.to_json(&format!("{}/token", mock.url()))).unwrap();
        let roots: Vec<_> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let tls = pushgate::tls::client_config(&roots, None, &[b"http/1.1"]).unwrap();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
            .build()
            .unwrap();
        let tokens: Vec<_> = (0..3)
            .map(|i| {
                let t = pushgate::fcm::auth::AccessToken::new(
                    &service_account,
                    http.clone(),
                    prometheus::IntCounter::new(format!("r{i}"), "r").unwrap(),
                )
                .unwrap()
                .with_clock(clock.clone());
                t.share(SharedCredentials::new(
                    Arc::new(RedisCredentials::new(&config).unwrap()),
                    clock.clone(),
                ));
                t
            })
            .collect();
        for _step in 0..=360 {
            for t in &tokens {
                t.header().await.unwrap();
            }
            clock.advance(Duration::from_secs(10));
        }
        let grants = pushgate::mock::Ledger::get(&mock.ledger.grants);
        eprintln!("FCM: 3 gateways, 1 h simulated: {grants} access tokens granted");
        // Granted for 3600 s, renewed 5 minutes early: at 0 and at 55 min.
        assert!((1..=3).contains(&grants), "{grants} grants in an hour");
    })
    .await
    .unwrap();
}

/// The FCM quota's bucket in Redis (the Lua scripts themselves): three
/// gateways' stores lease in turns, every 10 ms of a test clock for 20 s, as
/// much as the bucket gives; together they get within 5% of
/// `max_per_minute`. A 429 pause written by one is seen by the others,
/// nothing saved up during it bursts out after it, and a 429 in the
/// cool-down after it does not pause again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_lease_one_fcm_quota_from_redis_within_5_percent() {
    use pushgate::pace::shared::{Lease, QuotaStore};
    use pushgate::shared::quota::RedisQuota;
    tokio::time::timeout(TIMEOUT, async {
        let (_redis, config) = plain_redis("redis-fcm-quota").await;
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let stores: Vec<RedisQuota> = (0..3)
            .map(|_| RedisQuota::new(&config).unwrap().with_clock(clock.clone()))
            .collect();
        let per_minute = 60_000; // 1,000/s: 20,000 in 20 s for the three together
        let mut granted = [0u64; 3];
        for _step in 0..2_000 {
            // Rounds of one small lease each, until the bucket is empty.
            let mut empty = false;
            while !empty {
                empty = true;
                for (store, got) in stores.iter().zip(&mut granted) {
                    match store.lease("project-a", per_minute, 4).await.unwrap() {
                        Lease::Granted(n) => {
                            *got += n;
                            empty = false;
                        }
                        Lease::Empty(wait) => {
                            assert!(wait <= Duration::from_millis(1), "{wait:?}")
                        }
                        Lease::Paused(d) => panic!("not paused: {d:?}"),
                    }
                }
            }
            clock.advance(Duration::from_millis(10));
        }
        let total: u64 = granted.iter().sum();
        eprintln!("fcm quota in redis: {granted:?} = {total} in 20 s of test time (quota 20,000)");
        assert!(
            total.abs_diff(20_000) <= 1_000,
            "{granted:?}: {total} in 20 s, want 20,000 ± 5%"
        );
        assert!(granted.iter().all(|&n| n > 0), "{granted:?}");
        // Another project's bucket is its own.
        assert_eq!(
            stores[0].lease("project-b", per_minute, 5).await.unwrap(),
            Lease::Granted(5)
        );

        // A pause by one is a pause for all, and saves nothing up.
        stores[0]
            .pause("project-a", Duration::from_secs(30))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            stores[2].lease("project-a", per_minute, 25).await.unwrap(),
            Lease::Paused(Duration::from_secs(20))
        );
        // A shorter pause never shortens it.
        stores[1]
            .pause("project-a", Duration::from_secs(1))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(20));
        assert!(matches!(
            stores[1].lease("project-a", per_minute, 25).await.unwrap(),
            Lease::Empty(_)
        ));
        clock.advance(Duration::from_millis(10));
        assert_eq!(
            stores[1].lease("project-a", per_minute, 25).await.unwrap(),
            Lease::Granted(10),
            "10 ms after the pause: 10 ms' worth, not 30 s' worth"
        );
        // In the cool-down after it (30 s), a 429 does not pause again.
        stores[2]
            .pause("project-a", Duration::from_secs(5))
            .await
            .unwrap();
        clock.advance(Duration::from_millis(10));
        assert_eq!(
            stores[0].lease("project-a", per_minute, 25).await.unwrap(),
            Lease::Granted(10),
            "not paused in the cool-down"
        );
        clock.advance(Duration::from_secs(30));
        stores[2]
            .pause("project-a", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            stores[0].lease("project-a", per_minute, 25).await.unwrap(),
            Lease::Paused(Duration::from_secs(5)),
            "after the cool-down a 429 pauses again"
        );

        // On the server's clock (production): a lease is granted at once.
        let server_time = RedisQuota::new(&config).unwrap();
        assert!(matches!(
            server_time.lease("project-c", per_minute, 5).await.unwrap(),
            Lease::Granted(5)
        ));
    })
    .await
    .unwrap();
}
