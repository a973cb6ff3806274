#!/usr/bin/env bash
# End-to-end req/s for the hello component: `nimbus up` vs `wasmtime serve`, same component, same
# wrk settings, same machine, interleaved in one run. Usage: bench/e2e.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
need_wrk
WASMTIME=$(wasmtime_cli)
build_all
ROUNDS=${1:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

write_app "$work/app" "$HELLO"
np=$(free_port); wp=$(free_port)
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$np" --cache-dir "$work/cache" >/dev/null &
"$WASMTIME" serve -Scli --addr "127.0.0.1:$wp" "$HELLO" >/dev/null 2>&1 &
wait_http "http://127.0.0.1:$np/"; wait_http "http://127.0.0.1:$wp/"

echo "wasmtime: $("$WASMTIME" --version); wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores"
printf "%-6s %-16s %12s %10s %10s %8s\n" round server req/s p50 p99 non2xx
for r in $(seq 1 "$ROUNDS"); do
    read -r n_rps n_p50 n_p99 n_bad < <(wrk_run "http://127.0.0.1:$np/")
    printf "%-6s %-16s %12s %10s %10s %8s\n" "$r" nimbus "$n_rps" "$n_p50" "$n_p99" "$n_bad"
    read -r w_rps w_p50 w_p99 w_bad < <(wrk_run "http://127.0.0.1:$wp/")
    printf "%-6s %-16s %12s %10s %10s %8s\n" "$r" "wasmtime serve" "$w_rps" "$w_p50" "$w_p99" "$w_bad"
    python3 -c "print(f'{\"\":6} ratio nimbus/wasmtime serve: {float(\"$n_rps\")/float(\"$w_rps\"):.2f}x')"
done
