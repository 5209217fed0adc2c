//! Protocol-faithful stand-ins for APNs and FCM (`pushgate mock`, `pushgate demo`,
//! tests and benchmarks).
//!
//! The mocks share no protocol code with the clients in `apns/` and `fcm/`: they
//! parse headers and bodies and verify JWTs and OAuth assertions on their own, so a
//! client bug cannot be mirrored, and so hidden, by the mock.

pub mod apns;
pub mod faults;
pub mod fcm;
pub mod hms;
pub mod ledger;
pub mod tls;
pub mod webpush;

use std::net::SocketAddr;
use std::sync::Arc;

pub use faults::Faults;
pub use ledger::Ledger;

/// A running mock server. Dropping it stops the accept loop; connections already
/// open are closed when the process or runtime ends.
#[derive(Debug)]
pub struct MockHandle {
    /// The address the server listens on (port 0 in the options becomes a real port).
    pub addr: SocketAddr,
    /// What the server saw: per-token deliveries, connections, stream peaks.
    pub ledger: Arc<Ledger>,
    /// PEM of the CA that signed the server certificate: the client's `ca_file`.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl MockHandle {
    /// Wraps a spawned accept loop.
    pub fn new(
        addr: SocketAddr,
        ledger: Arc<Ledger>,
        ca_pem: String,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            addr,
            ledger,
            ca_pem,
            task,
        }
    }

    /// `https://127.0.0.1:port`, the form the gateway's `endpoint` keys take.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
