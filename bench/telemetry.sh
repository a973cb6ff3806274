#!/usr/bin/env bash
# The cost of tracing and metrics: req/s of the hello component through `nimbus up` with
# telemetry on (every request traced: 5 spans, the trace store's default keep policy, metrics)
# and with `--no-telemetry`, same component and wrk settings, interleaved in one run.
# ON_ARGS adds flags to the "on" server (e.g. ON_ARGS="--trace-keep 0" stores every trace);
# OTEL=1 makes it also export every span over OTLP/HTTP to a local collector that accepts and
# drops them. Usage: bench/telemetry.sh [ROUNDS]
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
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$on" --cache-dir "$work/cache" ${ON_ARGS:-} \
    --data-dir "$work/on" --api-listen 127.0.0.1:0 >/dev/null &
unset OTEL_EXPORTER_OTLP_ENDPOINT
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$off" --cache-dir "$work/cache" \
    --data-dir "$work/off" --api-listen 127.0.0.1:0 --no-telemetry >/dev/null &
wait_http "http://127.0.0.1:$on/"; wait_http "http://127.0.0.1:$off/"

# Warm both (pool slots, page cache, CPU frequency) before anything is measured.
DURATION=3s wrk_run "http://127.0.0.1:$on/" >/dev/null; DURATION=3s wrk_run "http://127.0.0.1:$off/" >/dev/null

echo "wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores; on: ${ON_ARGS:-defaults}; OTLP export: ${OTEL:-0}"
printf "%-6s %-16s %12s %10s %10s %8s\n" round telemetry req/s p50 p99 non2xx
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    # Alternate which server goes first, so drift in the machine's speed favours neither.
    order=(on off); [ $((r % 2)) = 0 ] && order=(off on)
    for which in "${order[@]}"; do
        port=$on; [ "$which" = off ] && port=$off
        read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$port/")
        printf "%-6s %-16s %12s %10s %10s %8s\n" "$r" "$which" "$rps" "$p50" "$p99" "$bad"
        [ "$which" = on ] && a_rps=$rps || b_rps=$rps
    done
    ratio=$(python3 -c "print(f'{float(\"$a_rps\")/float(\"$b_rps\"):.3f}')")
    ratios+=("$ratio")
    echo "       ratio on/off: $ratio"
done
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'median ratio on/off over {len(r)} rounds: {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})')" "${ratios[@]}"
echo "trace store after the run: $(du -sh "$work/on/telemetry/traces" | cut -f1) (bound: 128 MiB)"
