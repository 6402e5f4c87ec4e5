# syntax=docker/dockerfile:1
# Build: docker build -t bowline .
# Run:   docker run --rm -v "$PWD/example-repo:/repo:ro" bowline plan /repo

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/load_render.rs \
 && echo 'fn main() {}' > examples/gen_synthetic_repo.rs \
 && cargo build --release --locked --bin bowline \
 && rm -rf src benches examples
COPY src src
COPY schema schema
COPY benches benches
COPY examples examples
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin bowline \
 && strip target/release/bowline

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/bowline --create-home bowline
COPY --from=build /src/target/release/bowline /usr/local/bin/bowline
COPY schema /usr/share/bowline/schema
USER 10001:10001
WORKDIR /var/lib/bowline
ENTRYPOINT ["/usr/local/bin/bowline"]
CMD ["--help"]
