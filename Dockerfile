# syntax=docker/dockerfile:1
# Build stage: the README's `cargo build --release --locked`, without the
# `emulator` feature (the vLLM replica emulator, emulated Prometheus, fleet
# generator and demo are for laptops and tests, not for the cluster), giving
# target/release/wva-metrics-server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# Declared in Cargo.toml ([[bench]], [[example]]): cargo needs their files
# to load the manifest, even to build only the binary.
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --no-default-features --bin wva-metrics-server \
 && cp target/release/wva-metrics-server /wva-metrics-server

# Run stage: distroless (glibc, CA certificates, no shell, no package
# manager), running as the non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /wva-metrics-server /usr/local/bin/wva-metrics-server
USER 65532:65532
EXPOSE 6443 9443
ENTRYPOINT ["/usr/local/bin/wva-metrics-server"]
CMD ["serve"]
