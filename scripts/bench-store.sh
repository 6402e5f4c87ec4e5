#!/usr/bin/env bash
# Stage-transition latency of the state stores (examples/store_latency.rs): SQLite in a temp
# file, and PostgreSQL on a throwaway local cluster (initdb in a temp dir, fsync on, as a
# server would run; as `nobody` when run as root). Target for PostgreSQL: p99 under 20 ms.
#
# Environment: TRANSITIONS (default 2000).
set -euo pipefail

TRANSITIONS=${TRANSITIONS:-2000}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --example store_latency >/dev/null
BIN=$PWD/target/release/examples/store_latency

# shellcheck source=throwaway-postgres.sh
source scripts/throwaway-postgres.sh
start_throwaway_postgres

echo "sqlite:     $("$BIN" "$WORK/state.db" "$TRANSITIONS")"
echo "postgresql: $("$BIN" "$PG_URL" "$TRANSITIONS")"
