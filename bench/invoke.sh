#!/usr/bin/env bash
# Cost of a component-to-component call (`grants.invoke`) under `nimbus up`, in one run,
# interleaved: the kitchen function `web` calling the kitchen function `api` at
# `http://api.internal/kitchen/echo` (in-process, through the mesh) against the same call over
# loopback HTTP to the same `nimbus up` (`http://127.0.0.1:PORT/kitchen/echo`, an outbound
# grant), and against `api` called directly by the client (one invocation, no call: the floor).
# Usage: bench/invoke.sh [ROUNDS]  (NIMBUS=BIN KITCHEN=WASM bench/invoke.sh skips the build.)
source "$(dirname "$0")/lib.sh"
need_wrk
if [ -z "${NIMBUS:-}" ] || [ -z "${KITCHEN:-}" ]; then build_all; fi
ROUNDS=${1:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
mkdir -p "$work/app"
cat > "$work/app/nimbus.toml" <<TOML
[app]
name = "bench"

[component.web]
source = "$KITCHEN"
limits = { max_concurrency = 1000 }
grants = { invoke = ["api"], outbound = ["http://127.0.0.1:$port"] }

[component.api]
source = "$KITCHEN"
limits = { max_concurrency = 1000 }

[[trigger.http]]
route = "/kitchen/..."
component = "web"

[[trigger.http]]
route = "/kitchen/echo"
component = "api"
TOML
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --cache-dir "$work/cache" >/dev/null &
base="http://127.0.0.1:$port"
wait_http "$base/kitchen/echo"
curl -sf "$base/kitchen/outbound?url=http://api.internal/kitchen/echo" | grep -q "upstream status 200"
curl -sf "$base/kitchen/outbound?url=$base/kitchen/echo" | grep -q "upstream status 200"

echo "wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores"
printf "%-6s %-34s %10s %10s %10s %8s\n" round path req/s p50 p99 non2xx
for r in $(seq 1 "$ROUNDS"); do
    for target in "invoke (api.internal, in-process)|$base/kitchen/outbound?url=http://api.internal/kitchen/echo" \
                  "loopback HTTP (same server)|$base/kitchen/outbound?url=$base/kitchen/echo" \
                  "direct (client calls api)|$base/kitchen/echo"; do
        name=${target%%|*}; url=${target#*|}
        read -r rps p50 p99 non2xx < <(wrk_run "$url")
        printf "%-6s %-34s %10s %10s %10s %8s\n" "$r" "$name" "$rps" "$p50" "$p99" "$non2xx"
    done
done
