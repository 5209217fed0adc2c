//! Mock APNs: HTTP/2 over TLS (placeholder; being written).
