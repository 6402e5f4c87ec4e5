#!/usr/bin/env bash
# End-to-end benchmark of `bowline validate` on a synthetic config repository.
#
# Builds the release binary and the generator, writes a repository of $APPS apps (each with
# app.yaml and six templated manifests, deployed to staging and production) into a temporary
# directory, then measures:
#   - wall time of `bowline validate` over $RUNS runs (hyperfine when installed, else a loop),
#     reported as min and median;
#   - peak RSS (max over $RSS_RUNS runs) with /usr/bin/time -v, installing Debian's `time`
#     package when missing and possible, else by polling VmHWM in /proc.
# Target: 1,000 apps x 6 manifests x 2 environments in under 1 s, peak RSS under 200 MB.
#
# Environment: APPS (default 1000), RUNS (10), WARMUP (2), RSS_RUNS (3), KEEP_REPO=1 to keep
# the generated repository, STRICT=1 to exit 1 when the target is missed.
set -euo pipefail

APPS=${APPS:-1000}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
RSS_RUNS=${RSS_RUNS:-3}
TARGET_SECONDS=1
TARGET_RSS_MB=200

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
BOWLINE=$TARGET_DIR/release/bowline
GENERATOR=$TARGET_DIR/release/examples/gen_synthetic_repo

echo "==> building (release)"
cargo build --release --example gen_synthetic_repo --bin bowline

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bowline-bench.XXXXXX")
if [[ ${KEEP_REPO:-0} == 1 ]]; then
    trap 'echo "repository kept in $WORK/repo"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi
REPO=$WORK/repo

echo "==> generating $APPS apps"
"$GENERATOR" --apps "$APPS" "$REPO"

echo "==> checking that the repository is valid"
if ! "$BOWLINE" validate "$REPO" >"$WORK/validate.out"; then
    tail -n 20 "$WORK/validate.out" >&2
    echo "bench: bowline validate failed on the synthetic repository" >&2
    exit 1
fi
tail -n 1 "$WORK/validate.out"

# Prints "min median" (seconds) of the numbers on stdin, one a line.
min_median() {
    sort -g | awk '{ v[NR] = $1 }
        END {
            if (NR == 0) { print "nan nan"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.3f %.3f\n", v[1], m
        }'
}

echo "==> timing: $RUNS runs after $WARMUP warm-up runs ($(nproc) CPUs)"
if command -v hyperfine >/dev/null 2>&1; then
    hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" \
        --export-json "$WORK/hyperfine.json" \
        "'$BOWLINE' validate '$REPO'" >&2
    # The "times" array of the JSON export holds one wall time per run.
    read -r WALL_MIN WALL_MEDIAN < <(
        tr -d ' \n' <"$WORK/hyperfine.json" |
            sed -n 's/.*"times":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | min_median
    )
else
    echo "(hyperfine not installed: timing with a bash loop)"
    for _ in $(seq "$WARMUP"); do "$BOWLINE" validate "$REPO" >/dev/null; done
    : >"$WORK/times"
    for i in $(seq "$RUNS"); do
        start=$(date +%s.%N)
        "$BOWLINE" validate "$REPO" >/dev/null
        end=$(date +%s.%N)
        awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f\n", e - s }' | tee -a "$WORK/times" |
            sed "s/^/  run $i: /; s/\$/ s/"
    done
    read -r WALL_MIN WALL_MEDIAN < <(min_median <"$WORK/times")
fi

# Peak RSS of one run, in KiB, on stdout.
peak_rss_kib() {
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v "$BOWLINE" validate "$REPO" 2>"$WORK/time.out" >/dev/null
        sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' "$WORK/time.out"
    else
        # VmHWM is the high-water mark of the resident set; sample it until the process exits.
        "$BOWLINE" validate "$REPO" >/dev/null &
        local pid=$! hwm=0 v
        while kill -0 "$pid" 2>/dev/null; do
            v=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || true)
            if [[ -n $v ]] && ((v > hwm)); then hwm=$v; fi
            sleep 0.005
        done
        wait "$pid"
        echo "$hwm"
    fi
}

if [[ ! -x /usr/bin/time ]] && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian package time for /usr/bin/time"
    apt-get install -y -qq time >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq time >/dev/null 2>&1; } ||
        true
fi
if [[ -x /usr/bin/time ]]; then
    RSS_METHOD="/usr/bin/time -v"
else
    RSS_METHOD="VmHWM sampled every 5 ms (may miss a short final peak)"
fi
echo "==> peak RSS: $RSS_RUNS runs, $RSS_METHOD"
RSS_KIB=0
for i in $(seq "$RSS_RUNS"); do
    kib=$(peak_rss_kib)
    echo "  run $i: $kib KiB"
    if ((kib > RSS_KIB)); then RSS_KIB=$kib; fi
done
RSS_MB=$(awk -v k="$RSS_KIB" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
RSS_MIB=$(awk -v k="$RSS_KIB" 'BEGIN { printf "%.1f", k / 1024 }')

TIME_OK=$(awk -v t="$WALL_MEDIAN" -v l="$TARGET_SECONDS" 'BEGIN { print (t < l) ? "yes" : "no" }')
RSS_OK=$(awk -v r="$RSS_MB" -v l="$TARGET_RSS_MB" 'BEGIN { print (r < l) ? "yes" : "no" }')

echo
echo "bowline validate, $APPS apps x 6 manifests x 2 environments ($(nproc) CPUs)"
printf '  wall time   min %s s   median %s s   (%s runs)\n' "$WALL_MIN" "$WALL_MEDIAN" "$RUNS"
printf '  peak RSS    %s MB (%s MiB, max of %s runs)\n' "$RSS_MB" "$RSS_MIB" "$RSS_RUNS"
printf '  target      1,000 apps x 6 manifests x 2 environments in < %s s, peak RSS < %s MB\n' \
    "$TARGET_SECONDS" "$TARGET_RSS_MB"
if [[ $APPS != 1000 ]]; then
    echo "  verdict     n/a (the target is defined for APPS=1000)"
elif ((RSS_KIB == 0)); then
    echo "  verdict     n/a (peak RSS could not be measured)"
elif [[ $TIME_OK == yes && $RSS_OK == yes ]]; then
    echo "  verdict     PASS (median wall time and peak RSS under target)"
else
    echo "  verdict     MISS (time under target: $TIME_OK, RSS under target: $RSS_OK)"
    if [[ ${STRICT:-0} == 1 ]]; then exit 1; fi
fi
exit 0
