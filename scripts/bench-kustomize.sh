#!/usr/bin/env bash
# What building kustomizations costs `bowline validate`: a repository of $APPS copies of the
# migration fixture's Kustomize app (a base with a generated ConfigMap, an overlay per
# environment; 3 objects in each of 2 environments), against the same repository without them,
# and against `kubectl kustomize` run directly on one overlay (the floor: one process start
# and build per app and environment).
#
# Environment: APPS (default 50), RUNS (5).
set -euo pipefail

APPS=${APPS:-50}
RUNS=${RUNS:-5}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
cargo build --release --bin bowline >/dev/null
BOWLINE=$ROOT/target/release/bowline
command -v kubectl >/dev/null || { echo "bench-kustomize: kubectl is needed" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bowline-kustomize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FIXTURE=$ROOT/tests/fixtures/migration

make_repo() { # dir, number of kustomize apps
    mkdir -p "$1/apps"
    cp "$FIXTURE/bowline.yaml" "$1/"
    cp -r "$FIXTURE/apps/catalog" "$FIXTURE/apps/worker" "$FIXTURE/apps/legacy" "$1/apps/"
    for i in $(seq 1 "$2"); do
        local app=$1/apps/sf-$i
        cp -r "$FIXTURE/apps/storefront" "$app"
        sed -i "s/name: storefront$/name: sf-$i/" "$app/app.yaml"
        printf 'namePrefix: sf-%s-\n' "$i" >>"$app/manifests/base/kustomization.yaml"
    done
}

median() { sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m }'; }

time_validate() { # repo
    "$BOWLINE" validate "$1" >/dev/null || { "$BOWLINE" validate "$1" | tail -5 >&2; exit 1; }
    for _ in $(seq 1 "$RUNS"); do
        local start end
        start=$(date +%s.%N)
        "$BOWLINE" validate "$1" >/dev/null
        end=$(date +%s.%N)
        echo "$end - $start" | bc
    done | median
}

make_repo "$WORK/none" 0
make_repo "$WORK/some" "$APPS"
base=$(time_validate "$WORK/none")
with=$(time_validate "$WORK/some")
# Both overlays alternately: the staging one applies a strategic merge patch, for which
# kustomize loads its OpenAPI schema (about 3 times the cost of the production one).
direct=$(for _ in $(seq 1 10); do
    for overlay in staging production; do
        start=$(date +%s.%N)
        kubectl kustomize "$FIXTURE/apps/storefront/manifests/overlays/$overlay" >/dev/null
        end=$(date +%s.%N)
        echo "$end - $start" | bc
    done
done | awk '{ s += $1 } END { printf "%.4f", s / NR }')
builds=$((APPS * 2))
per=$(echo "($with - $base) * 1000 / $builds" | bc -l)
printf 'validate without kustomize apps: %ss (median of %s)\n' "$base" "$RUNS"
printf 'validate with %s kustomize apps (%s builds): %ss\n' "$APPS" "$builds" "$with"
printf 'per build inside bowline (wall, %s threads): %.1f ms; kubectl kustomize alone (mean, sequential): %.1f ms\n' "$(nproc)" "$per" "$(echo "$direct * 1000" | bc -l)"
