#!/usr/bin/env bash
# The cost of tracing and metrics: req/s of the hello component through `nimbus up` with
# telemetry on (every request traced: 5 spans into the trace store, metrics, /metrics) and with
# `--no-telemetry`, same component and wrk settings, interleaved in one run. With
# OTEL=1 the "on" server also exports every span over OTLP/HTTP to a local collector that
# accepts and drops them. Usage: bench/telemetry.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
need_wrk
build_all
ROUNDS=${1:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

write_app "$work/app" "$HELLO"
on=$(free_port); off=$(free_port)
if [ "${OTEL:-0}" = 1 ]; then
    cp=$(free_port)
    python3 - "$cp" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$cp"
fi
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$on" --cache-dir "$work/cache" \
    --data-dir "$work/on" --api-listen 127.0.0.1:0 >/dev/null &
unset OTEL_EXPORTER_OTLP_ENDPOINT
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$off" --cache-dir "$work/cache" \
    --data-dir "$work/off" --api-listen 127.0.0.1:0 --no-telemetry >/dev/null &
wait_http "http://127.0.0.1:$on/"; wait_http "http://127.0.0.1:$off/"

echo "wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores; OTLP export: ${OTEL:-0}"
printf "%-6s %-16s %12s %10s %10s %8s\n" round telemetry req/s p50 p99 non2xx
for r in $(seq 1 "$ROUNDS"); do
    read -r a_rps a_p50 a_p99 a_bad < <(wrk_run "http://127.0.0.1:$on/")
    printf "%-6s %-16s %12s %10s %10s %8s\n" "$r" on "$a_rps" "$a_p50" "$a_p99" "$a_bad"
    read -r b_rps b_p50 b_p99 b_bad < <(wrk_run "http://127.0.0.1:$off/")
    printf "%-6s %-16s %12s %10s %10s %8s\n" "$r" off "$b_rps" "$b_p50" "$b_p99" "$b_bad"
    python3 -c "print(f'{\"\":6} ratio on/off: {float(\"$a_rps\")/float(\"$b_rps\"):.2f}')"
done
echo "trace store after the run: $(du -sh "$work/on/telemetry/traces" | cut -f1) (bound: 128 MiB)"
