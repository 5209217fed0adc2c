//! `pushgate send` and `pushgate check-config --connect`, the real binary
//! against the mocks: a TTY (through `script`) draws the bar, a pipe gets
//! plain lines, exit codes 0/1/2, `--server` mode, unregistered tokens
//! written out, credentials proven or refused. No timing asserts.
//!
//! What it leaves out: the TTY test needs util-linux `script`; where it is
//! missing that one test says so and checks nothing else.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use pushgate::config::FileConfig;
use pushgate::mock::{self, Faults, MockHandle};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pushgate")
}

/// A mock APNs and a config file reaching it (`tweak` edits the section).
async fn apns_setup(
    name: &str,
    tweak: impl FnOnce(&mut pushgate::config::ApnsSection),
) -> (MockHandle, PathBuf, PathBuf) {
    let dir = scratch(name);
    let (mock, mut section) = apns_mock_for_process(&dir, Faults::default(), 100).await;
    tweak(&mut section);
    let file = FileConfig {
        apns: Some(section),
        ..FileConfig::default()
    };
    let path = dir.join("pushgate.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    (mock, path, dir)
}

/// Runs the binary off the runtime (the mocks keep running on it).
async fn run(args: Vec<String>, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(bin())
            .args(&args)
            .env_remove("PUSHGATE_LOG")
            .env_remove("PUSHGATE_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn tokens_file(dir: &Path, tokens: &[String]) -> PathBuf {
    let path = dir.join("tokens.txt");
    std::fs::write(&path, format!("# tokens\n{}\n\n", tokens.join("\n"))).unwrap();
    path
}

#[tokio::test]
async fn through_a_pipe_plain_lines_summary_unregistered_out_and_exit_1() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (mock, config, dir) = apns_setup("send-pipe", |_| {}).await;
        let mut tokens: Vec<String> = (0..300).map(|i| apns_token("a1a1", i)).collect();
        let dead: Vec<String> = (0..3).map(|i| apns_token("dead", i)).collect();
        tokens.extend(dead.iter().cloned());
        tokens.push(apns_token("bad0", 1));
        let file = tokens_file(&dir, &tokens);
        let out_file = dir.join("unregistered.txt");
        let out = run(
            vec![
                "send".into(),
                "apns".into(),
                "--config".into(),
                config.display().to_string(),
                "--tokens-file".into(),
                file.display().to_string(),
                "--title".into(),
                "Hi".into(),
                "--body".into(),
                "there".into(),
                "--unregistered-out".into(),
                out_file.display().to_string(),
                "--chunk".into(),
                "100".into(),
            ],
            None,
        )
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("progress: 304/304 tokens (100.0%)"),
            "{stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "no escape codes on a pipe: {stderr:?}"
        );
        assert!(stdout.contains("success               300"), "{stdout}");
        assert!(stdout.contains("unregistered            3"), "{stdout}");
        assert!(
            stdout.contains("failed                  1  (BadDeviceToken 1)"),
            "{stdout}"
        );
        assert!(stdout.contains("total                 304"), "{stdout}");
        let mut written: Vec<String> = std::fs::read_to_string(&out_file)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        written.sort();
        assert_eq!(written, dead);
        let seen = mock.ledger.request(&tokens[0]).unwrap();
        assert_eq!(
            seen.json(),
            serde_json::json!({"aps": {"alert": {"title": "Hi", "body": "there"}}})
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn all_delivered_is_exit_0_and_usage_errors_are_exit_2() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (mock, config, _dir) = apns_setup("send-ok", |_| {}).await;
        let c = config.display().to_string();
        let t1 = apns_token("b1b1", 1);
        let t2 = apns_token("b1b1", 2);
        let out = run(
            s(&[
                "send", "apns", "--config", &c, "--token", &t1, "--token", &t2, "--alert", "hello",
            ]),
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(mock.ledger.token(&t1).deliveries, 1);
        assert_eq!(
            mock.ledger.request(&t2).unwrap().json(),
            serde_json::json!({"aps": {"alert": "hello"}})
        );
        // Tokens from stdin with `-`.
        let out = run(
            s(&[
                "send",
                "apns",
                "--config",
                &c,
                "-",
                "--payload",
                r#"{"aps":{"badge":3}}"#,
            ]),
            Some(format!("{}\n", apns_token("b1b1", 3))),
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        for (args, needle) in [
            (
                s(&["send", "apns", "--config", &c, "--alert", "x"]),
                "no tokens",
            ),
            (
                s(&["send", "apns", "--config", &c, "--token", &t1]),
                "no message",
            ),
            (
                s(&["send", "webpush", "--token", "x", "--alert", "x"]),
                "not --token",
            ),
            (
                s(&[
                    "send", "fcm", "--config", &c, "--token", "x", "--alert", "x",
                ]),
                "no FCM credentials",
            ),
            (
                s(&[
                    "send", "apns", "--config", &c, "--token", "zz", "--alert", "x",
                ]),
                "no_valid_tokens",
            ),
            (
                s(&[
                    "send",
                    "apns",
                    "--config",
                    &c,
                    "--token",
                    &t1,
                    "--payload",
                    "{nope",
                ]),
                "not JSON",
            ),
        ] {
            let out = run(args.clone(), None).await;
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(needle),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn refused_credentials_are_exit_2() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_mock, config, _dir) =
            apns_setup("send-badkey", |a| a.team_id = "WRONGTEAM1".into()).await;
        let out = run(
            s(&[
                "send",
                "apns",
                "--config",
                &config.display().to_string(),
                "--token",
                &apns_token("c1c1", 1),
                "--alert",
                "x",
            ]),
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("refused the credentials"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("InvalidProviderToken"),
            "{}",
            text(&out.stdout)
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn through_a_tty_the_progress_bar_is_drawn() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        if Command::new("script").arg("--version").output().is_err() {
            eprintln!("util-linux `script` is missing: the TTY test cannot run here");
            return;
        }
        let (_mock, config, dir) = apns_setup("send-tty", |_| {}).await;
        let tokens: Vec<String> = (0..2000).map(|i| apns_token("d1d1", i)).collect();
        let file = tokens_file(&dir, &tokens);
        let command = format!(
            "{} send apns --config {} --tokens-file {} --alert hi",
            bin(),
            config.display(),
            file.display()
        );
        // `script` gives the command a pseudo-terminal and copies what it drew.
        let out = tokio::task::spawn_blocking(move || {
            Command::new("script")
                .args(["-qec", &command, "/dev/null"])
                .env("TERM", "xterm")
                .env_remove("PUSHGATE_LOG")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let screen = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{screen}");
        assert!(screen.contains("2000/2000 tokens"), "{screen:?}");
        assert!(screen.contains("ETA"), "{screen:?}");
        assert!(
            screen.contains("[=") || screen.contains("=]"),
            "the bar itself: {screen:?}"
        );
        assert!(
            !screen.contains("progress: "),
            "no plain lines on a TTY: {screen:?}"
        );
        assert!(screen.contains("success              2000"), "{screen:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn server_mode_posts_to_a_running_gateway_and_follows_the_job() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let key = "send-test-key-0123456789";
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f: &mut FileConfig| {
                f.server.api_keys = vec![pushgate::config::Secret::new(key)];
            }),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..50).map(|i| apns_token("e1e1", i)).collect();
        let url = env.gateway.url();
        let out = run(
            s(&[
                "send",
                "apns",
                "--server",
                &url,
                "--api-key",
                key,
                "-",
                "--alert",
                "remote",
                // More tokens than a chunk: one streamed (NDJSON) request.
                "--chunk",
                "20",
            ]),
            Some(tokens.join("\n")),
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("success                50"),
            "{}",
            text(&out.stdout)
        );
        let jobs = text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("jobs: ").map(|j| j.split(' ').count()));
        assert_eq!(
            jobs,
            Some(1),
            "one job for the whole stream: {}",
            text(&out.stdout)
        );
        assert_eq!(env.counters().successes, 50);
        // A wrong key is a usage error.
        let out = run(
            s(&[
                "send",
                "apns",
                "--server",
                &url,
                "--api-key",
                "wrong-key-0123456789",
                "--token",
                &tokens[0],
                "--alert",
                "x",
            ]),
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn fcm_topic_send_from_the_terminal() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = google_env(GoogleApi::V1, Faults::default(), |_| {}).await;
        let url = env.gateway.url();
        let out = run(
            s(&[
                "send", "fcm", "--server", &url, "--topic", "news", "--title", "T", "--body", "B",
            ]),
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let seen = env.mock.ledger.request("/topics/news").unwrap().json();
        assert_eq!(
            seen["message"]["notification"],
            serde_json::json!({"title": "T", "body": "B"})
        );
    })
    .await
    .unwrap();
}

/// An `[fcm]` or `[gcm]` config reaching `mock` (written under `dir`).
fn google_config(
    dir: &Path,
    mock: &MockHandle,
    account: &mock::fcm::ServiceAccountFixture,
    legacy_key: Option<&str>,
) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &mock.ca_pem).unwrap();
    let mut file = FileConfig::default();
    match legacy_key {
        None => {
            let sa = dir.join("sa.json");
            std::fs::write(&sa, account.to_json(&format!("{}/token", mock.url()))).unwrap();
            file.fcm = Some(pushgate::config::FcmSection {
                service_account_file: sa.display().to_string(),
                endpoint: mock.url(),
                ca_file: ca.display().to_string(),
                ..Default::default()
            });
        }
        Some(key) => {
            file.gcm = Some(pushgate::config::GcmSection {
                server_key: pushgate::config::Secret::new(key),
                endpoint: format!("{}/fcm/send", mock.url()),
                ca_file: ca.display().to_string(),
                ..Default::default()
            });
        }
    }
    let path = dir.join(format!("google-{}.toml", legacy_key.is_some()));
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn check_config_connect_proves_good_credentials_and_names_bad_ones() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_good_mock, good, _d1) = apns_setup("connect-good", |_| {}).await;
        let out = run(
            s(&["check-config", "--connect", &good.display().to_string()]),
            None,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("✔ apns default: credentials accepted"),
            "{}",
            text(&out.stdout)
        );

        let (_bad_mock, bad, _d2) =
            apns_setup("connect-bad", |a| a.key_id = "OTHERKEY01".into()).await;
        let out = run(
            s(&["check-config", "--connect", &bad.display().to_string()]),
            None,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout)
                .contains("✘ apns default: credentials refused: InvalidProviderToken (403)"),
            "{}",
            text(&out.stdout)
        );

        let dir = scratch("connect-google");
        let pki = mock::tls::TestPki::generate().unwrap();
        let account = mock::fcm::ServiceAccountFixture::generate("pushgate-test").unwrap();
        let fcm = mock::fcm::start(mock::fcm::MockFcmOptions::new(&account, SERVER_KEY, &pki))
            .await
            .unwrap();
        let v1 = google_config(&dir, &fcm, &account, None);
        let out = run(
            s(&["check-config", "--connect", &v1.display().to_string()]),
            None,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("✔ fcm default: credentials accepted"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(
            fcm.ledger.token("pushgate-credential-check").deliveries,
            0,
            "validate_only delivers nothing"
        );

        let legacy = google_config(&dir, &fcm, &account, Some("not-the-server-key"));
        let out = run(
            s(&["check-config", "--connect", &legacy.display().to_string()]),
            None,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("✘ gcm default: credentials refused"),
            "{}",
            text(&out.stdout)
        );
    })
    .await
    .unwrap();
}

/// A mock Web Push service bound to a fresh VAPID key, and a config file
/// (`[webpush]`) reaching it.
async fn webpush_setup(name: &str) -> (pushgate::mock::webpush::MockWebPush, PathBuf, PathBuf) {
    init();
    let dir = scratch(name);
    let pki = mock::tls::TestPki::generate().unwrap();
    let key = pushgate::webpush::vapid::VapidKey::generate().unwrap();
    let mut opts = mock::webpush::MockWebPushOptions::new(&pki);
    opts.expected_key = Some(key.public_key_b64().to_owned());
    let push = mock::webpush::start(opts).await.unwrap();
    let key_file = dir.join("vapid.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let file = FileConfig {
        webpush: Some(pushgate::config::WebPushSection {
            vapid_key_file: key_file.display().to_string(),
            subject: "mailto:ops@example.com".into(),
            ca_file: ca_file.display().to_string(),
            allowed_origins: vec![push.origin()],
            max_retries: 2,
            ..Default::default()
        }),
        ..FileConfig::default()
    };
    let path = dir.join("pushgate.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    (push, path, dir)
}

#[tokio::test]
async fn webpush_subscriptions_from_flags_a_file_and_stdin_summary_unregistered_and_exit_codes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (push, config, dir) = webpush_setup("send-webpush").await;
        let ok: Vec<String> = (0..5)
            .map(|i| push.subscription("ok", &format!("s{i}")).to_string())
            .collect();
        let gone = push.subscription("gone", "g1");
        let subs_file = dir.join("subs.jsonl");
        std::fs::write(
            &subs_file,
            format!("# subscriptions\n{}\n\n", ok.join("\n")),
        )
        .unwrap();
        let out_file = dir.join("unregistered.txt");
        let out = run(
            vec![
                "send".into(),
                "webpush".into(),
                "--config".into(),
                config.display().to_string(),
                "--subscriptions-file".into(),
                subs_file.display().to_string(),
                "--subscription".into(),
                gone.to_string(),
                "--title".into(),
                "Hi".into(),
                "--body".into(),
                "there".into(),
                "--unregistered-out".into(),
                out_file.display().to_string(),
            ],
            None,
        )
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(stderr.contains("progress: 6/6 tokens (100.0%)"), "{stderr}");
        assert!(stdout.contains("success                 5"), "{stdout}");
        assert!(stdout.contains("unregistered            1"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(&out_file).unwrap(),
            format!("{}\n", gone["endpoint"].as_str().unwrap())
        );

        // From stdin, all delivered: exit 0.
        let out = run(
            vec![
                "send".into(),
                "webpush".into(),
                "--config".into(),
                config.display().to_string(),
                "--payload".into(),
                r#"{"title":"p"}"#.into(),
                "-".into(),
            ],
            Some(format!("{}\n{}\n", ok[0], ok[1])),
        )
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("success                 2"), "{stdout}");

        // Usage errors: exit 2 with a message.
        for (extra, want) in [
            (vec![], "no subscriptions"),
            (
                vec!["--subscription".to_owned(), "not json".to_owned()],
                "not a JSON subscription",
            ),
            (vec!["--token".to_owned(), "abc".to_owned()], "not --token"),
        ] {
            let mut args = s(&["send", "webpush", "--alert", "x", "--config"]);
            args.push(config.display().to_string());
            args.extend(extra);
            let out = run(args, None).await;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{want}: {stderr}");
            assert!(stderr.contains(want), "{want}: {stderr}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn check_config_connect_signs_a_vapid_jwt_per_web_push_app_and_names_a_bad_key() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (push, config, dir) = webpush_setup("connect-webpush").await;
        let public = pushgate::webpush::vapid::VapidKey::from_pem(
            &std::fs::read(dir.join("vapid.pem")).unwrap(),
        )
        .unwrap()
        .public_key_b64()
        .to_owned();
        let out = run(
            s(&["check-config", "--connect", &config.display().to_string()]),
            None,
        )
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!(
                "✔ webpush default: VAPID JWT signed (ES256) and verified; public key (applicationServerKey) {public}"
            )),
            "{stdout}"
        );
        // A key file that is no key: a config error (exit 2) naming it.
        std::fs::write(dir.join("vapid.pem"), "not a key").unwrap();
        let out = run(
            s(&["check-config", "--connect", &config.display().to_string()]),
            None,
        )
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("webpush.vapid_key_file"), "{stderr}");
        drop(push);
    })
    .await
    .unwrap();
}

