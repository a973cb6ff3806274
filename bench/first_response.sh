#!/usr/bin/env bash
# Restart -> first response with a warm compile cache, without cache, and for wasmtime serve.
# Usage: bench/first_response.sh [RUNS]
source "$(dirname "$0")/lib.sh"
WASMTIME=$(wasmtime_cli)
build_all
python3 bench/first_response.py "$NIMBUS" "$WASMTIME" "$HELLO" "${1:-10}"
