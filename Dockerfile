# syntax=docker/dockerfile:1
# Build: docker build -t bowline .
# Run:   docker run --rm -v "$PWD/example-repo:/repo:ro" bowline plan /repo

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace (benches, examples and the test-support crate are manifest targets and
# members), with the registry and target directory in BuildKit caches so rebuilds after source
# edits only recompile the crate.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bowline \
 && cp target/release/bowline /usr/local/bin/bowline \
 && strip /usr/local/bin/bowline

# kubectl, for its built-in kustomize: apps kept as kustomizations are built with it. The
# checksum is Kubernetes' published one for the release.
FROM debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION=v1.32.4
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSLo /kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256")  /kubectl" \
    | sha256sum --check \
 && chmod 0755 /kubectl

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/bowline --create-home bowline
COPY --from=build /usr/local/bin/bowline /usr/local/bin/bowline
COPY --from=kubectl /kubectl /usr/local/bin/kubectl
ENV BOWLINE_KUBECTL=/usr/local/bin/kubectl
COPY schema /usr/share/bowline/schema
USER 10001:10001
WORKDIR /var/lib/bowline
ENTRYPOINT ["/usr/local/bin/bowline"]
CMD ["--help"]