/// `pushgate send hms` with the credentials as flags (no config file): tokens
/// from a file, a data object and a title/body, illegal tokens written out
/// as unregistered, exit 1 (not everything delivered); all valid is exit 0.
#[tokio::test]
async fn send_hms_with_flag_credentials_writes_the_illegal_tokens_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("send-hms");
        let (mock, hms) = hms_mock_for_process(&dir, |_| {}).await;
        let mut tokens: Vec<String> = (0..250).map(|i| format!("hms-device-{i}")).collect();
        tokens.extend((0..4).map(|i| format!("illegal-{i}")));
        let file = tokens_file(&dir, &tokens);
        let out_file = dir.join("unregistered.txt");
        let flags = |file: &Path| {
            vec![
                "send".to_owned(),
                "hms".into(),
                "--app-id".into(),
                hms.app_id.clone(),
                "--client-secret-file".into(),
                hms.client_secret_file.clone(),
                "--endpoint".into(),
                hms.endpoint.clone(),
                "--token-uri".into(),
                hms.token_uri.clone(),
                "--ca-file".into(),
                hms.ca_file.clone(),
                "--tokens-file".into(),
                file.display().to_string(),
                "--title".into(),
                "Hi".into(),
                "--body".into(),
                "there".into(),
                "--payload".into(),
                r#"{"order":"42"}"#.into(),
            ]
        };
        let mut args = flags(&file);
        args.extend([
            "--unregistered-out".to_owned(),
            out_file.display().to_string(),
        ]);
        let out = run(args, None).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(stdout.contains("success               250"), "{stdout}");
        assert!(stdout.contains("unregistered            4"), "{stdout}");
        let written = std::fs::read_to_string(&out_file).unwrap();
        let mut listed: Vec<&str> = written.lines().collect();
        listed.sort_unstable();
        assert_eq!(listed, ["illegal-0", "illegal-1", "illegal-2", "illegal-3"]);
        let got = mock.inbox.last("hms-device-7").unwrap();
        assert_eq!(got.data.as_deref(), Some(r#"{"order":"42"}"#));
        assert_eq!((got.title(), got.body()), (Some("Hi"), Some("there")));

        let good = tokens_file(&dir, &tokens[..10]);
        let out = run(flags(&good), None).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let mut topic = flags(&good);
        topic.extend(["--topic".to_owned(), "news".into()]);
        assert_eq!(run(topic, None).await.status.code(), Some(2));
    })
    .await
    .unwrap();
}

