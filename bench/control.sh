#!/usr/bin/env bash
# Control-plane figures: deploy -> first response, traffic switch latency, routing with 50 apps x 3
# revisions vs 1 app, next to `nimbus up`. Usage: bench/control.sh [RUNS]
source "$(dirname "$0")/lib.sh"
need_wrk
build_all
python3 bench/control.py "$NIMBUS" "$HELLO" "${1:-20}"
