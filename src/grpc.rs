//! gRPC beside HTTP (DESIGN "gRPC (tonic), beside HTTP"): gorush's
//! `proto.Gorush` and `proto.Health`, our `pushgate.v1.Push`,
//! `grpc.health.v1.Health` and server reflection, on their own listener
//! (`[grpc] listen`).
//!
//! A thin front: each call is turned into the equivalent HTTP request and
//! sent through the gateway's own axum router in process ([`adapter`]), and
//! the answer is mapped back ([`status`]). So auth, admission, validation,
//! the gorush field mapping, bounded rejections, idempotency and durability
//! are the HTTP API's code, and this module imports nothing below the API
//! (no store, no platform; `tests/layering.rs` holds it to that).
//!
//! - [`server`]: the listener (our TLS and limits, through
//!   [`crate::listener`]), the services, health and reflection;
//! - [`adapter`]: the in-process HTTP call and the metadata it forwards;
//! - [`gorush`], [`push`], [`stream`]: the services;
//! - [`convert`]: proto messages to the API's JSON and back;
//! - [`status`]: HTTP answer → gRPC status, the one mapping;
//! - [`proto`]: the generated code.

pub mod adapter;
pub mod convert;
pub mod gorush;
pub mod proto;
pub mod push;
pub mod server;
pub mod status;
pub mod stream;

use std::sync::Arc;

use tonic::{Code, Status};

pub use server::{GrpcError, GrpcServer, Parts, Settings};

use crate::metrics::Metrics;

/// Counts one answered call in `pushgate_grpc_requests_total`.
fn observe<T>(metrics: &Metrics, method: &str, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    count(metrics, method, code);
}

fn count(metrics: &Metrics, method: &str, code: Code) {
    metrics
        .grpc_requests
        .with_label_values(&[method, status::code_name(code)])
        .inc();
}

/// Counts a streaming call once, when it ends: with the code it ended with,
/// or `CANCELLED` when the client dropped it first.
struct Observed {
    metrics: Arc<Metrics>,
    method: &'static str,
    code: Option<Code>,
}

impl Observed {
    fn new(metrics: Arc<Metrics>, method: &'static str) -> Self {
        Self {
            metrics,
            method,
            code: None,
        }
    }

    fn finish(&mut self, code: Code) {
        self.code.get_or_insert(code);
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        count(
            &self.metrics,
            self.method,
            self.code.unwrap_or(Code::Cancelled),
        );
    }
}
