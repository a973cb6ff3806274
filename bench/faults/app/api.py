"""Service `api` of the fault-injection benchmark's app (bench/faults.py): `front` calls
`GET /api/order?id=N`; it calls a dependency outside the platform (DEP_URL, the benchmark's own
server), has the order written to KV by function `store` (STORE_URL, `grants.invoke`) and
publishes `order.created` to topic `orders` through the gateway (EVENTS_URL, the topic is public),
then answers. All three go out through Nimbus's egress proxy (HTTP_PROXY) in the sandbox.

Its faults are what FAULTS_URL answers (JSON, polled every 0.5 s, so they change without a
redeploy): `sleep_ms` (added latency), `error_rate` (share of 500s), `leak_kb` (memory kept for
good per request, touched; dropped when the fault goes back to 0)."""
import http.client, json, os, random, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS_URL, DEP_URL = os.environ["FAULTS_URL"], os.environ["DEP_URL"]
STORE_URL, EVENTS_URL = os.environ["STORE_URL"], os.environ["EVENTS_URL"]
PROXY = urllib.parse.urlsplit(os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy") or "")
fault = {}
leaked, leak_debt, leak_lock = [], 0, threading.Lock()
local = threading.local()


def connection(netloc):
    """A keep-alive connection of this thread to the proxy (or, without one, to `netloc`)."""
    key = PROXY.netloc or netloc
    conns = local.__dict__.setdefault("conns", {})
    if key not in conns:
        host, _, port = key.partition(":")
        conns[key] = http.client.HTTPConnection(host, int(port or 80), timeout=30)
    return key, conns[key]


def call(method, url, headers=None, body=None):
    """`method url` through the proxy in absolute form (or directly): status and body."""
    parts = urllib.parse.urlsplit(url)
    target = url if PROXY.netloc else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for attempt in (1, 2):  # a kept-alive connection the other side closed is retried once
        key, conn = connection(parts.netloc)
        try:
            conn.request(method, target, body=body, headers={"host": parts.netloc, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            local.conns.pop(key, None)
            if attempt == 2:
                raise


def poll_faults():
    global fault, leaked
    while True:
        try:
            status, body = call("GET", FAULTS_URL)
            if status == 200:
                fault = json.loads(body)
                if not fault.get("leak_kb"):
                    with leak_lock:
                        leaked = []
        except Exception as e:  # the benchmark's server is gone or slow: keep the last faults
            sys.stderr.write(f"api: polling faults: {e}\n")
        time.sleep(0.5)


def leak(kb):
    """Keeps `kb` KiB for good, in 1 MiB blocks written to (so they count in RSS)."""
    global leak_debt
    with leak_lock:
        leak_debt += kb
        while leak_debt >= 1024:
            leaked.append(bytearray(b"\x01") * (1 << 20))
            leak_debt -= 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle and the peer's delayed ACK add
    # 40 ms to every answer on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            return self.reply(200, "ok\n")
        f = fault
        if f.get("sleep_ms"):
            time.sleep(f["sleep_ms"] / 1000)
        if f.get("leak_kb"):
            leak(f["leak_kb"])
        if random.random() < f.get("error_rate", 0):
            return self.reply(500, "api: injected error\n")
        # Trace context and call depth go on, as a well-behaved service passes them.
        passed = {h: self.headers[h] for h in ("traceparent", "tracestate", "x-nimbus-invoke-depth") if self.headers.get(h)}
        order = urllib.parse.parse_qs(url.query).get("id", ["0"])[0]
        try:
            status, body = call("GET", DEP_URL, passed)
            if status != 200:
                return self.reply(502, f"api: dependency answered {status}\n")
            status, body = call("GET", f"{STORE_URL}/order?id={order}", passed)
            if status != 200:
                return self.reply(502, f"api: store answered {status}: {body[:200].decode(errors='replace')}\n")
            event = {"ce-specversion": "1.0", "ce-id": f"order-{order}-{time.time_ns()}", "ce-source": "/shop/api",
                     "ce-type": "order.created", "content-type": "application/json",
                     **({"traceparent": passed["traceparent"]} if "traceparent" in passed else {})}
            status, body = call("POST", EVENTS_URL, event, json.dumps({"order": order}).encode())
            if status // 100 != 2:
                return self.reply(502, f"api: publish answered {status}: {body[:200].decode(errors='replace')}\n")
        except (http.client.HTTPException, OSError) as e:
            return self.reply(502, f"api: {e}\n")
        self.reply(200, f"api ok order {order}\n")


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
threading.Thread(target=poll_faults, daemon=True).start()
print(f"api listening on {os.environ['PORT']}", flush=True)
server.serve_forever()
