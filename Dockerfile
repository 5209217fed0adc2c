# syntax=docker/dockerfile:1
# pushgate image: build with the Rust toolchain, run on a small Debian with
# curl (for HEALTHCHECK) and CA roots, as an unprivileged user.
#
#   docker build -t pushgate .
#   docker run -p 8080:8080 -v pushgate-data:/var/lib/pushgate \
#       -v $PWD/pushgate.toml:/etc/pushgate/pushgate.toml:ro pushgate
#
# The disk queue backend (the default) keeps its store in /var/lib/pushgate,
# declared a VOLUME: give it a named volume (as above) or a host directory
# writable by uid 10001, or what was queued stays behind in an anonymous
# volume when the container is replaced. One gateway per volume: the store is
# locked, so a second container on the same volume is refused at start.
#
# The same image runs the mock upstreams: `docker run pushgate mock apns ...`.

# ---- build ----------------------------------------------------------------
# Pinned to the crate's MSRV (Cargo.toml rust-version).
FROM rust:1.88-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
# The gRPC protos, compiled by build.rs in pure Rust (no protoc in the image).
COPY proto ./proto
# The order build.rs links the release binary's functions in (idle RSS).
COPY linker ./linker
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pushgate \
    && install -m 0755 target/release/pushgate /usr/local/bin/pushgate

# ---- run ------------------------------------------------------------------
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pushgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pushgate \
    # Writable by the service user: a named volume mounted here starts owned by it
    # (the compose file's mocks write their CA and keys here for the gateway).
    && mkdir -p /var/lib/pushgate \
    && chown 10001:10001 /var/lib/pushgate
COPY --from=builder /usr/local/bin/pushgate /usr/local/bin/pushgate
COPY config/pushgate.toml /etc/pushgate/pushgate.toml

# queue.data_dir (below): declared after the directory is created and given
# to the service user, so a new named volume starts with that owner.
VOLUME ["/var/lib/pushgate"]

USER 10001:10001
WORKDIR /var/lib/pushgate
# In a container the API must listen on every interface; the environment
# overrides the file (PUSHGATE_<SECTION>_<KEY>), so a mounted config keeps working.
# The disk queue backend (the default) keeps its store in /var/lib/pushgate,
# the VOLUME above: mount a volume there, or what was queued is left behind
# with the container.
ENV PUSHGATE_SERVER_LISTEN=0.0.0.0:8080 \
    PUSHGATE_QUEUE_DATA_DIR=/var/lib/pushgate \
    PUSHGATE_LOG_FORMAT=json
EXPOSE 8080
# /healthz needs no API key. Commands other than `serve` (the mocks) set
# their own health check (see deploy/docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["pushgate"]
CMD ["serve", "--config", "/etc/pushgate/pushgate.toml"]
