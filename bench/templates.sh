#!/usr/bin/env bash
# Per template: build time, artifact size, process start -> first response without and with the
# compile cache (and wasmtime serve on the same artifact), and warm p50/p99 latency (wrk, 1 conn).
# Usage: bench/templates.sh [RUNS]
source "$(dirname "$0")/lib.sh"
need_wrk
WASMTIME=$(wasmtime_cli)
build_all
RUNS=${1:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for t in http-rust http-python http-js http-c http-go; do
    echo "=== $t"
    "$NIMBUS" new "$t" app --dir "$work/$t" >/dev/null
    app="$work/$t/app"
    start=$(date +%s.%N)
    (cd "$app" && "$NIMBUS" build >/dev/null 2>&1)
    echo "build (first, incl. dependency downloads): $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f} s')")"
    case $t in
        http-rust) artifact="$app/target/wasm32-wasip2/release/app.wasm" ;;
        *) artifact="$app/app.wasm" ;;
    esac
    echo "artifact: $(stat -c %s "$artifact") bytes"
    python3 bench/first_response.py "$NIMBUS" "$WASMTIME" "$artifact" "$RUNS" | tail -4
    port=$(free_port)
    NIMBUS_LOG=warn "$NIMBUS" up "$app" --listen "127.0.0.1:$port" --cache-dir "$work/cache" >/dev/null &
    pid=$!
    wait_http "http://127.0.0.1:$port/"
    wrk -t1 -c1 -d5s --latency "http://127.0.0.1:$port/" | grep -E "^ +(50|99)%|Requests/sec" | tr -s ' ' | paste -sd' ' | sed 's/^/warm, 1 connection: /'
    kill $pid; wait $pid 2>/dev/null || true
done
