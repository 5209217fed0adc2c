//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, written
//! by hand in `openapi.json` and embedded at build time. Two checks keep it
//! true: `tests/openapi.rs` compares its paths with the running router, and
//! `scripts/check-openapi` runs schemathesis against `pushgate demo`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub async fn document() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn document_is_json_with_the_crate_version() {
        let doc: serde_json::Value = match serde_json::from_str(DOCUMENT) {
            Ok(v) => v,
            Err(e) => panic!("src/api/openapi.json is not JSON: {e}"),
        };
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["info"]["version"],
            env!("CARGO_PKG_VERSION"),
            "bump info.version in src/api/openapi.json with Cargo.toml"
        );
    }
}
