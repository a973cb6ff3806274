#!/usr/bin/env bash
# Admission control at 2x saturation: a component limited to 8 running + 8 queued requests, each
# taking 10 ms, offered 32 concurrent connections. Expect only 200s and 503s (no socket errors, no
# timeouts) and a responsive /healthz throughout. Usage: bench/admission.sh
source "$(dirname "$0")/lib.sh"
need_wrk
build_all
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
write_app "$work/app" "$KITCHEN" "max_concurrency = 8, queue_depth = 8, queue_timeout_ms = 1000"
port=$(free_port)
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$port" --cache-dir "$work/cache" >/dev/null &
wait_http "http://127.0.0.1:$port/healthz"

url="http://127.0.0.1:$port/sleep?ms=10"
echo "== capacity: 8 connections (= max_concurrency), no queueing"
CONNS=8 DURATION=${DURATION:-10s} wrk -t1 -c8 -d"${DURATION:-10s}" --latency "$url" | grep -E "Requests/sec|^ +(50|99)%|Non-2xx|Socket errors" || true
echo "== 2x saturation: 32 connections against 8 running + 8 queued"
(for _ in $(seq 1 20); do curl -s -o /dev/null -w "%{time_total}\n" "http://127.0.0.1:$port/healthz"; sleep 0.2; done > "$work/health") &
wrk -t1 -c32 -d"${DURATION:-10s}" --latency "$url" | tee "$work/wrk" | grep -E "Requests/sec|^ +(50|99)%|requests in|Non-2xx|Socket errors" || true
wait %2 2>/dev/null || true
grep -q "Socket errors" "$work/wrk" && echo "socket errors present" || echo "socket errors: none"
python3 - "$work/health" <<'PY'
import sys, statistics
t = [float(x) * 1000 for x in open(sys.argv[1]).read().split()]
print(f"/healthz during overload: {len(t)} probes, median {statistics.median(t):.2f} ms, max {max(t):.2f} ms")
PY
