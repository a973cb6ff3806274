#!/usr/bin/env bash
# TLS cost on the hello component: req/s over keep-alive and new connections per second (a full
# TLS handshake each: wrk with `Connection: close`, no session resumption) for `nimbus up` over
# HTTPS and over plain HTTP, and nginx (apt) with the same certificate (ECDSA P-256, from
# openssl) answering a fixed body, in one run, interleaved. Usage: bench/tls.sh [ROUNDS]
# (NIMBUS=BIN HELLO=WASM bench/tls.sh skips the release build and uses those.)
source "$(dirname "$0")/lib.sh"
need_wrk
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
if [ -z "${NIMBUS:-}" ] || [ -z "${HELLO:-}" ]; then build_all; fi
ROUNDS=${1:-3}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")"; rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
write_app "$work/app" "$HELLO"
tp=$(free_port); pp=$(free_port); ntp=$(free_port); npp=$(free_port)
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$tp" --data-dir "$work/tls-data" \
    --cache-dir "$work/cache" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >/dev/null &
NIMBUS_LOG=warn "$NIMBUS" up "$work/app" --listen "127.0.0.1:$pp" --data-dir "$work/plain-data" \
    --cache-dir "$work/cache" >/dev/null &
cat > "$work/nginx.conf" <<CONF
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$ntp ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        location / { return 200 "Hello from nginx\n"; }
    }
    server {
        listen 127.0.0.1:$npp;
        location / { return 200 "Hello from nginx\n"; }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
wait_http "http://127.0.0.1:$pp/"; wait_http "http://127.0.0.1:$npp/"
for _ in $(seq 1 600); do curl -sfk -o /dev/null "https://127.0.0.1:$tp/" && break; sleep 0.05; done

echo "$(nginx -v 2>&1); $(openssl version); wrk -t${THREADS:-1} -c${CONNS:-64} -d${DURATION:-10s}; $(nproc) cores"
printf "%-6s %-22s %12s %12s %10s %10s\n" round server keepalive/s newconn/s p50 p99
for r in $(seq 1 "$ROUNDS"); do
    for target in "nimbus https|https://127.0.0.1:$tp/" "nimbus http|http://127.0.0.1:$pp/" \
                  "nginx https|https://127.0.0.1:$ntp/" "nginx http|http://127.0.0.1:$npp/"; do
        name=${target%%|*}; url=${target#*|}
        read -r rps p50 p99 _ < <(wrk_run "$url")
        conn=$(wrk -t"${THREADS:-1}" -c"${CONNS:-64}" -d"${DURATION:-10s}" -H "Connection: close" "$url" | awk '/Requests\/sec/ {print $2}')
        printf "%-6s %-22s %12s %12s %10s %10s\n" "$r" "$name" "$rps" "$conn" "$p50" "$p99"
    done
done
