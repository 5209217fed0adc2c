//! The binary as operators run it: secrets never reach the output, JSON logs
//! carry per-job progress, and check-config masks or explains.
//!
//! No secret reaches a log line or an answer: the real binary runs the demo
//! (both Google APIs, token-auth APNs, HMS) with every crate logging at trace
//! level, and its output is searched for keys, JWTs, access tokens, server
//! keys and client secrets.
//! What it leaves out: secrets the demo does not use (PKCS#12 passwords,
//! webhook secrets), which config tests cover through `Debug` and masking.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn trace_logs_and_output_carry_no_secret() {
    for google in ["fcm", "gcm"] {
        let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args([
                "demo",
                "--exit",
                "--listen",
                "127.0.0.1:0",
                "--tokens",
                "200",
                "--google",
                google,
            ])
            .env("PUSHGATE_LOG", "trace")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "demo failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.lines().count() > 1000, "trace logging was not on");
        for (what, needle) in [
            ("a private key", "PRIVATE KEY"),
            ("an APNs JWT", "bearer eyJ"),
            ("a JWT (typ first, as jsonwebtoken writes it)", "eyJ0eXAi"),
            ("a JWT (alg first)", "eyJhbGci"),
            ("an OAuth access token", "ya29."),
            ("the legacy server key", "demo-server-key"),
            ("an HMS access token in a header", "Bearer DgEAA"),
            (
                "an HMS access token in an answer",
                "\"access_token\":\"DgEAA",
            ),
            ("the HMS client secret in a form", "client_secret="),
        ] {
            assert!(
                !text.contains(needle),
                "{what} ({needle:?}) appeared in the {google} demo's output"
            );
        }
    }
}

#[test]
fn json_logs_carry_job_progress_and_summary_lines() {
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "--log-format",
            "json",
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "2500",
        ])
        // Info, and the job table's progress lines (debug) too.
        .env("PUSHGATE_LOG", "info,pushgate::report=debug")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_owned();
    assert!(
        lines.iter().any(|v| message(v) == "job accepted"),
        "{stderr}"
    );
    let progress: Vec<_> = lines
        .iter()
        .filter(|v| message(v) == "job progress")
        .collect();
    assert!(
        progress.len() >= 9,
        "a line per 10% of a 2,500-token job: saw {}",
        progress.len()
    );
    assert!(
        progress.iter().all(|v| v["level"] == "DEBUG"),
        "progress is at debug: info keeps one line per job accepted and one when done"
    );
    let done: Vec<_> = lines.iter().filter(|v| message(v) == "job done").collect();
    assert_eq!(
        done.len(),
        4,
        "one summary per job (APNs, Android, Web Push, HMS)"
    );
    for d in done {
        // The demo's Web Push job has at most 1,000 subscriptions.
        let total = if d["fields"]["platform"] == "webpush" {
            1000
        } else {
            2500
        };
        assert_eq!(d["fields"]["total"], total);
        assert!(d["fields"]["successes"].as_u64().unwrap() > total * 8 / 10);
        assert!(d["fields"]["tokens_per_s"].is_number());
    }
}

#[test]
fn check_config_prints_masked_config_or_fails_with_every_reason() {
    let dir = std::env::temp_dir().join(format!("pushgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[server]\napi_keys = [\"key-0123456789abcdef\"]\n[gcm]\nserver_key = \"AIzaSecretSecret\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("platforms gcm (default)") && stdout.contains("********"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("AIzaSecretSecret") && !stdout.contains("key-0123456789abcdef"),
        "{stdout}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[apns]\nkey_file = \"/missing.p8\"\nkey_id = \"short\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["server.listen", "apns.key_file"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
    // Overrides from the environment apply and are checked too.
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["check-config"])
        .arg(&good)
        .env("PUSHGATE_QUEUE_CAPACITY", "many")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PUSHGATE_QUEUE_CAPACITY"));
}

/// `pushgate demo` tells its story on stdout with no log line in between:
/// its gateway logs at warn until the sample jobs are reported (unless
/// PUSHGATE_LOG asks for more), and the format comes from
/// PUSHGATE_LOG_FORMAT when no flag is given.
#[test]
fn the_demo_narrative_has_no_log_lines_between_its_steps() {
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "300",
        ])
        .env_remove("PUSHGATE_LOG")
        .env_remove("RUST_LOG")
        .env("PUSHGATE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let info: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))["level"]
                == "INFO"
        })
        .collect();
    assert!(info.is_empty(), "info lines during the demo: {info:#?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("GET /apns/report ->"), "{stdout}");
}
