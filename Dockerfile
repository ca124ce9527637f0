# syntax=docker/dockerfile:1
# Multi-stage build of the operator image: compile in the Rust image, run on distroless
# (glibc + libgcc, no shell, no package manager) as the non-root user 65532.
#
#   docker build -t ecr-token-refresh:dev .
#   docker build --target plugins -t ecr-token-refresh-plugins:dev .   # the plugins alone
#
# The example policy plugins (naming-prefix, fanout-label, retry-linear) ship in the operator
# image under /usr/share/ecr-token-refresh/plugins/, ready to register by path in the
# operator config. The `plugins` image holds the same files under /plugins/ for a Kubernetes
# image volume or an init container (see config/plugins/).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ecr-token-refresh \
    && install -D -m 0755 target/release/ecr-token-refresh /out/ecr-token-refresh

# The example plugins: WebAssembly components for wasm32-wasip2, from their own locked
# workspace (plugins/Cargo.lock).
FROM rust:1.95-bookworm AS build-plugins
WORKDIR /src
COPY wit wit
COPY plugins plugins
RUN rustup target add wasm32-wasip2
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/plugins/target \
    cargo build --release --locked --target wasm32-wasip2 --manifest-path plugins/Cargo.toml \
      -p naming-prefix -p fanout-label -p retry-linear \
    && for p in naming_prefix fanout_label retry_linear; do \
         install -D -m 0444 "plugins/target/wasm32-wasip2/release/$p.wasm" "/out/plugins/$p.wasm"; \
       done

# The plugins alone, for an image volume (`volumes[].image`, Kubernetes >= 1.33) or an init
# container that copies them (busybox gives it `cp`).
FROM busybox:1.37-musl AS plugins
COPY --from=build-plugins /out/plugins/ /plugins/
USER 65532:65532

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ecr-token-refresh /usr/local/bin/ecr-token-refresh
COPY --from=build-plugins /out/plugins/ /usr/share/ecr-token-refresh/plugins/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ecr-token-refresh"]
CMD ["run"]
