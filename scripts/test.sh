#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the guest toolchains the tests build with,
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-wasip1
command -v componentize-py >/dev/null && componentize-py --version | grep -q "0.25.1" \
    || pip install -q componentize-py==0.25.1
[ -x tests/guests/js/node_modules/.bin/componentize-js ] || npm ci --prefix tests/guests/js --no-audit --no-fund

cargo test --workspace --locked "$@"
