#!/usr/bin/env bash
# Canary judge benchmark: bowline (criterion, release) against scipy.stats.mannwhitneyu on the
# same 100 metrics x 1,000 points per scope. Target: the judge under 20 ms. Not part of CI.
#
# Needs python3 with numpy and scipy (pip install scipy). Environment: RUNS (20) for Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$PWD/target}
REQUEST=$(mktemp --suffix=.json)
trap 'rm -f "$REQUEST"' EXIT

CANARY_BENCH_DUMP=$REQUEST cargo bench --bench canary_judge
cargo build --release --bin bowline
ESTIMATES=$TARGET_DIR/criterion/canary_judge_100_metrics_x_1000_points/new/estimates.json
rust_ms=$(python3 -c "import json,sys; e=json.load(open(sys.argv[1])); print('%.3f' % (e['mean']['point_estimate']/1e6))" "$ESTIMATES")
py_out=$(python3 benches/canary_scipy.py "$REQUEST" --bowline "$TARGET_DIR/release/bowline" --runs "${RUNS:-20}")
echo "$py_out"
py_ms=$(echo "$py_out" | sed -n 's/^scipy_median_ms //p')
echo "bowline_judge_mean_ms $rust_ms"
python3 -c "import sys; r, p = map(float, sys.argv[1:]); print('ratio scipy/bowline %.1fx' % (p / r)); print('target (< 20 ms):', 'met' if r < 20 else 'MISSED')" "$rust_ms" "$py_ms"
