#!/usr/bin/env bash
# The cost of metering: req/s of the hello component through `nimbus up` with metering on (the
# default: every invocation metered, usage flushed to usage.redb every --meter-flush, 10 s) and
# with `--no-metering`, telemetry on in both, same component and wrk settings, interleaved in one
# run. Afterwards the "on" server's local API (GET /v1/cost?by=app, its URL and token from
# DATA_DIR/api.json) must report the invocations the load sent, to show metering was really on.
# Besides req/s, each row has the server's CPU time per request (user + system of the whole
# process from /proc/PID/stat over the wrk run, over req/s x duration), which a machine shared with
# other work disturbs less than req/s.
# NIMBUS=/path/to/nimbus skips building the release binary (CARGO_TARGET_DIR is honoured).
# Usage: bench/metering.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
need_wrk
# Not lib.sh's build_all: it expects the binary under ./target even when CARGO_TARGET_DIR is set.
if [ -z "${NIMBUS:-}" ]; then
    cargo build --release -q --locked --bin nimbus
    NIMBUS="${CARGO_TARGET_DIR:-$PWD/target}/release/nimbus"
fi
(unset CARGO_TARGET_DIR; cargo build --release -q --locked --target wasm32-wasip2 \
    --manifest-path tests/guests/Cargo.toml --target-dir tests/guests/target -p hello)
HELLO="$PWD/tests/guests/target/wasm32-wasip2/release/hello.wasm"
ROUNDS=${1:-6}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
# Only --no-metering may differ between the two servers.
unset NIMBUS_NO_METERING NIMBUS_METER_FLUSH NIMBUS_NO_TELEMETRY NIMBUS_COST_CONFIG

write_app "$work/app" "$HELLO"
on=$(free_port); off=$(free_port)
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$on" --cache-dir "$work/cache" \
    --data-dir "$work/on" --api-listen 127.0.0.1:0 >/dev/null &
on_pid=$!
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$off" --cache-dir "$work/cache" \
    --data-dir "$work/off" --api-listen 127.0.0.1:0 --no-metering >/dev/null &
off_pid=$!
wait_http "http://127.0.0.1:$on/"; wait_http "http://127.0.0.1:$off/"

# Warm both (pool slots, page cache, CPU frequency) before anything is measured.
read -r warm_rps _ < <(DURATION=3s wrk_run "http://127.0.0.1:$on/"); DURATION=3s wrk_run "http://127.0.0.1:$off/" >/dev/null
secs=${DURATION:-10s}; secs=${secs%s}
sent=$(python3 -c "print($warm_rps * 3)")
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores; telemetry on in both; on: defaults (--meter-flush 10s); off: --no-metering"
printf "%-6s %-16s %12s %10s %10s %8s %12s\n" round metering req/s p50 p99 non2xx "CPU µs/req"
on_rps=(); off_rps=(); ratios=(); on_cpu=(); off_cpu=()
for r in $(seq 1 "$ROUNDS"); do
    # Alternate which server goes first, so drift in the machine's speed favours neither.
    order=(on off); [ $((r % 2)) = 0 ] && order=(off on)
    for which in "${order[@]}"; do
        port=$on; pid=$on_pid; [ "$which" = off ] && port=$off && pid=$off_pid
        t0=$(cpu_ticks "$pid")
        read -r rps p50 p99 bad < <(wrk_run "http://127.0.0.1:$port/")
        cpu=$(python3 -c "print(f'{($(cpu_ticks "$pid") - $t0) / $tck * 1e6 / ($rps * $secs):.2f}')")
        printf "%-6s %-16s %12s %10s %10s %8s %12s\n" "$r" "$which" "$rps" "$p50" "$p99" "$bad" "$cpu"
        if [ "$which" = on ]; then a_rps=$rps; on_rps+=("$rps"); on_cpu+=("$cpu"); sent=$(python3 -c "print($sent + $rps * $secs)")
        else b_rps=$rps; off_rps+=("$rps"); off_cpu+=("$cpu"); fi
    done
    ratio=$(python3 -c "print(f'{float(\"$a_rps\")/float(\"$b_rps\"):.3f}')")
    ratios+=("$ratio")
    echo "       ratio on/off: $ratio"
done
python3 - "${on_rps[*]}" "${off_rps[*]}" "${ratios[*]}" "${on_cpu[*]}" "${off_cpu[*]}" <<'PY'
import statistics, sys
on, off, ratios, on_cpu, off_cpu = ([float(x) for x in a.split()] for a in sys.argv[1:6])
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"median req/s over {len(on)} rounds: on {m_on:,.0f}, off {m_off:,.0f}")
print(f"ratio of medians on/off: {m_on / m_off:.3f} -> metering overhead {(1 - m_on / m_off) * 100:+.1f} %")
print(f"median of the per-round ratios: {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
c_on, c_off = statistics.median(on_cpu), statistics.median(off_cpu)
print(f"median CPU per request: on {c_on:.2f} µs, off {c_off:.2f} µs -> {c_on - c_off:+.2f} µs ({(c_on / c_off - 1) * 100:+.1f} %)")
PY

# Metering was on: the "on" server's usage store, as of its next flush, counts the requests sent.
python3 - "$work/on/api.json" "$sent" <<'PY'
import json, sys, time, urllib.request
api, sent = json.load(open(sys.argv[1])), float(sys.argv[2])
req = urllib.request.Request(api["url"] + "/v1/cost?by=app", headers={"authorization": "Bearer " + api["token"]})
loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))
time.sleep(11)  # the report is as of the last flush (every 10 s): wait for one after the load
report = json.load(loopback.open(req))
invocations = report["total"]["usage"]["invocations"]
apps = ", ".join(f"{r.get('app')}: {r['usage']['invocations']}" for r in report["rows"])
print(f'metered by the "on" server (GET /v1/cost?by=app): {invocations} invocations ({apps}); '
      f"wrk sent ~{sent:.0f} (req/s x s, warm-up included; {(invocations / sent - 1) * 100:+.2f} %)")
PY
if [ -e "$work/off/metering" ]; then echo "odd: the --no-metering server has a metering directory" >&2; fi
echo "usage store after the run: $(du -sh "$work/on/metering" | cut -f1)"
