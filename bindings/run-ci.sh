#!/usr/bin/env bash
# CI for the bindings: the C example and tests (plain and under valgrind)
# and the Bun package's `bun test`. Installs what a fresh machine lacks
# (a C compiler, valgrind, npm, Bun from the npm registry). Assumes
# `cargo build --release` has produced target/release/libroost.so.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION="1.4.5"
export DEBIAN_FRONTEND=noninteractive

if [ ! -f target/release/libroost.so ]; then
  echo "target/release/libroost.so is missing: run 'cargo build --release' first" >&2
  exit 1
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -q
    apt_updated=1
  fi
  apt-get install -y -q "$@"
}

command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
command -v c++ >/dev/null 2>&1 || apt_install g++
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
command -v npm >/dev/null 2>&1 || apt_install npm

if ! bun --version 2>/dev/null | grep -qx "$BUN_VERSION"; then
  echo "== installing bun@$BUN_VERSION from the npm registry"
  npm install -g --no-audit --no-fund "bun@$BUN_VERSION"
  # The package's postinstall links the platform binary in; run it by hand
  # if npm skipped install scripts.
  if ! bun --version >/dev/null 2>&1; then
    node "$(npm root -g)/bun/install.js"
  fi
  hash -r
fi
echo "bun $(bun --version)"

echo "== C bindings (bindings/c/run-tests.sh)"
bindings/c/run-tests.sh

echo "== Bun bindings (bun test in bindings/bun)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
(cd bindings/bun && bun test 2>&1) | tee "$log"
passed="$(sed -n 's/^ *\([0-9][0-9]*\) pass$/\1/p' "$log" | tail -n 1)"
failed="$(sed -n 's/^ *\([0-9][0-9]*\) fail$/\1/p' "$log" | tail -n 1)"
echo "bun: ${passed:-0} passed, ${failed:-0} failed"
bash examples/run-ci.sh
