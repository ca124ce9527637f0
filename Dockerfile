# syntax=docker/dockerfile:1
# Multi-stage build of the operator image: compile in the Rust image, run on distroless
# (glibc + libgcc, no shell, no package manager) as the non-root user 65532.
#
#   docker build -t ecr-token-refresh:dev .
#
# Plugins are not baked in: mount them (see config/manager/manager.yaml).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ecr-token-refresh \
    && install -D -m 0755 target/release/ecr-token-refresh /out/ecr-token-refresh

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ecr-token-refresh /usr/local/bin/ecr-token-refresh
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ecr-token-refresh"]
CMD ["run"]
