use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn messages(e: ConfigErrors) -> String {
    e.to_string()
}

#[test]
fn empty_file_gives_defaults_with_no_platform() {
    let cfg = FileConfig::parse("", "t", env(&[]))
        .expect("parse")
        .validate()
        .expect("valid");
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.queue_capacity, 1_000_000);
    assert_eq!(cfg.max_list, 100_000);
    assert!(cfg.apns.is_none() && cfg.google.is_none());
}

#[test]
fn env_overrides_are_typed_by_the_key() {
    let file = FileConfig::parse(
        "[server]\nlisten = \"0.0.0.0:1\"\n",
        "t",
        env(&[
            ("PUSHGATE_SERVER_LISTEN", "127.0.0.1:9999"),
            ("PUSHGATE_QUEUE_CAPACITY", "42"),
            (
                "PUSHGATE_SERVER_API_KEYS",
                "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb",
            ),
            ("PUSHGATE_APNS_KEY_ID", "1234567890"),
            ("PUSHGATE_LOG", "debug"),
            ("HOME", "/root"),
        ]),
    )
    .expect("parse");
    assert_eq!(file.server.listen, "127.0.0.1:9999");
    assert_eq!(file.queue.capacity, 42);
    assert_eq!(file.server.api_keys.len(), 2);
    // A numeric-looking id stays a string, and setting it creates [apns].
    assert_eq!(
        file.apns.as_ref().map(|a| a.key_id.as_str()),
        Some("1234567890")
    );
}

#[test]
fn env_override_with_wrong_type_or_unknown_key_is_refused() {
    let err = FileConfig::parse(
        "",
        "t",
        env(&[
            ("PUSHGATE_QUEUE_CAPACITY", "lots"),
            ("PUSHGATE_APNS_KEYFILE", "x"),
        ]),
    )
    .expect_err("refused");
    let text = messages(err);
    assert!(
        text.contains("PUSHGATE_QUEUE_CAPACITY") && text.contains("integer"),
        "{text}"
    );
    assert!(
        text.contains("apns.keyfile is not a configuration key"),
        "{text}"
    );
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    let err = FileConfig::parse("[apns]\nkeyfile = \"x\"\n", "pushgate.toml", env(&[]))
        .expect_err("refused");
    assert!(messages(err).contains("keyfile"));
}

