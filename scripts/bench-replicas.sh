#!/usr/bin/env bash
# Several `bowline serve` replicas on one PostgreSQL database (examples/replicas_bench.rs):
# from a push changing every app to every execution started, the stage-transition time in
# PostgreSQL, and failover (SIGKILL of the busiest replica to the first transition by a new
# owner). Targets: failover under 2 × the lease duration, transition p99 under 20 ms.
#
# Environment: APPS (default 5000), REPLICAS (3), LEASE seconds (10).
set -euo pipefail

APPS=${APPS:-5000}
REPLICAS=${REPLICAS:-3}
LEASE=${LEASE:-10}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --bin bowline --example replicas_bench >/dev/null
# shellcheck source=throwaway-postgres.sh
source scripts/throwaway-postgres.sh
start_throwaway_postgres
echo "$(nproc) cores; $APPS apps over $REPLICAS replicas, lease ${LEASE}s"
target/release/examples/replicas_bench "$PG_URL" "$PWD/target/release/bowline" \
    --apps "$APPS" --replicas "$REPLICAS" --lease "$LEASE"
