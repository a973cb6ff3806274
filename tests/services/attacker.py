"""A service that attacks its sandbox, for Nimbus's isolation tests: each endpoint tries one thing
and says what happened (`ok ...` or `denied ...`). Also ignores SIGTERM when IGNORE_TERM is set,
starts a child process, and floods its stdout on request."""
import os, signal, socket, subprocess, sys, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A child that lives as long as it is let (tagged with this process's arguments for counting).
CHILD = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100000)"] + sys.argv[1:])


def attempt(action):
    try:
        return "ok " + str(action())
    except Exception as e:  # noqa: BLE001 - the point is to report any failure
        return f"denied {type(e).__name__}: {e}"


def connect(port):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=3) as s:
        s.sendall(b"GET /env?name=MARKER HTTP/1.0\r\nHost: x\r\n\r\n")
        return s.recv(4096).decode(errors="replace").split("\r\n\r\n")[-1]


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def write(path):
    with open(path, "w") as f:
        f.write("pwned")
    return path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        p = q.get("path", "")
        routes = {
            "/healthz": lambda: "ok",
            "/read": lambda: attempt(lambda: len(open(p, "rb").read())),
            "/list": lambda: attempt(lambda: os.listdir(p)),
            "/write": lambda: attempt(lambda: write(p)),
            "/connect": lambda: attempt(lambda: connect(q["port"])),
            "/fetch": lambda: attempt(lambda: fetch(q["url"])),
            "/id": lambda: f"uid={os.getuid()} gid={os.getgid()} " + " ".join(
                l.replace("\t", "=") for l in open("/proc/self/status").read().splitlines()
                if l.startswith(("CapEff", "CapPrm", "NoNewPrivs"))),
            "/env": lambda: os.environ.get(q.get("name", ""), "<unset>"),
            "/say": lambda: print(q.get("text", ""), flush=True) or "said",
            "/flood": lambda: flood(int(q.get("mb", "1"))),
        }
        # The last segment names the attempt (the app's route prefix comes before it).
        body = routes.get("/" + url.path.rsplit("/", 1)[-1], lambda: "no such route")().encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def flood(mb):
    line = "flood " + "x" * 1017 + "\n"
    for _ in range(mb * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    return "flooded"


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