#[test]
fn missing_key_file_names_the_key_the_value_and_the_fix() {
    let file = FileConfig::parse(
        "[apns]\nkey_file = \"/nonexistent/AuthKey_ABC.p8\"\nkey_id = \"ABCDEFGHIJ\"\nteam_id = \"TEAM123456\"\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("apns.key_file"), "{text}");
    assert!(text.contains("/nonexistent/AuthKey_ABC.p8"), "{text}");
    assert!(text.contains("fix:"), "{text}");
}

#[test]
fn token_and_certificate_auth_together_are_refused() {
    let file = FileConfig::parse(
        "[apns]\nkey_file = \"a.p8\"\ncert_file = \"c.pem\"\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("both token auth"), "{text}");
}

#[test]
fn bad_endpoint_and_no_credentials_are_reported_together() {
    let file = FileConfig::parse("[apns]\nendpoint = \"ftp://x\"\n", "t", env(&[])).expect("parse");
    let err = file.validate().expect_err("refused");
    assert!(!err.0.is_empty());
    let text = messages(err);
    assert!(text.contains("apns.endpoint"), "{text}");
}

#[test]
fn fcm_and_gcm_together_are_refused() {
    let file =
        FileConfig::parse("[fcm]\n[gcm]\nserver_key = \"k\"\n", "t", env(&[])).expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("only one may be configured"), "{text}");
}

#[test]
fn gcm_batch_size_is_bounded_by_the_protocol() {
    let file = FileConfig::parse(
        "[gcm]\nserver_key = \"k\"\nbatch_size = 1001\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("gcm.batch_size"), "{text}");
}

#[test]
fn short_api_keys_are_refused_without_showing_them() {
    let file =
        FileConfig::parse("[server]\napi_keys = [\"hunter2\"]\n", "t", env(&[])).expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("server.api_keys"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn masked_toml_hides_every_secret() {
    let file = FileConfig::parse(
        "[server]\napi_keys = [\"supersecretkey-0001\"]\n[gcm]\nserver_key = \"AIzaSECRET\"\n[apns]\npkcs12_password = \"p12secret\"\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let shown = file.to_masked_toml();
    for secret in ["supersecretkey-0001", "AIzaSECRET", "p12secret"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(shown.contains("********"));
    assert!(!format!("{file:?}").contains("AIzaSECRET"));
}

#[test]
fn readable_credentials_validate() {
    let dir = std::env::temp_dir().join(format!("pushgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (p8, _) = crate::mock::apns::generate_provider_key().expect("key");
    let key_path = dir.join("AuthKey_ABCDEFGHIJ.p8");
    std::fs::write(&key_path, p8).expect("write");
    let pki = crate::mock::tls::TestPki::generate().expect("pki");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).expect("write");
    let text = format!(
        "[apns]\nendpoint = \"https://127.0.0.1:4443\"\nca_file = {:?}\nkey_file = {:?}\nkey_id = \"ABCDEFGHIJ\"\nteam_id = \"TEAM123456\"\ntopic = \"com.example\"\n",
        ca_path.display().to_string(),
        key_path.display().to_string()
    );
    let cfg = FileConfig::parse(&text, "t", env(&[]))
        .expect("parse")
        .validate()
        .expect("valid");
    let apns = cfg.apns.expect("apns");
    let apns = apns.default_app();
    assert_eq!(
        (apns.upstream.host.as_str(), apns.upstream.port),
        ("127.0.0.1", 4443)
    );
    assert_eq!(apns.upstream.extra_roots.len(), 1);
    assert!(matches!(apns.auth, ApnsAuth::Token { .. }));
    assert!(!format!("{:?}", apns.auth).contains("PRIVATE"));
}

#[test]
fn apps_inherit_unset_keys_but_not_the_other_auth_mode() {
    let file = FileConfig::parse(
        "[apns]\nendpoint = \"sandbox\"\nkey_file = \"a.p8\"\nkey_id = \"ABCDEFGHIJ\"\nteam_id = \"TEAM123456\"\nmax_retries = 9\n\
         [apns.apps.beta]\ntopic = \"com.beta\"\n\
         [apns.apps.certs]\ncert_file = \"c.pem\"\ncert_key_file = \"c.key\"\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let apns = file.apns.expect("apns");
    let beta = &apns.apps["beta"];
    assert_eq!(
        (
            beta.endpoint.as_str(),
            beta.key_id.as_str(),
            beta.max_retries,
            beta.topic.as_str()
        ),
        ("sandbox", "ABCDEFGHIJ", 9, "com.beta")
    );
    let certs = &apns.apps["certs"];
    assert_eq!(
        certs.key_file, "",
        "token auth is not inherited by an app that names certificate auth"
    );
    assert_eq!(certs.endpoint, "sandbox");
}

#[test]
fn app_problems_name_the_app() {
    let file = FileConfig::parse(
        "[gcm]\nserver_key = \"k\"\n[gcm.apps.b2b]\nbatch_size = 5000\n",
        "t",
        env(&[]),
    )
    .expect("parse");
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("gcm.apps.b2b.batch_size"), "{text}");
    let err = FileConfig::parse(
        "[gcm]\nserver_key = \"k\"\n[gcm.apps.default]\nbatch_size = 5\n",
        "t",
        env(&[]),
    )
    .expect_err("refused");
    assert!(messages(err).contains("default app"));
}

#[test]
fn pool_and_ping_keys_have_defaults_env_overrides_and_refuse_zero() {
    let file = FileConfig::parse(
        "[apns]\nping_timeout_s = 0\nidle_shrink_s = 0\n",
        "t",
        env(&[("PUSHGATE_APNS_GROW_INTERVAL_MS", "250")]),
    )
    .expect("parse");
    let apns = file.apns.as_ref().expect("apns");
    assert_eq!((apns.grow_interval_ms, apns.ping_interval_s), (250, 10));
    let text = messages(file.validate().expect_err("refused"));
    assert!(text.contains("apns.ping_timeout_s"), "{text}");
    assert!(text.contains("apns.idle_shrink_s"), "{text}");
    assert!(!text.contains("apns.grow_interval_ms"), "{text}");
}

#[test]
fn redis_backend_is_validated_and_defaults_its_consumer() {
    let cfg = FileConfig::parse(
        "[queue]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6390\"\n",
        "t",
        env(&[("PUSHGATE_QUEUE_CLAIM_IDLE_MS", "2000")]),
    )
    .expect("parse")
    .validate()
    .expect("valid");
    let redis = cfg.redis.expect("redis backend");
    assert_eq!(redis.url, "redis://127.0.0.1:6390");
    assert_eq!(
        (redis.stream.as_str(), redis.group.as_str()),
        ("pushgate", "pushgate")
    );
    assert_eq!(redis.claim_idle, Duration::from_millis(2000));
    assert!(
        redis
            .consumer
            .ends_with(&format!("-{}", std::process::id()))
    );

    let memory = FileConfig::parse("", "t", env(&[]))
        .expect("parse")
        .validate()
        .expect("valid");
    assert!(memory.redis.is_none());

    let err = FileConfig::parse(
        "[queue]\nbackend = \"redis\"\nredis_url = \"http://x\"\nstream = \"\"\nclaim_idle_ms = 5\n",
        "t",
        env(&[]),
    )
    .expect("parse")
    .validate()
    .map(drop)
    .expect_err("invalid");
    let text = messages(err);
    for key in ["queue.redis_url", "queue.stream", "queue.claim_idle_ms"] {
        assert!(text.contains(key), "{key} not named in {text}");
    }
    let err = FileConfig::parse("[queue]\nbackend = \"kafka\"\n", "t", env(&[]))
        .expect("parse")
        .validate()
        .map(drop)
        .expect_err("unknown backend");
    assert!(messages(err).contains("\"redis\""));
}

#[test]
fn redis_tls_auth_keys_are_read_and_the_password_never_shown() {
    let dir = std::env::temp_dir().join(format!("pushgate-cfg-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("redis-password");
    std::fs::write(&pw, "s3cret-from-file\n").expect("write");
    let ca = dir.join("ca.pem");
    let pki = crate::mock::tls::TestPki::generate().expect("pki");
    std::fs::write(&ca, &pki.ca_pem).expect("write");
    let text = format!(
        "[queue]\nbackend = \"redis\"\nredis_url = \"rediss://app:urlsecret@db.internal:6380/1\"\n\
         redis_password_file = {:?}\nredis_ca_file = {:?}\n",
        pw.display().to_string(),
        ca.display().to_string()
    );
    let file = FileConfig::parse(&text, "t", env(&[])).expect("parse");
    let masked = file.to_masked_toml();
    assert!(!masked.contains("urlsecret"), "{masked}");
    assert!(
        masked.contains("rediss://app:********@db.internal:6380/1"),
        "{masked}"
    );
    let redis = file.validate().expect("valid").redis.expect("redis");
    assert_eq!(
        redis.password.as_ref().map(|p| p.expose()),
        Some("s3cret-from-file")
    );
    assert_eq!(redis.ca_pem.as_deref(), Some(pki.ca_pem.as_bytes()));
    assert!(!format!("{redis:?}").contains("s3cret-from-file"));

    // A CA file without TLS, and a bad URL, are refused without the password.
    let err = FileConfig::parse(
        &format!(
            "[queue]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@h:nope\"\nredis_ca_file = {:?}\n",
            ca.display().to_string()
        ),
        "t",
        env(&[]),
    )
    .expect("parse")
    .validate()
    .map(drop)
    .expect_err("invalid");
    let text = messages(err);
    assert!(text.contains("queue.redis_ca_file"), "{text}");
    assert!(text.contains("queue.redis_url"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[webpush]` through the whole loader.
mod webpush {
    use crate::config::FileConfig;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pushgate-webpush-config-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    fn errors_of(toml: &str) -> String {
        let file =
            FileConfig::parse(toml, "test.toml", Vec::<(String, String)>::new()).expect("parses");
        match file.validate() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_section_validates_and_apps_inherit_the_subject() {
        let d = dir();
        let key = d.join("vapid.pem");
        let pem = crate::webpush::vapid::VapidKey::generate()
            .expect("key")
            .to_pkcs8_pem()
            .expect("pem");
        std::fs::write(&key, pem).expect("write");
        let other = d.join("other.pem");
        std::fs::write(
            &other,
            crate::webpush::vapid::VapidKey::generate()
                .expect("key")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("write");
        let toml = format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"mailto:ops@example.com\"\nallowed_origins = [\"https://push.example.com\"]\n[webpush.apps.shop]\nvapid_key_file = {other:?}\n"
        );
        let config = FileConfig::parse(&toml, "t", Vec::<(String, String)>::new())
            .expect("parses")
            .validate()
            .expect("valid");
        let apps = config.webpush.expect("webpush on");
        let main = apps.default_app();
        let shop = apps.get("shop").expect("app");
        assert_ne!(
            main.vapid.key().public_key_b64(),
            shop.vapid.key().public_key_b64()
        );
        assert!(shop.policy.check("https://push.example.com/x").is_ok());
        assert!(shop.policy.check("https://fcm.googleapis.com/x").is_err());
    }

    #[test]
    fn missing_unreadable_and_wrong_curve_keys_are_refused_naming_the_key_and_fix() {
        let e = errors_of("[webpush]\nsubject = \"mailto:a@b.c\"\n");
        assert!(
            e.contains("webpush.vapid_key_file") && e.contains("openssl ecparam"),
            "{e}"
        );
        let e = errors_of(
            "[webpush]\nvapid_key_file = \"/nonexistent/vapid.pem\"\nsubject = \"mailto:a@b.c\"\n",
        );
        assert!(
            e.contains("webpush.vapid_key_file") && e.contains("cannot read"),
            "{e}"
        );
        let d = dir();
        let p384 = d.join("p384.pem");
        std::fs::write(&p384, "-----BEGIN EC PRIVATE KEY-----\nMIGkAgEBBDAzLwKQrJbPHBwXaiqrQmpJrAumalziSrY0EI5WG/7/m96cfAx3LIGx\nJ4ssKaZvfBCgBwYFK4EEACKhZANiAATRq1u4lMKbWLtPk4UPzNGEQP4TkuJJvTaU\nzGteU6RicOFvddU9k3jgJeizSje46oUpwvGZBQO/lYXNpF/UAMhfIRc+sMJEdcjI\nBBvWFy3/+ut3eaDAs7QBvgCIu1aYtOU=\n-----END EC PRIVATE KEY-----\n").expect("write");
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {p384:?}\nsubject = \"mailto:a@b.c\"\n"
        ));
        assert!(
            e.contains("not an EC P-256") && e.contains("prime256v1"),
            "{e}"
        );
    }

    #[test]
    fn bad_subjects_and_origins_are_refused() {
        let d = dir();
        let key = d.join("vapid.pem");
        std::fs::write(
            &key,
            crate::webpush::vapid::VapidKey::generate()
                .expect("key")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("write");
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"ops@example.com\"\n"
        ));
        assert!(
            e.contains("webpush.subject") && e.contains("mailto:"),
            "{e}"
        );
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"https://example.com\"\nallowed_origins = [\"http://push.example.com\"]\n"
        ));
        assert!(e.contains("webpush.allowed_origins"), "{e}");
    }

    /// Apple's push service refuses a VAPID `sub` naming a host that does
    /// not resolve: refused at start whenever web.push.apple.com is allowed
    /// (the default list, or named), accepted when it is not.
    #[test]
    fn an_apple_endpoint_refuses_an_unreachable_subject_at_start() {
        let d = dir();
        let key = d.join("vapid.pem");
        std::fs::write(
            &key,
            crate::webpush::vapid::VapidKey::generate()
                .expect("key")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("write");
        for origins in ["[]", "[\"https://web.push.apple.com\"]"] {
            let e = errors_of(&format!(
                "[webpush]\nvapid_key_file = {key:?}\nsubject = \"mailto:ops@localhost\"\nallowed_origins = {origins}\n"
            ));
            assert!(
                e.contains("webpush.subject") && e.contains("web.push.apple.com"),
                "{origins}: {e}"
            );
        }
        let only_mozilla = format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"mailto:ops@localhost\"\nallowed_origins = [\"https://updates.push.services.mozilla.com\"]\n"
        );
        assert_eq!(errors_of(&only_mozilla), "");
        let real =
            format!("[webpush]\nvapid_key_file = {key:?}\nsubject = \"mailto:ops@example.com\"\n");
        assert_eq!(errors_of(&real), "");
    }
}

#[test]
fn redis_sentinel_and_replica_keys_go_together_or_are_refused() {
    let cfg = FileConfig::parse(
        "[queue]\nbackend = \"redis\"\nredis_url = \"redis://app:pw@ignored:1/2\"\n\
         redis_sentinels = [\"10.0.0.5:26379\", \"[::1]:26380\"]\nredis_master = \"pushgate\"\n\
         redis_min_replicas = 1\n",
        "t",
        env(&[("PUSHGATE_QUEUE_REDIS_REPLICA_TIMEOUT_MS", "250")]),
    )
    .expect("parse")
    .validate()
    .expect("valid");
    let redis = cfg.redis.expect("redis backend");
    let sentinel = redis.sentinel.expect("sentinel");
    assert_eq!(
        sentinel.sentinels,
        vec![("10.0.0.5".to_owned(), 26379), ("::1".to_owned(), 26380)]
    );
    assert_eq!(sentinel.describe(), "pushgate@10.0.0.5:26379,::1:26380");
    assert_eq!(
        (redis.replicas.min, redis.replicas.timeout),
        (1, Duration::from_millis(250))
    );

    // Sentinels from the environment, as a comma-separated list.
    let cfg = FileConfig::parse(
        "[queue]\nbackend = \"redis\"\nredis_master = \"m\"\n",
        "t",
        env(&[("PUSHGATE_QUEUE_REDIS_SENTINELS", "a:1,b:2")]),
    )
    .expect("parse")
    .validate()
    .expect("valid");
    let sentinel = cfg.redis.and_then(|r| r.sentinel).expect("sentinel");
    assert_eq!(sentinel.sentinels.len(), 2);

    // A plain URL stays a plain URL, waiting for no replica.
    let plain = FileConfig::parse("[queue]\nbackend = \"redis\"\n", "t", env(&[]))
        .expect("parse")
        .validate()
        .expect("valid")
        .redis
        .expect("redis");
    assert!(plain.sentinel.is_none());
    assert!(!plain.replicas.wanted());

    for (text, key) in [
        ("redis_sentinels = [\"h:1\"]\n", "queue.redis_master"),
        ("redis_master = \"m\"\n", "queue.redis_master"),
        (
            "redis_sentinels = [\"no-port\"]\nredis_master = \"m\"\n",
            "queue.redis_sentinels",
        ),
        (
            "redis_sentinels = [\"h:0\"]\nredis_master = \"m\"\n",
            "queue.redis_sentinels",
        ),
        (
            "redis_sentinel_password_file = \"/x\"\n",
            "queue.redis_sentinel_password_file",
        ),
        (
            "redis_replica_timeout_ms = 0\n",
            "queue.redis_replica_timeout_ms",
        ),
        (
            "redis_replica_timeout_ms = 60000\n",
            "queue.redis_replica_timeout_ms",
        ),
    ] {
        let err = FileConfig::parse(
            &format!("[queue]\nbackend = \"redis\"\n{text}"),
            "t",
            env(&[]),
        )
        .expect("parse")
        .validate()
        .map(drop)
        .expect_err(text);
        let messages = messages(err);
        assert!(
            messages.contains(key),
            "{key} not named for {text}: {messages}"
        );
    }
}
