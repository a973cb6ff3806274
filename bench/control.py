"""Control-plane figures of `nimbus server`, all over loopback in one run:
deploy -> first response of the new revision (compile cache hit and miss), traffic-switch latency,
and gateway req/s with 1 app vs 50 apps x 3 revisions (wrk), next to `nimbus up` serving the same
component. Usage: control.py NIMBUS HELLO_WASM RUNS"""
import io, json, os, re, socket, statistics, subprocess, sys, tarfile, tempfile, time, urllib.request

NIMBUS, HELLO, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
WASM = open(HELLO, "rb").read()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def manifest(app, route, marker):
    return f'[app]\nname = "{app}"\n\n[component.web]\nsource = "web.wasm"\nenv = {{ MARKER = "{marker}" }}\nlimits = {{ max_concurrency = 1000 }}\n\n[[trigger.http]]\nroute = "{route}"\ncomponent = "web"\n'


def custom_section(tag):
    """A custom section appended to the component: new content, so a compile-cache miss."""
    name, payload = b"nimbus-bench", tag.encode()
    body = bytes([len(name)]) + name + payload
    return b"\x00" + bytes([len(body)]) + body


def bundle(app, route, marker, wasm=WASM):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in (("nimbus.toml", manifest(app, route, marker).encode()), ("components/web.wasm", wasm)):
            info = tarfile.TarInfo(path); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    def __init__(self):
        self.data = tempfile.mkdtemp()
        self.gw, self.api = free_port(), free_port()
        self.proc = subprocess.Popen([NIMBUS, "server", "--listen", f"127.0.0.1:{self.gw}", "--api-listen", f"127.0.0.1:{self.api}",
                                      "--data-dir", self.data, "--cache-dir", os.path.join(self.data, "cache")],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "NIMBUS_LOG": "warn"})
        self.token = None
        for line in self.proc.stdout:
            if line.strip().startswith("nbt_"): self.token = line.strip()
            if line.startswith("Ready"): break

    def call(self, method, path, body=None, ctype="application/json"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}{path}", data=body, method=method,
                                     headers={"authorization": f"Bearer {self.token}", "content-type": ctype})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")

    def deploy(self, data, query=""):
        return self.call("POST", f"/v1/deployments?{query}", data, "application/x-tar")

    def served_by(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.gw}{path}") as r:
            r.read(); return r.headers.get("x-nimbus-revision")

    def stop(self):
        self.proc.terminate(); self.proc.wait()


def ms(xs):
    xs = sorted(xs); return f"median {statistics.median(xs)*1e3:.2f} ms, p90 {xs[int(len(xs)*0.9)-1]*1e3:.2f} ms, min {xs[0]*1e3:.2f} ms"


