#!/usr/bin/env bash
# Fault injection: detection, precision, time to detect and root-cause ranking of the operations
# intelligence (GET /v1/alerts) against a multi-component app under steady load, scenarios injected
# at random times (printed seed). Writes a markdown table for bench/RESULTS.md.
# Usage: bench/faults.sh [faults.py options: --seed N --quiet S --hold S --recover S --rate R
#        --step 2s --scenarios a,b --repeat N --out DIR ...; see python3 bench/faults.py --help]
# NIMBUS=/path/to/nimbus skips building the release binary (CARGO_TARGET_DIR is honoured).
source "$(dirname "$0")/lib.sh"
if [ -z "${NIMBUS:-}" ]; then
    cargo build --release -q --bin nimbus
    NIMBUS="${CARGO_TARGET_DIR:-$PWD/target}/release/nimbus"
fi
# The app's functions: one guest, tests/guests/chain, built where lib.sh builds the others.
(unset CARGO_TARGET_DIR; cargo build --release -q --locked --target wasm32-wasip2 \
    --manifest-path tests/guests/Cargo.toml --target-dir tests/guests/target -p chain)
CHAIN="$PWD/tests/guests/target/wasm32-wasip2/release/chain.wasm"
python3 bench/faults.py "$NIMBUS" "$CHAIN" "$@"
