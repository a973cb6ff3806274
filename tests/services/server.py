"""A small HTTP service for Nimbus's tests: the $PORT contract, streaming, an upgrade, crashes,
and a graceful SIGTERM (in-flight requests finish, then it exits)."""
import json, os, signal, sys, threading, time, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


active = 0
active_lock = threading.Lock()
# Sockets /flood-proxy keeps open.
held = []
# Tells processes apart (in the sandbox, each one has the same pid and port).
BOOT = os.urandom(4).hex()


def identity():
    """The workload identity files Nimbus gives the service, and an mTLS handshake with itself
    over loopback using them: each side presents the certificate and verifies the other's against
    the bundle."""
    import socket, ssl
    d = os.environ["NIMBUS_IDENTITY_DIR"]
    cert, key, bundle = (os.path.join(d, n) for n in ("svid.pem", "svid_key.pem", "bundle.pem"))
    info = ssl._ssl._test_decode_cert(cert)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.load_verify_locations(bundle)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_cert_chain(cert, key)
    client.load_verify_locations(bundle)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    peer = {}
    def accept():
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            peer["san"] = tls.getpeercert().get("subjectAltName")
            tls.sendall(b"ok")
    t = threading.Thread(target=accept)
    t.start()
    with client.wrap_socket(socket.create_connection(listener.getsockname())) as tls:
        tls.recv(2)
        peer["server"] = tls.getpeercert().get("subjectAltName")
    t.join()
    try:
        open(os.path.join(d, "svid.pem"), "a").close()
        writable = True
    except OSError:
        writable = False
    return {"id": os.environ.get("NIMBUS_WORKLOAD_ID"), "dir": d, "san": info.get("subjectAltName"),
            "serial": info.get("serialNumber"), "not_after": info.get("notAfter"),
            "client_seen_by_server": peer.get("san"), "server_seen_by_client": peer.get("server"),
            "key_mode": oct(os.stat(key).st_mode & 0o777), "writable": writable}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one_request(self):
        # Count requests, not connections: an idle keep-alive connection must not delay a stop.
        global active
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        with active_lock:
            active += 1
        try:
            if not self.parse_request():
                return
            getattr(self, "do_" + self.command, lambda: self.send_error(501))()
            self.wfile.flush()
        finally:
            with active_lock:
                active -= 1

    def log_message(self, fmt, *args):
        sys.stderr.write("py: " + (fmt % args) + "\n")

    def reply(self, status, body, ctype="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix(os.environ.get("PREFIX", "/py"))
        if path == "/healthz":
            self.reply(200, "ok")
        elif path == "/hello":
            print(f"hello request on port {os.environ['PORT']}", flush=True)
            self.reply(200, f"hello from python pid={os.getpid()} boot={BOOT} port={os.environ['PORT']} host={self.headers.get('host')} xff={self.headers.get('x-forwarded-for')}\n")
        elif path == "/identity":
            self.reply(200, json.dumps(identity()), "application/json")
        elif path == "/flood-proxy":
            # Opens (and holds) n connections to the egress proxy; n=0 closes those held.
            import socket
            n = int(q.get("n", "0"))
            if n == 0:
                while held:
                    held.pop().close()
            for _ in range(n):
                s = socket.socket()
                s.settimeout(0.02)
                try:
                    s.connect(("127.0.0.1", 3128))
                    held.append(s)
                except OSError:
                    s.close()
            self.reply(200, f"holding {len(held)}\n")
        elif path == "/caller":
            self.reply(200, f"caller={self.headers.get('x-nimbus-caller')} depth={self.headers.get('x-nimbus-invoke-depth')}\n")
        elif path == "/headers":
            # The header names it got, and hop-by-hop headers of its own for the proxy to drop.
            data = " ".join(sorted(k.lower() for k in self.headers.keys())).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.send_header("connection", "x-internal")
            self.send_header("x-internal", "secret")
            self.send_header("keep-alive", "timeout=5")
            self.send_header("x-kept", "yes")
            self.end_headers()
            self.wfile.write(data)
        elif path == "/call":
            # Another component through the egress proxy (`grants.invoke`), passing the call
            # depth and trace context on as a well-behaved service does.
            req = urllib.request.Request(q["url"])
            for h in ("x-nimbus-invoke-depth", "traceparent"):
                if self.headers.get(h):
                    req.add_header(h, self.headers.get(h))
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
            self.reply(200, f"upstream status {status}\n".encode() + body)
        elif path == "/ps":
            self.reply(200, str(sum(1 for d in os.listdir("/proc") if d.isdigit())))
        elif path == "/env":
            self.reply(200, os.environ.get(q.get("name", ""), "<unset>"))
        elif path == "/slow":
            time.sleep(int(q.get("ms", "500")) / 1000)
            self.reply(200, "slow done\n")
        elif path == "/stream":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(5):
                chunk = f"data: tick {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/hog":
            chunks = []
            while True:  # 10 MiB at a time, touched, until the limit stops it
                chunks.append(bytearray(10 << 20))
        elif path == "/forkbomb":
            children = []
            try:
                while len(children) < 10000:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(30)
                        os._exit(0)
                    children.append(pid)
            except OSError as e:
                # Free the pids before answering: the next request may need a thread.
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                self.reply(200, f"fork stopped after {len(children)} processes: {e}\n")
                return
            self.reply(200, f"forked {len(children)} processes unhindered\n")
        elif path == "/crash":
            os._exit(3)
        elif path == "/upgrade":
            # A toy protocol after `101 Switching Protocols`: echo every byte back, upper-cased.
            self.send_response(101)
            self.send_header("connection", "upgrade")
            self.send_header("upgrade", "shout")
            self.end_headers()
            self.wfile.flush()
            conn = self.connection
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data.upper())
            self.close_connection = True
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        self.reply(200, body, "application/octet-stream")


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True


def stop(*_):
    print("got SIGTERM; finishing in-flight requests", flush=True)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
print(f"listening on {os.environ['PORT']}", flush=True)
server.serve_forever()
while active:  # in-flight requests finish; idle keep-alive connections do not hold the exit
    time.sleep(0.01)
print("stopped", flush=True)
