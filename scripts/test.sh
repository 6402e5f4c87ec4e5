#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end tests.
# Installs what it needs when missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_pkgs+=(libssl-dev)
# Canary and pipeline tests run a real Prometheus, with history loaded by promtool.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)  # runs ../shared/canary-vectors/check.py
# Manifests are checked against what the real kubectl sends (tests/kube_yaml.rs).
command -v kubectl >/dev/null 2>&1 || need_pkgs+=(kubernetes-client)
# The PostgreSQL store is tested on a throwaway cluster (initdb in a temp dir); Debian keeps
# the server binaries in /usr/lib/postgresql/<version>/bin.
{ command -v initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb'; } >/dev/null 2>&1 || need_pkgs+=(postgresql)
if ((${#need_pkgs[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing: ${need_pkgs[*]}"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 2
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ {passed += $4; failed += $6} END {printf "tests: %d passed, %d failed\n", passed, failed}' "$log"
