//! No secret reaches a log line or an answer: the real binary runs the demo
//! (both Google APIs, token-auth APNs) with every crate logging at trace level,
//! and its output is searched for keys, JWTs, access tokens and server keys.
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
        ] {
            assert!(
                !text.contains(needle),
                "{what} ({needle:?}) appeared in the {google} demo's output"
            );
        }
    }
}
