# syntax=docker/dockerfile:1
#
# The feedbuttons image: the release binary on a slim Debian, run as a non-root user.
#
#   docker build -t registry.example.com/feedbuttons:0.1.0 \
#     --build-arg FEEDBUTTONS_GIT_REV="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm registry.example.com/feedbuttons:0.1.0 --version
#
# .git stays out of the build context (see .dockerignore), so `--version` names the revision
# given by FEEDBUTTONS_GIT_REV, or says "unknown revision".

# The builder and the runtime must be the same Debian release: the binary links its glibc.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the build needs (the same files as the published crate, see `include` in
# Cargo.toml): the tests, benches and fixtures are not built here.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY examples/quickstart/buttons.yaml ./examples/quickstart/buttons.yaml
ARG FEEDBUTTONS_GIT_REV=""
ENV FEEDBUTTONS_GIT_REV=${FEEDBUTTONS_GIT_REV}
# The crate registry's cache and the target directory persist between builds (BuildKit cache
# mounts), so a rebuild compiles feedbuttons only; the binary is copied out of the mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/feedbuttons /out/feedbuttons

FROM debian:${DEBIAN_RELEASE}-slim
# The binary trusts the system's store (this ca-certificates, and any company CA added to it)
# as well as the Mozilla roots compiled into it.
# Debian drops old package versions from its mirrors, so ca-certificates is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A numeric user, so that Kubernetes' runAsNonRoot can check it. The state directory is
# writable by it; mount a volume there (or pass --state) to keep the state.
RUN groupadd --system --gid 10001 feedbuttons \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/feedbuttons \
       --shell /usr/sbin/nologin feedbuttons \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/feedbuttons
COPY --from=build /out/feedbuttons /usr/local/bin/feedbuttons
USER 10001:10001
WORKDIR /var/lib/feedbuttons
# The daemon's health and metrics port (`watch --listen 0.0.0.0:9464`).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/feedbuttons"]
CMD ["--help"]
