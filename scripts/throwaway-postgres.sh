# Sourced by the benchmark scripts: starts a throwaway PostgreSQL cluster (initdb in a temp
# dir, fsync on, as a server would run; as `nobody` when run as root) on a free loopback port.
# Sets WORK (the temp dir, removed on exit), PG_URL and PG_PID. Needs Debian's postgresql.

pg_bin() {
    if command -v "$1" >/dev/null; then command -v "$1"; return; fi
    ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

start_throwaway_postgres() {
    local initdb postgres port run_as=()
    initdb=$(pg_bin initdb)
    postgres=$(pg_bin postgres)
    [ -n "$initdb" ] && [ -n "$postgres" ] || { echo "PostgreSQL is needed (Debian's postgresql)" >&2; exit 1; }
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/bowline-bench.XXXXXX")
    if [ "$(id -u)" -eq 0 ]; then
        chown nobody "$WORK"
        run_as=(runuser -u nobody --)
    fi
    trap 'stop_throwaway_postgres' EXIT
    "${run_as[@]}" "$initdb" -D "$WORK/data" -U bowline --auth=trust >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${run_as[@]}" "$postgres" -D "$WORK/data" -k "$WORK" -p "$port" -c listen_addresses=127.0.0.1 \
        -c max_connections=200 >"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.5
    PG_URL="postgres://bowline@127.0.0.1:$port/postgres?sslmode=disable"
}

stop_throwaway_postgres() {
    # The server itself (runuser does not pass signals on): a fast shutdown.
    if [ -f "$WORK/data/postmaster.pid" ]; then
        kill -INT "$(head -n 1 "$WORK/data/postmaster.pid")" 2>/dev/null || true
    fi
    [ -n "${PG_PID:-}" ] && wait "$PG_PID" 2>/dev/null
    rm -rf "$WORK"
}
