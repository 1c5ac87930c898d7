# syntax=docker/dockerfile:1
# Build stage: the same `cargo build --release --locked` as the README, giving
# target/release/wva-metrics-server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# Declared in Cargo.toml ([[bench]] with harness = false): cargo needs the
# file to load the manifest, even to build only the binary.
COPY benches ./benches
RUN cargo build --release --locked --bin wva-metrics-server \
 && cp target/release/wva-metrics-server /wva-metrics-server

# Run stage: distroless (glibc, CA certificates, no shell, no package
# manager), running as the non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /wva-metrics-server /usr/local/bin/wva-metrics-server
USER 65532:65532
EXPOSE 6443 9443
ENTRYPOINT ["/usr/local/bin/wva-metrics-server"]
CMD ["serve"]
