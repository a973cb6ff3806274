#!/usr/bin/env bash
# `nimbus dev`: time from saving a source file to the first response from the new code, for the
# Rust, JavaScript and Python templates (after the first build), with the compiler's own time
# (the build command) apart, with and without the compiled functions kept for recompiles
# (`--no-incremental-compile`). Usage: bench/dev.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
cargo build --release -q --bin nimbus
NIMBUS="${CARGO_TARGET_DIR:-$PWD/target}/release/nimbus"
ROUNDS=${1:-5}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for t in http-rust http-js http-python; do
    echo "=== $t"
    "$NIMBUS" new "$t" app --dir "$work/$t" >/dev/null
    app="$work/$t/app"
    case $t in
        http-rust) source_file="$app/src/lib.rs" ;;
        http-js) source_file="$app/app.js" ;;
        http-python) source_file="$app/app.py" ;;
    esac
    # Interleaved: the default (compiled functions reused), then each component from scratch,
    # then the default again; every round on a fresh compile cache.
    python3 bench/dev_reload.py "$NIMBUS" "$app" "$source_file" "Hello from" "$ROUNDS"
    python3 bench/dev_reload.py "$NIMBUS" "$app" "$source_file" "Round${ROUNDS}x" "$ROUNDS" --no-incremental-compile
    python3 bench/dev_reload.py "$NIMBUS" "$app" "$source_file" "Round${ROUNDS}x" "$ROUNDS"
done
