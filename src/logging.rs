//! Where log lines go and how they look: stderr, as text or JSON
//! (`[log] format`, `--log-format`), filtered by `PUSHGATE_LOG` (or
//! `RUST_LOG`). The filter can be changed later when the environment did not
//! choose it: `pushgate demo` keeps the gateway it embeds at warn while it
//! tells its story, then raises it to info.

use std::path::Path;

use crate::config::{FileConfig, LogFormat};

/// Changes the log filter (an `EnvFilter` directive such as `info`).
pub type SetLogFilter = Box<dyn Fn(&str) + Send + Sync>;

/// The format when the command line does not say: `[log] format` of
/// `config` (the file `serve` reads, with `PUSHGATE_LOG_FORMAT` applied over
/// it as every key's variable is), else `PUSHGATE_LOG_FORMAT` alone, else
/// text. A file that does not load is reported by `serve` itself, once
/// logging has started.
pub fn format_from(config: Option<&Path>) -> LogFormat {
    FileConfig::load(config, std::env::vars())
        .ok()
        .and_then(|f| LogFormat::parse(&f.log.format))
        .or_else(|| {
            std::env::var("PUSHGATE_LOG_FORMAT")
                .ok()
                .and_then(|v| LogFormat::parse(&v))
        })
        .unwrap_or_default()
}

/// Starts logging to stderr. The filter is `PUSHGATE_LOG` (or `RUST_LOG`),
/// else `default_level`; returns a way to change the filter later when
/// neither variable was set.
pub fn init(format: LogFormat, default_level: &str) -> Option<SetLogFilter> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let chosen = tracing_subscriber::EnvFilter::try_from_env("PUSHGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .ok();
    let explicit = chosen.is_some();
    let filter = chosen.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry.with(stderr).init(),
        LogFormat::Json => registry.with(stderr.json()).init(),
    }
    (!explicit).then(|| -> SetLogFilter {
        Box::new(move |directive: &str| {
            let _ = handle.reload(tracing_subscriber::EnvFilter::new(directive));
        })
    })
}
