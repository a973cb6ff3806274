#!/usr/bin/env bash
# Does a guest stuck in an infinite loop slow everyone else down? hello req/s alone, then with one
# `kitchen /loop` request (timeout 2 s) kept in flight at all times by a client loop.
# Usage: bench/isolation.sh
source "$(dirname "$0")/lib.sh"
need_wrk
build_all
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/app"
cat > "$work/app/nimbus.toml" <<TOML
[app]
name = "isolation"
[component.hello]
source = "$HELLO"
[component.kitchen]
source = "$KITCHEN"
limits = { timeout_ms = 2000 }
[[trigger.http]]
route = "/..."
component = "hello"
[[trigger.http]]
route = "/kitchen/..."
component = "kitchen"
TOML
port=$(free_port)
NIMBUS_LOG=error "$NIMBUS" up "$work/app" --listen "127.0.0.1:$port" --cache-dir "$work/cache" >/dev/null &
wait_http "http://127.0.0.1:$port/healthz"
printf "%-34s %12s %10s %10s %8s\n" case req/s p50 p99 non2xx
read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$port/")
printf "%-34s %12s %10s %10s %8s\n" "hello alone" "$rps" "$p50" "$p99" "$bad"
(while true; do curl -s -o /dev/null "http://127.0.0.1:$port/kitchen/loop"; done) &
looper=$!
sleep 0.5
read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$port/")
printf "%-34s %12s %10s %10s %8s\n" "hello + 1 looping guest" "$rps" "$p50" "$p99" "$bad"
kill $looper
