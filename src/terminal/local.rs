//! A gateway inside this process for the terminal commands: the operator's
//! config with the listener moved to `127.0.0.1:0`, a random API key, the
//! in-memory queue and no webhook (a terminal send is not the service's
//! traffic).

use crate::config::{FileConfig, Secret};
use crate::gateway::Gateway;

use super::{UsageError, usage};

/// A running in-process gateway and how to reach it.
pub struct Local {
    /// The gateway (shut down by [`Local::stop`]).
    pub gateway: Gateway,
    /// Its base URL.
    pub url: String,
    /// The random key it requires.
    pub api_key: String,
}

/// Starts a gateway from `file` for terminal use.
pub async fn start(mut file: FileConfig) -> Result<Local, UsageError> {
    let api_key = random_key();
    file.server.listen = "127.0.0.1:0".into();
    file.server.api_keys = vec![Secret::new(api_key.clone())];
    file.server.tls_cert = String::new();
    file.server.tls_key = String::new();
    file.queue.backend = "memory".into();
    file.webhook = None;
    let config = file
        .validate()
        .map_err(|e| usage(format!("the configuration is not valid:\n{e}")))?;
    let gateway = Gateway::start(&config)
        .await
        .map_err(|e| usage(format!("cannot start the delivery services: {e:#}")))?;
    let url = gateway.url();
    Ok(Local {
        gateway,
        url,
        api_key,
    })
}

impl Local {
    /// Stops the gateway; everything was finished before this is called.
    pub async fn stop(self) {
        self.gateway
            .shutdown(std::time::Duration::from_secs(2))
            .await;
    }
}

/// 244 random bits (two v4 UUIDs) from the OS generator.
fn random_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
