#!/usr/bin/env bash
# Hostile inputs against `bowline validate`: wall time and peak RSS (the process and its
# policy worker) for each, on a copy of tests/fixtures/base.
#
#   - 200 KB of `[`, of `{` and of `- ` as bowline.yaml, app.yaml and a manifest
#     (target: refused in under 50 ms each in a release build);
#   - a repository policy evaluating count(numbers.range(1, 60000000)) (refused at the
#     256 MiB memory limit) and one sorting numbers.range(1, 4000000) under a 100 ms time limit;
#   - a 1.8 KB policy nesting 900 brackets (refused before the Rego parser, whose time
#     doubles per level);
#   - a manifest writing 100 MB through a loop, and one `{{ 'x' * 100000000 }}` (cut at 8 MiB).
#
# Builds the release binary unless BOWLINE names a binary to measure (for example
# BOWLINE=target/debug/bowline for a quick look; debug timings are several times slower).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
if [[ -z "${BOWLINE:-}" ]]; then
    cargo build --release --bin bowline >&2
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    BOWLINE=${TARGET_DIR:-$ROOT/target}/release/bowline
fi
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (Debian package time)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# measure NAME FILE CONTENT-COMMAND [bowline flags...]
measure() {
    local name=$1 file=$2 content=$3
    shift 3
    local repo=$WORK/repo
    rm -rf "$repo"
    cp -r "$ROOT/tests/fixtures/base" "$repo"
    mkdir -p "$(dirname "$repo/$file")"
    eval "$content" >"$repo/$file"
    local line
    line=$(/usr/bin/time -f "%e %M" "$BOWLINE" validate "$@" "$repo" 2>&1 >"$WORK/out" | tail -1) || true
    local seconds=${line% *} rss_kib=${line#* }
    local verdict
    verdict=$(grep -m1 -o "error: .*" "$WORK/out" | cut -c1-90 || true)
    printf '%-34s %-28s %8.0f ms %7.0f MiB  %s\n' "$name" "$file" "$(echo "$seconds * 1000" | bc)" \
        "$(echo "$rss_kib / 1024" | bc)" "$verdict"
}

printf '%-34s %-28s %11s %11s  %s\n' case file time "peak RSS" first-error
for file in bowline.yaml apps/api/app.yaml apps/api/manifests/deep.yaml; do
    measure "200 KB of [" "$file" "python3 -c \"print('['*200000)\""
    measure "200 KB of {" "$file" "python3 -c \"print('{'*200000)\""
    measure "200 KB of '- '" "$file" "python3 -c \"print('- '*100000)\""
done
measure "nothing hostile (baseline)" README.txt "echo baseline"
measure "numbers.range(1, 60000000)" policies/boom.rego \
    "printf 'package bowline.policies.boom\n\ndeny contains msg if {\n  count(numbers.range(1, 60000000)) > 0\n  msg := \"x\"\n}\n'"
measure "sort(numbers.range(1, 4e6)), 100ms" policies/slow.rego \
    "printf 'package bowline.policies.slow\n\ndeny contains msg if {\n  count(sort(numbers.range(1, 4000000))) < 0\n  msg := \"x\"\n}\n'" \
    --policy-time-limit 100ms --policy-memory-limit 2048
measure "Rego nesting [ x900 (1.8 KB)" policies/deep.rego \
    "python3 -c \"print('package bowline.policies.deep\\n\\ndeny contains m if {\\n  x := ' + '['*900 + ']'*900 + '\\n  m := 1\\n}')\""
measure "loop writing 100 MB" apps/api/manifests/big.yaml \
    "printf '%s' \"{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}\""
measure "'x' * 100000000" apps/api/manifests/big.yaml "printf '%s' \"a: {{ 'x' * 100000000 }}\""
