# syntax=docker/dockerfile:1
# Build: docker build -t ghcr.io/resiliency-operator/resiliency-operator:0.1.0 .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Only what the workspace manifest needs: its members, and benches/ because Cargo.toml
# declares the `copy` bench and cargo refuses a manifest whose bench file is missing.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY verifier ./verifier
COPY tests/harness ./tests/harness
COPY benches ./benches
# Cache mounts keep downloaded crates and build artifacts between builds; the binary is copied
# out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin resiliency-operator \
 && install -D target/release/resiliency-operator /out/resiliency-operator

# cc: glibc and libgcc, which the Rust binary links against; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/resiliency-operator /usr/local/bin/resiliency-operator
# The image's nonroot user. Nothing depends on this UID (OpenShift assigns another). The
# binary writes only TMPDIR (backup verification and restores stage a snapshot object there):
# with a read-only root filesystem, mount a volume there, as deploy/kubernetes does at /tmp.
USER 65532:65532
# /metrics, /healthz and /readyz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/resiliency-operator"]
CMD ["operator"]
