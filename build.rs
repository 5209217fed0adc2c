//! Compiles `proto/` for the gRPC front (src/grpc.rs) with cargo alone: protox
//! parses the files in pure Rust (no system `protoc`), tonic-prost-build writes
//! the messages, the service traits and the clients into `OUT_DIR`, and the
//! encoded descriptor set (imports included) is written beside them for
//! server reflection.

use std::path::PathBuf;

/// Our two API files, relative to `proto/`.
const FILES: [&str; 2] = ["gorush/gorush.proto", "pushgate/v1/push.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    // With the imports: prost-build reads struct.proto's messages to derive
    // traits (its Rust type is prost-types' own, not generated here), and a
    // reflection client resolves the import through them.
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true);
    compiler.open_files(FILES)?;
    let files = compiler.file_descriptor_set();
    std::fs::write(
        out.join("pushgate_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Served by our own listener, dialled by the tests' own channel.
        .build_transport(false)
        .compile_fds(files)?;
    Ok(())
}
