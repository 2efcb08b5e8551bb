#!/usr/bin/env bash
# CI for the examples: examples/chat/index.html in headless Chromium
# (Debian's /usr/bin/chromium driven by playwright-core) against a real
# `roost serve`. Installs the test's npm dependencies and, as root with
# apt, Chromium. Assumes `cargo build --release` has produced
# target/release/roost (or ROOST_BIN points at a roost binary).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive

if [ -z "${ROOST_BIN:-}" ] && [ ! -x target/release/roost ]; then
  echo "target/release/roost is missing: run 'cargo build --release' first" >&2
  exit 1
fi

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need_apt[*]} with apt"
    apt-get update -q
    apt-get install -y -q "${need_apt[@]}"
  else
    echo "the example's browser test needs ${need_apt[*]} (Chromium at /usr/bin/chromium): run this as root where apt-get exists, or 'apt-get install ${need_apt[*]}' yourself" >&2
    exit 1
  fi
fi

echo "== examples/chat in headless Chromium (examples/chat/test)"
cd examples/chat/test
npm ci --quiet --no-audit --no-fund
node chat.test.mjs
