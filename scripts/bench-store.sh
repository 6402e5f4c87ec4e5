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

pg_bin() {
    if command -v "$1" >/dev/null; then command -v "$1"; return; fi
    ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}
INITDB=$(pg_bin initdb)
POSTGRES=$(pg_bin postgres)
[ -n "$INITDB" ] && [ -n "$POSTGRES" ] || { echo "bench-store: PostgreSQL is needed" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bowline-store.XXXXXX")
run_as=()
if [ "$(id -u)" -eq 0 ]; then
    chown nobody "$WORK"
    run_as=(runuser -u nobody --)
fi
cleanup() {
    [ -n "${PG_PID:-}" ] && kill -INT "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "sqlite:     $("$BIN" "$WORK/state.db" "$TRANSITIONS")"

"${run_as[@]}" "$INITDB" -D "$WORK/data" -U bowline --auth=trust >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${run_as[@]}" "$POSTGRES" -D "$WORK/data" -k "$WORK" -p "$PORT" -c listen_addresses=127.0.0.1 \
    >"$WORK/pg.log" 2>&1 &
PG_PID=$!
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
sleep 0.5
echo "postgresql: $("$BIN" "postgres://bowline@127.0.0.1:$PORT/postgres?sslmode=disable" "$TRANSITIONS")"
