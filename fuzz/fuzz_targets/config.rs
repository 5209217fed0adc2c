//! The config loader: any TOML text (plus one environment override) parses
//! or fails with a ConfigErrors, and a parsed one prints masked. Validation
//! is left out: it reads the files the config names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::config::FileConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\u{0}').unwrap_or((text, ""));
    let env = env
        .split_once('=')
        .map(|(k, v)| vec![(format!("PUSHGATE_{k}"), v.to_owned())])
        .unwrap_or_default();
    if let Ok(config) = FileConfig::parse(toml, "fuzz", env) {
        let _ = config.to_masked_toml();
    }
});
