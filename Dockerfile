# syntax=docker/dockerfile:1
# stigg-byos image: build with the pinned Rust toolchain, run as a non-root user on slim Debian.
#   docker build -t stigg-byos .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e SQS_QUEUE_URL=... stigg-byos

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /app
# Queries are checked against .sqlx/ if the code ever uses sqlx's query! macros; never a live db.
ENV SQLX_OFFLINE=true

# Dependencies first, against a stub crate: this layer is reused until Cargo.toml/Cargo.lock
# change, so editing src/ does not rebuild the dependency tree.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. migrations/ (sqlx::migrate!) and console/ (the web console's pages,
# include_str!) are embedded into the binary at compile time.
COPY src ./src
COPY migrations ./migrations
COPY console ./console
# COPY keeps the files' own mtimes, which can be older than the stub build: touch them so cargo
# rebuilds the crate instead of keeping the stub binary.
RUN find src migrations console -type f -exec touch {} + \
 && cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: TLS to AWS and Stigg. curl: the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin stigg-byos
COPY --from=builder /app/target/release/stigg-byos /usr/local/bin/stigg-byos
USER 10001:10001

# The HEALTHCHECK and EXPOSE assume this address; change all three together.
ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
# /healthz (liveness), not /readyz: a database outage should not get the container restarted.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["stigg-byos"]
CMD ["run"]
