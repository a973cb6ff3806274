#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the guest toolchains the tests build with,
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-wasip1
command -v componentize-py >/dev/null && componentize-py --version | grep -q "0.25.1" \
    || pip install -q componentize-py==0.25.1
command -v npm >/dev/null  # the http-js template installs componentize-js from npm at build time

cargo test --workspace --locked "$@"
