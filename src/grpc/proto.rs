//! The code generated from `proto/` by build.rs (protox + tonic-prost-build):
//! messages, service traits, servers and clients.

#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]

/// gorush's package `proto` (`proto/gorush/gorush.proto`).
pub mod gorush {
    include!(concat!(env!("OUT_DIR"), "/proto.rs"));
}

/// Our package `pushgate.v1` (`proto/pushgate/v1/push.proto`).
pub mod pushgate {
    include!(concat!(env!("OUT_DIR"), "/pushgate.v1.rs"));
}

/// Both files and what they import, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pushgate_descriptor.bin"));