def wrk(url, host=None):
    args = ["wrk", "-t2", "-c64", "-d10s", "--latency", url] + (["-H", f"Host: {host}"] if host else [])
    out = subprocess.run(args, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(bad.group(1)) if bad else 0


s = Server()
# 1. Deploy -> first response of the new revision (the app already serves an older one).
s.deploy(bundle("hello", "/hello/...", "warmup"))
for label, fresh_wasm in (("compile cache hit (new env, same wasm)", False), ("compile cache miss (new wasm)", True)):
    acks, firsts = [], []
    for i in range(RUNS):
        tag = f"{label[:5]}{i}-{time.time_ns()}"
        data = bundle("hello", "/hello/...", tag, WASM + custom_section(tag) if fresh_wasm else WASM)
        t0 = time.perf_counter()
        rev = s.deploy(data)["revision"]
        acks.append(time.perf_counter() - t0)
        while s.served_by("/hello/x") != rev: pass
        firsts.append(time.perf_counter() - t0)
    print(f"deploy -> ack, {label}: {ms(acks)}")
    print(f"deploy -> first response of the new revision, {label}: {ms(firsts)}")

# 2. Traffic switch: PUT -> acknowledged -> the next request lands on the new revision.
a = s.deploy(bundle("flip", "/flip/...", "a"))["revision"]
b = s.deploy(bundle("flip", "/flip/...", "b"), "promote=false")["revision"]
acks, mismatches = [], 0
for i in range(RUNS * 5):
    to = b if i % 2 == 0 else a
    t0 = time.perf_counter()
    s.call("PUT", "/v1/apps/flip/traffic", json.dumps({"targets": [{"revision": to, "percent": 100}]}).encode())
    acks.append(time.perf_counter() - t0)
    mismatches += s.served_by("/flip/x") != to
print(f"traffic switch -> ack (durable, live): {ms(acks)}; requests right after the ack on the old revision: {mismatches}")
t0 = time.perf_counter(); s.call("POST", "/v1/apps/flip/rollback", b"{}"); print(f"rollback -> ack: {(time.perf_counter()-t0)*1e3:.2f} ms")
s.stop()

# 3. Routing at scale. Three processes run side by side (idle unless measured) and wrk rounds are
# interleaved, so machine noise hits every configuration alike: `nimbus up` (baseline), a server
# with 1 app, and a server with 50 apps x 3 revisions (traffic split 34/33/33), same route.
one = Server()
one.deploy(bundle("app0", "/app0/...", "r0"))
many = Server()
for n in range(50):
    revs = [many.deploy(bundle(f"app{n}", f"/app{n}/...", f"r{r}"), "promote=false")["revision"] for r in range(3)]
    split = [{"revision": r, "percent": p} for r, p in zip(revs, (34, 33, 33))]
    many.call("PUT", f"/v1/apps/app{n}/traffic", json.dumps({"targets": split}).encode())
apps = many.call("GET", "/v1/apps")
assert len(apps) == 50 and all(a["revisions"] == 3 for a in apps), apps

d = tempfile.mkdtemp()
open(os.path.join(d, "web.wasm"), "wb").write(WASM)
open(os.path.join(d, "nimbus.toml"), "w").write(manifest("app0", "/app0/...", "r0"))
port = free_port()
up = subprocess.Popen([NIMBUS, "up", d, "--listen", f"127.0.0.1:{port}", "--cache-dir", os.path.join(d, "cache")],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "NIMBUS_LOG": "warn"})
for line in up.stdout:
    if line.startswith("Health check"): break

configs = [
    ("nimbus up, 1 app (baseline)", f"http://127.0.0.1:{port}/app0/x"),
    ("nimbus server, 1 app", f"http://127.0.0.1:{one.gw}/app0/x"),
    ("nimbus server, 50 apps x 3 revs, app0", f"http://127.0.0.1:{many.gw}/app0/x"),
    ("nimbus server, 50 apps x 3 revs, app49", f"http://127.0.0.1:{many.gw}/app49/x"),
]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
results = {name: [] for name, _ in configs}
for _ in range(ROUNDS):
    for name, url in configs:
        results[name].append(wrk(url))
up.terminate(); up.wait(); one.stop(); many.stop()

print(f"gateway req/s (wrk -t2 -c64 -d10s, hello; median of {ROUNDS} interleaved rounds):")
med = {name: statistics.median(r[0] for r in rs) for name, rs in results.items()}
for name, rs in results.items():
    p99s = "/".join(r[1] for r in rs)
    bad = sum(r[2] for r in rs)
    print(f"  {name:<40} {med[name]:>9.0f} req/s  (rounds {', '.join(f'{r[0]:.0f}' for r in rs)})  p99 {p99s}  non-2xx {bad}")
base, one_app = med[configs[0][0]], med[configs[1][0]]
print(f"  server 1 app / up: {one_app/base:.3f}x;  50x3 app0 / 1 app: {med[configs[2][0]]/one_app:.3f}x;  50x3 app49 / 1 app: {med[configs[3][0]]/one_app:.3f}x")
