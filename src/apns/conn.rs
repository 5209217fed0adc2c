//! Opens one h2 connection to APNs: the shared [`crate::http2`] connector.

pub use crate::http2::{ConnectError, Connection, connect};
