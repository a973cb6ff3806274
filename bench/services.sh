#!/usr/bin/env bash
# Services: proxy overhead vs nginx and direct, scale-from-zero with and without prewarm.
# Usage: bench/services.sh [RUNS]
source "$(dirname "$0")/lib.sh"
need_wrk
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
build_all
(cd examples/services/go && go build -o service .)
python3 bench/services.py "$NIMBUS" "$PWD/examples/services/go/service" "${1:-5}"
