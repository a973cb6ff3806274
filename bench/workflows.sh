#!/usr/bin/env bash
# Durable workflow figures: a 3-step run (three journaled steps that do no I/O) one at a time
# (p50/p99 of 200 after 20 warm-ups) and runs/s with 64 concurrent clients for 5 s, on Restate
# (restate-server + the TypeScript SDK, through the HTTP ingress) and then on Nimbus's engine.
# Usage: bench/workflows.sh [restate]   ("restate" runs only the Restate part)
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
source "$(dirname "$0")/lib.sh"   # cd to the repo root; free_port, wait_http
RESTATE_DIR="$PWD/bench/restate"
SERVER_BIN="$RESTATE_DIR/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"

wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for 127.0.0.1:$1" >&2
    return 1
}

PIDS=() TMP=
cleanup() {   # stops what restate_bench started (by pid) and deletes its data; safe to call twice
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do timeout 15 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    PIDS=()
    [[ -z $TMP ]] || rm -rf "$TMP" || true
    TMP=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

restate_bench() {
    local tmp ingress admin fabric svc version label
    tmp=$(mktemp -d)   # same filesystem as the Nimbus bench's tempdir, so fsync costs compare
    TMP=$tmp
    ingress=$(free_port) admin=$(free_port) fabric=$(free_port) svc=$(free_port)

    # Durability: restate 1.7 writes every journal entry to Bifrost's default "replicated" loglet,
    # served here by this node's log-server (replication 1). The log-server commits each write
    # batch to RocksDB with WriteOptions::sync = !rocksdb-disable-wal-fsync, i.e. the WAL is
    # fsynced before the store is acknowledged (group commit), and only then does the handler's
    # ctx.run get its ack. That is the default; it is pinned here so a changed default shows up.
    RESTATE_BIFROST__DEFAULT_PROVIDER=replicated \
    RESTATE_LOG_SERVER__ROCKSDB_DISABLE_WAL_FSYNC=false \
    RESTATE_INGRESS__BIND_ADDRESS="127.0.0.1:$ingress" \
    RESTATE_ADMIN__BIND_ADDRESS="127.0.0.1:$admin" \
    RESTATE_BIND_ADDRESS="127.0.0.1:$fabric" \
    RESTATE_LISTEN_MODE=tcp RESTATE_DISABLE_TELEMETRY=true RESTATE_SHUTDOWN_TIMEOUT=5s \
        "$SERVER_BIN" --base-dir "$tmp/data" --node-name bench --no-logo \
        --log-disable-ansi-codes true >"$tmp/restate.log" 2>&1 &
    PIDS+=($!)
    PORT=$svc RESTATE_LOGGING=WARN node "$RESTATE_DIR/service.mjs" >"$tmp/service.log" 2>&1 &
    PIDS+=($!)
    if ! { wait_http "http://127.0.0.1:$admin/health" && wait_http "http://127.0.0.1:$ingress/restate/health" \
            && wait_port "$svc"; }; then
        tail -n 30 "$tmp/restate.log" "$tmp/service.log" >&2
        return 1
    fi

    # Register the service deployment (retried: the freshly provisioned cluster may still be
    # settling), then wait until the ingress routes order/run.
    local ok=
    for _ in $(seq 1 50); do
        curl -sf -o /dev/null --max-time 10 -X POST "http://127.0.0.1:$admin/deployments" -H 'content-type: application/json' \
            -d "{\"uri\":\"http://127.0.0.1:$svc\"}" && { ok=1; break; }
        sleep 0.2
    done
    [[ -n $ok ]] || { echo "registering the deployment failed" >&2; tail -n 30 "$tmp/restate.log" >&2; return 1; }
    # A 404 until the ingress knows the service; a run that does not finish means a broken handler
    # (Restate keeps retrying it), so that fails at once.
    local rc
    for _ in $(seq 1 100); do
        rc=0
        curl -sf -o /dev/null --max-time 10 -X POST "http://127.0.0.1:$ingress/order/run" \
            -H 'content-type: application/json' -d '{"id":"ready"}' || rc=$?
        [[ $rc == 0 || $rc == 28 ]] && break
        sleep 0.1
    done
    if [[ $rc != 0 ]]; then
        echo "order/run did not answer (curl exit $rc)" >&2
        tail -n 30 "$tmp/restate.log" "$tmp/service.log" >&2
        return 1
    fi

    version=$("$SERVER_BIN" --version | awk '{print $2}')
    label="restate $version (rocksdb, replicated loglet on the local log-server, WAL fsynced per commit batch before ack [default])"
    node "$RESTATE_DIR/load.mjs" "$ingress" "$label"
    cleanup
}

# Inside the private network namespace (see below): loopback up, then the Restate part alone.
if [[ ${1:-} == __netns ]]; then
    ip link set lo up
    restate_bench
    exit
fi

# Pinned packages from bench/restate/package-lock.json; reinstalled only when not as locked.
# Install scripts are skipped: the only one is an analytics ping (@scarf/scarf); the server
# binary comes in @restatedev/restate-server-linux-x64 itself.
if ! (cd "$RESTATE_DIR" && [[ -x $SERVER_BIN ]] && node -e '
        const want = require("./package.json").dependencies;
        for (const [n, v] of Object.entries(want)) if (require(n + "/package.json").version !== v) process.exit(1);
    ' 2>/dev/null); then
    (cd "$RESTATE_DIR" && SCARF_ANALYTICS=false npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
        || { echo "npm ci failed in bench/restate (the npm registry must be reachable)" >&2; exit 1; }
fi

# restate-server asks GitHub for its latest release at start-up (unconditionally; telemetry is
# switched off above). Run it, the service and the load in a network namespace of their own that
# only has loopback, when this shell may make one (root); otherwise on the host's loopback.
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    unshare -n bash "$SELF" __netns
else
    restate_bench
fi

[[ ${1:-} == restate ]] || cargo bench -q -p nimbus-workflows --bench workflows
