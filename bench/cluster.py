"""Cluster figures of `nimbus server`, all over loopback in one run: three nats-servers forming one
JetStream cluster and three nodes on it (records on all three, --nats-replicas 3).

1. Convergence: deploys through node 0; the time from its answer until nodes 1 and 2 serve the new
   revision (polled every millisecond). The artifact is the same each time (the env changes), so
   this is the control path, not compiling.
2. Throughput of the hello function through a single `nimbus server` (no cluster, embedded
   stores) as the baseline, then through 1 node of the cluster, and through 3 nodes at once (one
   wrk each, summed).
3. A service (the Go template, one process, `scale.max = 1`) placed on one node: wrk through that
   node (served by its own process) and through another node (forwarded over the inter-node
   transport: HTTP/2, mutual TLS), interleaved rounds; the ratio is the cost of the hop.
4. Failover: wrk against nodes 0 and 1 while node 2 is killed with SIGKILL; their errors, and how
   long until the others list it gone (--node-timeout 2s).

Usage: cluster.py NIMBUS HELLO_WASM DEPLOYS GO_SERVICE_BINARY"""
import io, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tarfile, tempfile, threading, time
import urllib.error, urllib.request

NIMBUS, HELLO, DEPLOYS, GO_SERVICE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
WASM = open(HELLO, "rb").read()
NATS = os.environ.get("NIMBUS_NATS_SERVER", "nats-server")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def bundle(marker):
    manifest = (f'[app]\nname = "hello"\n\n[component.web]\nsource = "web.wasm"\nenv = {{ MARKER = "{marker}" }}\n'
                'limits = { max_concurrency = 1000 }\n\n[[trigger.http]]\nroute = "/..."\ncomponent = "web"\n')
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in (("nimbus.toml", manifest.encode()), ("components/web.wasm", WASM)):
            info = tarfile.TarInfo(path); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def service_bundle():
    """App `svc`: the Go template service on /svc/..., one process in the cluster."""
    manifest = ('[app]\nname = "svc"\n\n[component.api]\ncommand = ["./service"]\nreadiness = { path = "/healthz" }\n'
                'scale = { min = 1, max = 1, target_concurrency = 1000 }\nlimits = { max_concurrency = 1000 }\n\n'
                '[[trigger.http]]\nroute = "/svc/..."\ncomponent = "api"\n')
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = open(GO_SERVICE, "rb").read()
        info = tarfile.TarInfo("service"); info.size = len(data); info.mode = 0o755; tar.addfile(info, io.BytesIO(data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in (("nimbus.toml", manifest.encode()), ("services/api.tar", tree.getvalue())):
            info = tarfile.TarInfo(path); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def nats_cluster(n=3):
    ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
    procs, dirs = [], []
    for i, (client, route, monitor) in enumerate(ports):
        d = tempfile.mkdtemp(); dirs.append(d)
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for j, (_, r, _) in enumerate(ports) if j != i)
        conf = (f"server_name: bench-{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n"
                f"jetstream {{\n  store_dir: {json.dumps(os.path.join(d, 'js'))}\n  sync_interval: always\n}}\n"
                f"cluster {{\n  name: bench\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n")
        path = os.path.join(d, "nats.conf"); open(path, "w").write(conf)
        procs.append(subprocess.Popen([NATS, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for _, _, monitor in ports:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1).read(); break
            except Exception:
                time.sleep(0.05)
    return procs, [f"nats://127.0.0.1:{c}" for c, _, _ in ports], dirs


CA = os.path.join(tempfile.mkdtemp(), "ca")


class Node:
    def __init__(self, i, nats_url):
        self.data = tempfile.mkdtemp()
        self.gw, self.api = free_port(), free_port()
        cluster = ["--nats", nats_url, "--nats-replicas", "3", "--node-name", f"node-{i}", "--labels", f"zone={'abc'[i]}",
                   "--node-timeout", "2s", "--cluster-ca", CA, "--peer-listen", "127.0.0.1:0"] if nats_url else []
        self.proc = subprocess.Popen(
            [NIMBUS, "server", "--listen", f"127.0.0.1:{self.gw}", "--api-listen", f"127.0.0.1:{self.api}",
             "--data-dir", self.data, "--cache-dir", os.path.join(self.data, "cache")] + cluster,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "NIMBUS_LOG": "warn"})
        self.token = None
        for line in self.proc.stdout:
            if line.strip().startswith("nbt_"): self.token = line.strip()
            if line.startswith("Ready"): break
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def call(self, token, method, path, body=None, ctype="application/json"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}{path}", data=body, method=method,
                                     headers={"authorization": f"Bearer {token}", "content-type": ctype})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")

    def served_by(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.gw}/x", timeout=5) as r:
                r.read(); return r.headers.get("x-nimbus-revision")
        except urllib.error.URLError:
            return None


LAT = []  # p50 latency (ms) of every wrk run, in order


def wrk(url, connections, seconds, out):
    text = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                          capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", text)
    LAT.append(float(p50.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p50.group(2)] if p50 else float("nan"))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out.append((url, rps, int(errors.group(1)) if errors else 0, sum(map(int, socket_errors.groups())) if socket_errors else 0))


def main():
    # The baseline: one server on its own, same component, same load.
    alone = Node(0, None)
    rev = alone.call(alone.token, "POST", "/v1/deployments", bundle("warm"), "application/x-tar")["revision"]
    while alone.served_by() != rev: time.sleep(0.01)
    single = []
    wrk(f"http://127.0.0.1:{alone.gw}/x", 64, 10, single)
    alone.proc.kill(); alone.proc.wait(); shutil.rmtree(alone.data, ignore_errors=True)
    print(f"hello through a single nimbus server, no cluster (wrk -c64): {single[0][1]:,.0f} req/s, errors {single[0][2] + single[0][3]}")

    subprocess.run([NIMBUS, "nodes", "init-ca", CA], check=True, stdout=subprocess.DEVNULL)
    nats_procs, urls, nats_dirs = nats_cluster()
    nodes = [Node(0, urls[0])]
    token = nodes[0].token
    nodes += [Node(i, urls[i]) for i in (1, 2)]
    try:
        # 1. Convergence.
        first = nodes[0].call(token, "POST", "/v1/deployments", bundle("warm"), "application/x-tar")["revision"]
        for n in nodes:
            while n.served_by() != first: time.sleep(0.01)
        lags = []
        for k in range(DEPLOYS):
            rev = nodes[0].call(token, "POST", "/v1/deployments", bundle(f"m{k}"), "application/x-tar")["revision"]
            t0 = time.perf_counter()
            for n in nodes[1:]:
                while n.served_by() != rev: time.sleep(0.001)
                lags.append((time.perf_counter() - t0) * 1000)
        lags.sort()
        print(f"convergence of {DEPLOYS} deploys through node-0 until nodes 1 and 2 serve them: "
              f"p50 {statistics.median(lags):.1f} ms, p95 {lags[int(len(lags) * 0.95) - 1]:.1f} ms, max {lags[-1]:.1f} ms")

        # 2. Throughput through 1 and 3 nodes.
        one = []
        wrk(f"http://127.0.0.1:{nodes[0].gw}/x", 64, 10, one)
        three = []
        ts = [threading.Thread(target=wrk, args=(f"http://127.0.0.1:{n.gw}/x", 22, 10, three)) for n in nodes]
        [t.start() for t in ts]; [t.join() for t in ts]
        total = sum(r for _, r, _, _ in three)
        print(f"hello through 1 node of the cluster (wrk -c64): {one[0][1]:,.0f} req/s, errors {one[0][2] + one[0][3]}; "
              f"ratio to the single server {one[0][1] / single[0][1]:.2f}x")
        print(f"hello through 3 nodes at once (3 x wrk -c22): {total:,.0f} req/s "
              f"({', '.join(f'{r:,.0f}' for _, r, _, _ in three)}), errors {sum(e + s for _, _, e, s in three)}; "
              f"ratio {total / one[0][1]:.2f}x")

        # 3. A service: through the node running it vs forwarded from another node.
        # Its route is within hello's `/...`: taken over from it (admin).
        nodes[0].call(token, "POST", "/v1/deployments?take_over=true", service_bundle(), "application/x-tar")
        host = None
        while host is None:
            try:
                seen = []
                for n in nodes:
                    with urllib.request.urlopen(f"http://127.0.0.1:{n.gw}/svc/", timeout=5) as r:
                        r.read(); seen.append(r.headers.get("x-nimbus-node"))
                if seen.count(None) == 1 and len(set(x for x in seen if x)) == 1:
                    host = seen.index(None)
            except urllib.error.URLError:
                time.sleep(0.1)
        via = (host + 1) % 3
        local, forwarded, first = [], [], len(LAT)
        for _ in range(3):
            wrk(f"http://127.0.0.1:{nodes[host].gw}/svc/", 64, 5, local)
            wrk(f"http://127.0.0.1:{nodes[via].gw}/svc/", 64, 5, forwarded)
        lr, fr = statistics.median(r for _, r, _, _ in local), statistics.median(r for _, r, _, _ in forwarded)
        print(f"Go service on node-{host}, wrk -c64, median of 3 interleaved rounds: through node-{host} itself "
              f"{lr:,.0f} req/s (p50 {statistics.median(p for p in LAT[first::2]):.2f} ms), forwarded from node-{via} "
              f"{fr:,.0f} req/s (p50 {statistics.median(p for p in LAT[first + 1::2]):.2f} ms); ratio {fr / lr:.2f}x, "
              f"errors {sum(e + x for _, _, e, x in local + forwarded)}")

        # The hop's latency alone: one connection, one request at a time.
        single, first = [], len(LAT)
        for _ in range(3):
            wrk(f"http://127.0.0.1:{nodes[host].gw}/svc/", 1, 3, single)
            wrk(f"http://127.0.0.1:{nodes[via].gw}/svc/", 1, 3, single)
        here_p50, hop_p50 = statistics.median(LAT[first::2]), statistics.median(LAT[first + 1::2])
        print(f"same, wrk -c1: p50 {here_p50 * 1000:.0f} us through node-{host}, {hop_p50 * 1000:.0f} us forwarded "
              f"(+{(hop_p50 - here_p50) * 1000:.0f} us for the hop)")

        # 4. Failover: load on nodes 0 and 1, node 2 killed after 2 s.
        during = []
        ts = [threading.Thread(target=wrk, args=(f"http://127.0.0.1:{n.gw}/x", 32, 8, during)) for n in nodes[:2]]
        [t.start() for t in ts]
        time.sleep(2)
        killed = time.perf_counter()
        nodes[2].proc.send_signal(signal.SIGKILL); nodes[2].proc.wait()
        gone = None
        while gone is None:
            listed = nodes[0].call(token, "GET", "/v1/nodes")
            if any(n["name"] == "node-2" and n["status"] == "gone" for n in listed):
                gone = time.perf_counter() - killed
            time.sleep(0.05)
        [t.join() for t in ts]
        print(f"kill -9 of node-2 under load on nodes 0 and 1: {sum(r for _, r, _, _ in during):,.0f} req/s, "
              f"errors {sum(e + s for _, _, e, s in during)}; listed gone after {gone:.2f} s (--node-timeout 2s)")
    finally:
        for n in nodes:
            n.proc.kill(); n.proc.wait(); shutil.rmtree(n.data, ignore_errors=True)
        for p in nats_procs:
            p.kill(); p.wait()
        for d in nats_dirs + [os.path.dirname(CA)]:
            shutil.rmtree(d, ignore_errors=True)


main()
