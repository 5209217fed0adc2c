//! Compiles `proto/` for the gRPC front (src/grpc.rs) with cargo alone: protox
//! parses the files in pure Rust (no system `protoc`), tonic-prost-build writes
//! the messages, the service traits and the clients into `OUT_DIR`, and the
//! encoded descriptor set (imports included) is written beside them for
//! server reflection.
//!
//! A release binary is also linked with `linker/symbol-order.txt` (see
//! [`order_symbols`]).

use std::path::PathBuf;

/// Our two API files, relative to `proto/`.
const FILES: [&str; 2] = ["gorush/gorush.proto", "pushgate/v1/push.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    order_symbols();
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

/// The functions a serving gateway runs, laid out together in the release
/// binary (`scripts/symbol-order` writes the list). The kernel maps code in
/// 64 KiB windows around each page a process touches; scattered through the
/// 14 MB text, a gateway's start-up and idle code mapped most of it (idle RSS
/// 18 MB, 3.6 MB of it heap; 11.5 MB laid out). Linked with the toolchain's
/// own `rust-lld` (what rustup's x86_64 Linux toolchains use by default
/// since 1.90, chosen here so 1.88 gets it too), and only when the user has
/// not picked a linker. `PUSHGATE_SYMBOL_ORDER=0` turns it off.
///
/// The names carry cargo's hash of each crate's features: the list fits
/// `cargo build --release` and `--bin pushgate` (bench/run, the Dockerfile).
/// A command that also builds examples or tests unifies the dev-dependencies'
/// features, every hash moves and the list no longer applies (idle RSS about
/// 4 MB higher); bench/run prints how many of its names a binary has.
fn order_symbols() {
    const LIST: &str = "linker/symbol-order.txt";
    println!("cargo:rerun-if-changed={LIST}");
    for var in [
        "PUSHGATE_SYMBOL_ORDER",
        "RUSTC_LINKER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = env("PROFILE") == "release"
        && env("TARGET") == "x86_64-unknown-linux-gnu"
        && env("PUSHGATE_SYMBOL_ORDER") != "0";
    let own_linker = !env("RUSTC_LINKER").is_empty()
        || !env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        || env("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if !wanted || own_linker {
        return;
    }
    let (Ok(list), Some(lld_dir)) = (std::path::Path::new(LIST).canonicalize(), rust_lld_dir())
    else {
        return;
    };
    for arg in [
        "-fuse-ld=lld".to_owned(),
        format!("-B{}", lld_dir.display()),
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        // Names the list has and this build does not (a newer toolchain
        // or dependency) are skipped: a stale list costs RSS, never
        // correctness.
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

/// The toolchain's `gcc-ld` directory: `ld.lld` there runs `rust-lld`, for a
/// C compiler driver told `-fuse-ld=lld -B<dir>`.
fn rust_lld_dir() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld");
    dir.join("ld.lld").exists().then_some(dir)
}