/// `check-config --connect` with `[hms]`: an access token, then one
/// `validate_only` message that delivers nothing; a wrong secret is named
/// with Huawei's error and sub_error.
#[tokio::test]
async fn check_config_connect_proves_hms_credentials_and_names_a_wrong_secret() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("connect-hms");
        let (mock, hms) = hms_mock_for_process(&dir, |_| {}).await;
        let write = |name: &str, hms: &pushgate::config::HmsSection| {
            let path = dir.join(name);
            let file = FileConfig {
                hms: Some(hms.clone()),
                ..FileConfig::default()
            };
            std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
            path
        };
        let good = write("good.toml", &hms);
        let out = run(
            s(&["check-config", "--connect", &good.display().to_string()]),
            None,
        )
        .await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains("✔ hms default: credentials accepted"),
            "{stdout}"
        );
        assert_eq!(pushgate::mock::hms::Inbox::get(&mock.inbox.validated), 1);
        assert_eq!(
            mock.handle
                .ledger
                .token("pushgate-credential-check")
                .deliveries,
            0
        );

        let secret = dir.join("wrong.secret");
        std::fs::write(&secret, "Wrong+Secret/0=").unwrap();
        let bad = write(
            "bad.toml",
            &pushgate::config::HmsSection {
                client_secret_file: secret.display().to_string(),
                ..hms.clone()
            },
        );
        let out = run(
            s(&["check-config", "--connect", &bad.display().to_string()]),
            None,
        )
        .await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.contains("✘ hms default: credentials refused"),
            "{stdout}"
        );
        assert!(stdout.contains("sub_error 12304"), "{stdout}");
        assert!(!stdout.contains("Wrong+Secret"), "{stdout}");
    })
    .await
    .unwrap();
}

/// `--idempotency-key`: running the same send twice with one key makes one
/// job; the second run follows the first's job and nothing is sent twice.
#[tokio::test]
async fn a_send_run_again_with_its_idempotency_key_sends_nothing_twice() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens: Vec<String> = (0..5).map(|i| apns_token("e2e2", i)).collect();
        let url = env.gateway.url();
        let args = [
            "send",
            "apns",
            "--server",
            &url,
            "-",
            "--alert",
            "once",
            "--idempotency-key",
            "cli-order-1",
        ];
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let out = run(s(&args), Some(tokens.join("\n"))).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            jobs.push(
                text(&out.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("jobs: ").map(str::to_owned))
                    .unwrap_or_else(|| panic!("no jobs line: {}", text(&out.stdout))),
            );
        }
        assert_eq!(jobs[0], jobs[1], "the second run follows the first job");
        assert_eq!(env.counters().accepted, 5);
        for t in &tokens {
            assert_eq!(env.mock.ledger.token(t).deliveries, 1, "{t}");
        }
    })
    .await
    .unwrap();
}
